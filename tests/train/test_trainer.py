import json

import pytest
import torch

import unseen.train.trainer as trainer_module
from unseen.data.transforms import BatchBorderFillAffine
from unseen.errors import CheckpointError, ConfigError
from unseen.train.checkpoint import load_checkpoint
from unseen.train.trainer import Trainer, build_scheduler


def weights(run_dir):
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


def records(run_dir, name="history.jsonl"):
    return [json.loads(line) for line in (run_dir / name).read_text().splitlines()]


def test_run_dir_holds_config_history_checkpoints_and_metrics(tmp_path, tiny_config, tiny_splits):
    results = Trainer(tiny_config(), tmp_path / "run", progress=False, splits=tiny_splits).fit()
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} == {"config.yaml", "classes.json", "history.jsonl", "metrics.json",
                                               "checkpoints"}
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"last.pt", "best.pt"}
    history = records(run)
    assert [r["step"] for r in history if r["kind"] == "val"] == [2, 4]  # 2 epochs of ceil(8 / 4) = 2 steps
    assert all(r["step"] >= 1 and r.get("phase", "train") == "train" for r in history)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(results))
    assert metrics["selection"].startswith("best validation recall@1") and metrics["steps"] == 4
    assert {"recall@1", "recall@2", "map@r"} <= set(metrics["test"]) and "test_last" in metrics
    assert metrics["protocol"]["train"] == {"images": 40, "classes": 8}
    assert metrics["protocol"]["evaluation"].startswith("leave-one-out")
    assert metrics["model_spec"]["embedding_dim"] == 8 and metrics["commit"]
    assert metrics["train_cache"].startswith("tensors (deterministic transform")
    assert json.loads((run / "classes.json").read_text())["test"][0] == "200"


def test_checkpoints_carry_the_model_spec_class_names_and_commit(tmp_path, tiny_config, tiny_splits):
    Trainer(tiny_config(), tmp_path / "run", progress=False, splits=tiny_splits).fit()
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert best["model_spec"]["backbone"] == "convnet" and best["model_spec"]["in_chans"] == 1
    assert best["class_names"] == list(tiny_splits.train.class_names) and "optimizer" not in best
    assert "optimizer" in load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")


@pytest.mark.parametrize("validate_every", [2, 3], ids=["at an epoch boundary", "mid-epoch"])
def test_resume_continues_exactly(tmp_path, tiny_config, tiny_splits, interrupted_run, validate_every):
    config = tiny_config("train.epochs=3", "schedule.name=cosine", f"train.validate_every={validate_every}")
    Trainer(config, tmp_path / "straight", progress=False, splits=tiny_splits).fit()

    assert interrupted_run(config, tmp_path / "resumed", tiny_splits) == [validate_every]

    Trainer.resume(tmp_path / "resumed", progress=False, splits=tiny_splits).fit()
    straight, again = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert all(torch.equal(straight[k], again[k]) for k in straight)
    assert history_without_speed(tmp_path / "resumed") == history_without_speed(tmp_path / "straight")


def history_without_speed(run_dir):
    return [{k: v for k, v in r.items() if k != "images_per_s"} for r in records(run_dir)]


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path, tiny_config, tiny_splits):
    Trainer(tiny_config("train.epochs=1"), tmp_path / "run", progress=False, splits=tiny_splits).fit()
    path = tmp_path / "run" / "config.yaml"
    path.write_text(path.read_text().replace("embedding_dim: 8", "embedding_dim: 16"))
    with pytest.raises(CheckpointError, match=r"last\.pt: its config differs from config\.yaml"):
        Trainer.resume(tmp_path / "run", progress=False, splits=tiny_splits)


def test_steps_are_the_budget_and_bound_the_schedule(tmp_path, tiny_config, tiny_splits):
    trainer = Trainer(tiny_config("train.epochs=50", "train.steps=3"), tmp_path / "run", progress=False,
                      splits=tiny_splits)
    assert trainer.total_steps == 3 and trainer.validate_every == 2
    trainer.fit()
    assert trainer.step == 3 and trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.0)
    assert [r["step"] for r in records(tmp_path / "run") if r["kind"] == "val"] == [2, 3]


