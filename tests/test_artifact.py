"""The run artifact: a trained run loads from its folder alone, anywhere, and embeds as the trainer did."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import unseen
import unseen.data as data_module
from unseen.config import load_config
from unseen.data.base import Splits
from unseen.errors import CheckpointError, DatasetError
from unseen.evaluation import evaluate
from unseen.train.checkpoint import load_checkpoint, save_checkpoint
from unseen.train.trainer import Trainer


@pytest.fixture
def trained(tmp_path, pattern_table):
    splits = Splits(train=pattern_table(8, 5, seed=0, name="train"),
                    val=pattern_table(4, 5, seed=1, name="val", offset=100),
                    test=pattern_table(6, 5, seed=2, name="test", offset=200), dataset="patterns", protocol="p")
    config = load_config(None, ["model.channels=[4,8]", "model.embedding_dim=8", "data.image_size=12",
                                "sampler.classes_per_batch=4", "sampler.samples_per_class=2", "train.steps=6",
                                "train.validate_every=3", "train.threads=1", "evaluation.metrics=[recall]",
                                "evaluation.recall_at=[1]"])
    trainer = Trainer(config, tmp_path / "run", progress=False, splits=splits)
    results = trainer.fit()
    return trainer, splits, results


def test_a_moved_run_folder_loads_without_any_data(tmp_path, trained, monkeypatch):
    trainer, splits, results = trained
    expected = trainer.c.embed(splits.test)  # the best checkpoint is loaded in the trainer after fit()
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(tmp_path / "run", moved)
    shutil.rmtree(tmp_path / "run")
    monkeypatch.setenv("UNSEEN_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setattr(data_module, "build_splits", lambda *a, **k: pytest.fail("loading read a dataset"))

    embedder = unseen.load(moved)
    assert isinstance(embedder, unseen.Embedder) and not embedder.model.training
    assert embedder.embedding_dim == 8 and embedder.class_names == splits.train.class_names
    assert embedder.checkpoint == moved / "checkpoints" / "best.pt" and embedder.commit == trainer.commit
    vectors = embedder.embed(splits.test.images)
    assert np.allclose(vectors, expected, atol=1e-6)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    recall = evaluate(vectors, splits.test.labels, metrics=["recall"], recall_at=[1])["recall@1"]
    assert recall == results["test"]["recall@1"]


def test_files_folders_and_pil_images_embed_alike(tmp_path, trained):
    trainer, splits, _ = trained
    embedder = unseen.load(tmp_path / "run", which="last")
    folder = tmp_path / "images" / "nested"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(splits.test.images[i]).convert("RGB").save(folder / f"{i}.png")  # RGB: converted to L
    (folder / "notes.txt").write_text("not an image")
    from_folder = embedder.embed(tmp_path / "images")
    from_arrays = embedder.embed(splits.test.images[:3])
    from_pil = embedder.embed([Image.fromarray(a) for a in splits.test.images[:3]])
    assert from_folder.shape == (3, 8)
    assert np.allclose(from_folder, from_arrays, atol=1e-6) and np.allclose(from_pil, from_arrays, atol=1e-6)
    (folder / "bad.png").write_bytes(b"\x89PNG broken")
    result = embedder.embed_files(sorted(str(p) for p in folder.glob("*.png")))
    assert len(result.paths) == 3 and [p for p, _ in result.failed] == [str(folder / "bad.png")]
    with pytest.raises(DatasetError, match=r"bad\.png: cannot read image"):
        embedder.embed([folder / "bad.png"])


def test_missing_unknown_truncated_and_foreign_checkpoints_are_named(tmp_path, trained):
    run = tmp_path / "run"
    with pytest.raises(CheckpointError, match="nowhere: no run folder or checkpoint file there"):
        unseen.load(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"checkpoints/best\.pt: no checkpoint there"):
        unseen.load(empty)
    best = run / "checkpoints" / "best.pt"
    data = best.read_bytes()
    best.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match=r"best\.pt: not a readable unseen checkpoint"):
        unseen.load(run)
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match=r"foreign\.pt: not an unseen checkpoint"):
        unseen.load(tmp_path / "foreign.pt")


def test_a_checkpoint_of_another_model_is_refused(tmp_path, trained):
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    save_checkpoint({**state, "model_spec": {**state["model_spec"], "embedding_dim": 16}}, last)
    with pytest.raises(CheckpointError, match=r"last\.pt: a checkpoint of another model than its run's "
                                              r"\(embedding_dim: 16 in the checkpoint, 8 in config\.yaml\)"):
        unseen.load(tmp_path / "run", which="last")
    shutil.copy(last, tmp_path / "alone.pt")  # outside its run folder: its own spec, which its weights do not fit
    with pytest.raises(CheckpointError, match=r"alone\.pt: weights do not fit its model spec"):
        unseen.load(tmp_path / "alone.pt")
