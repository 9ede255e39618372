import json

import pytest
import torch

from unseen.data.transforms import BatchBorderFillAffine
from unseen.errors import CheckpointError, ConfigError
from unseen.train.checkpoint import load_checkpoint
from unseen.train.trainer import Trainer, build_scheduler


def weights(run_dir):
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


def test_run_dir_holds_config_history_checkpoints_and_metrics(tmp_path, tiny_config, tiny_splits):
    results = Trainer(tiny_config(), tmp_path / "run", progress=False, splits=tiny_splits).fit()
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} == {"config.yaml", "classes.json", "history.jsonl", "metrics.json",
                                               "checkpoints"}
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"last.pt", "best.pt"}
    records = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["kind"] == "val"] == [1, 2]
    assert all(r["step"] >= 1 for r in records)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(results))
    assert metrics["selection"].startswith("best validation recall@1")
    assert {"recall@1", "recall@2", "map@r"} <= set(metrics["test"]) and "test_last" in metrics
    assert metrics["protocol"]["train"] == {"images": 40, "classes": 8}
    assert json.loads((run / "classes.json").read_text())["test"][0] == "200"


def test_resume_continues_exactly(tmp_path, tiny_config, tiny_splits, interrupted_run):
    config = tiny_config("train.epochs=3", "schedule.name=cosine")
    Trainer(config, tmp_path / "straight", progress=False, splits=tiny_splits).fit()

    assert interrupted_run(config, tmp_path / "resumed", tiny_splits) == [1]

    Trainer.resume(tmp_path / "resumed", progress=False, splits=tiny_splits).fit()
    straight, again = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert all(torch.equal(straight[k], again[k]) for k in straight)
    assert history_without_speed(tmp_path / "resumed") == history_without_speed(tmp_path / "straight")


def history_without_speed(run_dir):
    records = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "images_per_s"} for r in records]


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path, tiny_config, tiny_splits):
    Trainer(tiny_config("train.epochs=1"), tmp_path / "run", progress=False, splits=tiny_splits).fit()
    path = tmp_path / "run" / "config.yaml"
    path.write_text(path.read_text().replace("embedding_dim: 8", "embedding_dim: 16"))
    with pytest.raises(CheckpointError, match=r"last\.pt: its config differs from config\.yaml"):
        Trainer.resume(tmp_path / "run", progress=False, splits=tiny_splits)


def test_max_steps_bounds_the_run_and_the_schedule(tmp_path, tiny_config, tiny_splits):
    trainer = Trainer(tiny_config("train.epochs=50", "train.max_steps=3"), tmp_path / "run", progress=False,
                      splits=tiny_splits)
    assert trainer.total_steps == 3
    trainer.fit()
    assert trainer.step == 3 and trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.0)


def test_schedules(tiny_config):
    def lrs(*overrides, total=10, per_epoch=5):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        scheduler = build_scheduler(tiny_config(*overrides), optimizer, total, per_epoch)
        values = []
        for _ in range(total):
            values.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return values

    assert lrs("schedule.name=constant") == [1.0] * 10
    assert lrs("schedule.name=step", "schedule.step_epochs=[1]", "schedule.gamma=0.5") == [1.0] * 5 + [0.5] * 5
    cosine = lrs("schedule.name=cosine", "schedule.warmup_steps=2")
    assert cosine[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert cosine[-1] == pytest.approx(0.5 * (1 + torch.cos(torch.tensor(torch.pi * 7 / 8)).item()))


def test_bf16_precision_and_grad_clip_train(tmp_path, tiny_config, tiny_splits):
    config = tiny_config("train.epochs=1", "train.precision=bf16", "optimizer.grad_clip=0.5")
    results = Trainer(config, tmp_path / "run", progress=False, splits=tiny_splits).fit()
    assert 0.0 <= results["test"]["recall@1"] <= 1.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_unavailable_device_is_a_config_error(tmp_path, tiny_config, tiny_splits):
    with pytest.raises(ConfigError, match="train.device: 'cuda' asked for, but no CUDA device is available"):
        Trainer(tiny_config("train.device=cuda"), tmp_path / "run", progress=False, splits=tiny_splits)


def test_small_preset_jitters_whole_batches_on_the_device_with_the_plans_seeds(
    tmp_path, tiny_config, tiny_splits, monkeypatch
):
    calls = []
    original = BatchBorderFillAffine.__call__

    def spy(self, images, seeds):
        calls.append(list(seeds))
        return original(self, images, seeds)

    monkeypatch.setattr(BatchBorderFillAffine, "__call__", spy)
    trainer = Trainer(tiny_config("train.epochs=1"), tmp_path / "run", progress=False, splits=tiny_splits)
    image = tiny_splits.train.load_image(0)
    assert torch.equal(trainer.c.transform(train=True)(image), trainer.c.transform(train=False)(image))
    plan = trainer.c.method.batches(tiny_splits.train, 0)
    trainer.fit()
    assert calls == [seeds.tolist() for seeds in plan.seeds]


def test_loader_jitter_leaves_batches_alone(tmp_path, tiny_config, tiny_splits, monkeypatch):
    monkeypatch.setattr(BatchBorderFillAffine, "__call__", lambda *a: pytest.fail("batch jitter used"))
    trainer = Trainer(tiny_config("train.epochs=1", "data.augment_on=loader"), tmp_path / "run", progress=False,
                      splits=tiny_splits)
    assert trainer.c.batch_augment() is None
    trainer.fit()


def test_device_jitter_needs_the_small_preset(tmp_path, tiny_config, tiny_splits):
    config = tiny_config("data.preset=imagenet", "data.augment_on=device")
    with pytest.raises(ConfigError, match="data.augment_on: 'device' needs data.preset 'small'"):
        Trainer(config, tmp_path / "run", progress=False, splits=tiny_splits)