def test_validate_every_a_share_of_the_budget(tmp_path, tiny_config, tiny_splits):
    trainer = Trainer(tiny_config("train.steps=20", "train.validate_every=0.25"), tmp_path / "run", progress=False,
                      splits=tiny_splits)
    assert trainer.validate_every == 5


def test_schedules(tiny_config):
    def lrs(*overrides, total=10):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        scheduler = build_scheduler(tiny_config(*overrides), optimizer, total)
        values = []
        for _ in range(total):
            values.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return values

    assert lrs("schedule.name=constant") == [1.0] * 10
    assert lrs("schedule.name=step", "schedule.milestones=[5]", "schedule.gamma=0.5") == [1.0] * 5 + [0.5] * 5
    assert lrs("schedule.name=step", "schedule.milestones=[0.8]") == pytest.approx([1.0] * 8 + [0.1] * 2)
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
    plan = trainer.c.method.plan(0)
    trainer.fit()
    assert calls == [seeds.tolist() for seeds in plan.seeds]


def test_loader_jitter_leaves_batches_alone(tmp_path, tiny_config, tiny_splits, monkeypatch):
    monkeypatch.setattr(BatchBorderFillAffine, "__call__", lambda *a: pytest.fail("batch jitter used"))
    trainer = Trainer(tiny_config("train.epochs=1", "data.augment_on=loader"), tmp_path / "run", progress=False,
                      splits=tiny_splits)
    assert trainer.c.batch_augment() is None
    trainer.fit()


def test_no_jitter_trains_on_the_eval_transform(tmp_path, tiny_config, tiny_splits, monkeypatch):
    monkeypatch.setattr(BatchBorderFillAffine, "__call__", lambda *a: pytest.fail("batch jitter used"))
    for augment_on in ("loader", "device"):
        trainer = Trainer(tiny_config("train.epochs=1", "data.jitter=false", f"data.augment_on={augment_on}"),
                          tmp_path / augment_on, progress=False, splits=tiny_splits)
        assert trainer.c.batch_augment() is None
        torch.manual_seed(3)
        image = tiny_splits.train.load_image(0)
        assert torch.equal(trainer.c.transform(train=True)(image), trainer.c.transform(train=False)(image))
        trainer.fit()


def test_device_jitter_needs_the_small_preset(tmp_path, tiny_config, tiny_splits):
    config = tiny_config("data.preset=imagenet", "data.augment_on=device")
    with pytest.raises(ConfigError, match="data.augment_on: 'device' needs data.preset 'small'"):
        Trainer(config, tmp_path / "run", progress=False, splits=tiny_splits)


def test_the_test_trace_is_recorded_and_never_selects(tmp_path, tiny_config, tiny_splits, monkeypatch):
    """The test curve is written beside the history for figures; poisoning every test evaluation made during
    training must not change which checkpoint is selected, nor anything the validation wrote."""
    config = tiny_config("train.epochs=4", "train.trace_test=true")
    plain = tiny_config("train.epochs=4")
    Trainer(plain, tmp_path / "plain", progress=False, splits=tiny_splits).fit()

    real_evaluate = trainer_module.Components.evaluate

    def poisoned(self, table, progress=False, metrics=None, embeddings=None):
        values = real_evaluate(self, table, progress, metrics, embeddings)
        if table.name == "test":  # a test metric that, if read, would pick the first validation point
            values = {k: (1.0 - trainer.step / 100 if k.startswith("recall") else v) for k, v in values.items()}
        return values

    monkeypatch.setattr(trainer_module.Components, "evaluate", poisoned)
    trainer = Trainer(config, tmp_path / "traced", progress=False, splits=tiny_splits)
    results = trainer.fit()
    trace = records(tmp_path / "traced", "test_trace.jsonl")
    assert [r["step"] for r in trace] == [2, 4, 6, 8] and {"recall@1", "map@r"} <= set(trace[0])
    plain_metrics = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    assert results["selection"] == plain_metrics["selection"] and results["val"] == plain_metrics["val"]
    assert history_without_speed(tmp_path / "traced") == history_without_speed(tmp_path / "plain")


def _weights(trainer):
    return [p.detach().clone() for p in trainer.c.model.parameters()]


