import pytest
import torch

from unseen.errors import CheckpointError
from unseen.train.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint


def checkpoint(**fields):
    return {"format": CHECKPOINT_FORMAT, "model_spec": {}, "model": {}, "config": {}, **fields}


def test_round_trip(tmp_path):
    state = checkpoint(model={"w": torch.arange(3.0)}, config={"a": 1}, step=5)
    save_checkpoint(state, tmp_path / "ck" / "last.pt")
    loaded = load_checkpoint(tmp_path / "ck" / "last.pt")
    assert torch.equal(loaded["model"]["w"], state["model"]["w"]) and loaded["step"] == 5
    assert [p.name for p in (tmp_path / "ck").iterdir()] == ["last.pt"]  # no temp files left


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(checkpoint(step=1), path)

    def broken_save(obj, file):
        file.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(checkpoint(step=2), path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_checkpoints_cannot_run_code(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"model": Payload(), "config": {}}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pt: not a readable unseen checkpoint"):
        load_checkpoint(path)
    assert "must never run" not in capsys.readouterr().out


def test_unreadable_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match=r"none\.pt: no checkpoint there"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00junk")
    with pytest.raises(CheckpointError, match=r"junk\.pt: not a readable unseen checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt: not an unseen checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save(checkpoint(format="unseen-checkpoint/1"), tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match=r"old\.pt: checkpoint format 'unseen-checkpoint/1'"):
        load_checkpoint(tmp_path / "old.pt")


def test_a_truncated_checkpoint_is_named(tmp_path):
    save_checkpoint(checkpoint(model={"w": torch.arange(1000.0)}), tmp_path / "best.pt")
    data = (tmp_path / "best.pt").read_bytes()
    (tmp_path / "best.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"best\.pt: not a readable unseen checkpoint \(truncated or foreign"):
        load_checkpoint(tmp_path / "best.pt")