@pytest.mark.parametrize("overrides", [
    ("data.jitter=false", "data.cache=tensors"),          # the deterministic transform, cached once
    ("data.augment_on=loader", "data.cache=none", "data.num_workers=1"),  # random jitter in a worker
])
def test_every_batch_source_trains_the_same_steps(tmp_path, tiny_config, tiny_splits, overrides):
    """The tensor cache, the loader and a worker process feed the same images: the weights agree exactly."""
    reference_overrides = [o for o in overrides if not o.startswith(("data.cache", "data.num_workers"))]
    runs = []
    for name, extra in (("reference", ["data.cache=none", *reference_overrides]), ("other", list(overrides))):
        trainer = Trainer(tiny_config("train.steps=6", "train.validate_every=6", *extra), tmp_path / name,
                          progress=False, splits=tiny_splits)
        trainer.fit()
        runs.append((trainer.c.cache.kind, _weights(trainer)))
    assert runs[0][0] == "none" and runs[1][0] == [o for o in overrides if o.startswith("data.cache")][0][11:]
    for a, b in zip(runs[0][1], runs[1][1], strict=True):
        assert torch.equal(a, b)


def test_auto_cache_holds_a_deterministic_small_dataset_as_tensors(tmp_path, tiny_config, tiny_splits):
    trainer = Trainer(tiny_config("train.steps=2"), tmp_path / "run", progress=False, splits=tiny_splits)
    trainer.fit()
    assert trainer.c.cache.kind == "tensors"  # the small preset jitters on the device: the loader part is fixed
    assert trainer.train_batches.images.shape == (len(tiny_splits.train), 1, 12, 12)


def assert_switch_trains_the_same_model(tmp_path, tiny_config, tiny_splits, switch):
    """4 steps with and without `switch`: the same weights up to kernel rounding."""
    weights = []
    for name, extra in (("plain", []), ("switched", [switch])):
        trainer = Trainer(tiny_config("train.steps=4", "train.validate_every=4", *extra), tmp_path / name,
                          progress=False, splits=tiny_splits)
        trainer.fit()
        weights.append(_weights(trainer))
    for a, b in zip(*weights, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("switch", ["train.channels_last=true", "train.fused_optimizer=true"])
def test_speed_switches_train_the_same_model(tmp_path, tiny_config, tiny_splits, switch):
    assert_switch_trains_the_same_model(tmp_path, tiny_config, tiny_splits, switch)


def test_a_non_finite_loss_stops_the_run_at_its_step(tmp_path, tiny_config, tiny_splits):
    trainer = Trainer(tiny_config("train.steps=4", "optimizer.lr=1e30"), tmp_path / "run", progress=False,
                      splits=tiny_splits)
    with pytest.raises(FloatingPointError, match=r"step \d: the loss is (nan|inf); lower optimizer.lr\?"):
        trainer.fit()


@pytest.mark.slow
def test_compiled_training_step_trains_the_same_model(tmp_path, tiny_config, tiny_splits):
    """torch.compile of the whole step (forward, method, loss): the same weights up to kernel rounding (~1 min)."""
    assert_switch_trains_the_same_model(tmp_path, tiny_config, tiny_splits, "train.compile=true")


def test_training_in_pieces_draws_each_plan_once_and_matches_one_call(tmp_path, tiny_config, tiny_splits):
    """`train(n)` stopping inside an epoch goes on with the same plan (a method's plan can be costly: D&C deals
    a whole re-clustering period), and the steps are those of one uninterrupted call."""
    config = tiny_config("train.steps=4", "train.validate_every=4")  # 2 epochs of 2 steps
    whole = Trainer(config, tmp_path / "whole", progress=False, splits=tiny_splits)
    whole.train()
    pieces = Trainer(config, tmp_path / "pieces", progress=False, splits=tiny_splits)
    drawn = []
    plan = pieces.c.method.plan
    pieces.c.method.plan = lambda epoch: drawn.append(epoch) or plan(epoch)
    for steps in (1, 2, 1):
        pieces.train(steps)
    assert pieces.step == 4 and drawn == [0, 1]
    for a, b in zip(_weights(whole), _weights(pieces), strict=True):
        assert torch.equal(a, b)
