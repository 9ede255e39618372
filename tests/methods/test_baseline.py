import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses, miners

import unseen
from unseen.config import load_config
from unseen.data.base import Splits
from unseen.errors import ConfigError
from unseen.methods import METHODS, Batch
from unseen.train.checkpoint import load_checkpoint
from unseen.train.components import build_method
from unseen.train.trainer import Trainer

TINY_MODEL = ["model.channels=[4,8]", "model.embedding_dim=8"]


def floats(parts: dict) -> dict[str, float]:
    """A LossOutput's parts (detached 0-dim tensors or floats) as floats, as the trainer logs them."""
    return {key: float(value) for key, value in parts.items()}


def build(*overrides, num_classes=4):
    return build_method(load_config(None, [*TINY_MODEL, *overrides]), num_classes=num_classes, in_chans=1)


def test_baseline_is_exactly_the_configured_pml_loss_and_miner():
    method, _ = build("loss.name=MultiSimilarityLoss", "loss.alpha=3", "miner.name=MultiSimilarityMiner",
                      "miner.epsilon=0.2")
    embeddings = F.normalize(torch.randn(16, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    labels = torch.arange(4).repeat_interleave(4)
    out = method.loss({"class": embeddings}, Batch(torch.zeros(16, 1), labels, torch.arange(16)))
    reference = losses.MultiSimilarityLoss(alpha=3)(embeddings, labels,
                                                    miners.MultiSimilarityMiner(epsilon=0.2)(embeddings, labels))
    assert out.total.item() == pytest.approx(reference.item(), abs=1e-7)
    assert floats(out.parts) == {"base": pytest.approx(reference.item(), abs=1e-7)}


def test_objective_is_the_loss_of_the_networks_forward_pass():
    torch.manual_seed(0)
    method, model = build()
    batch = Batch(torch.randn(8, 1, 12, 12), torch.arange(4).repeat_interleave(2), torch.arange(8))
    model.eval()  # the same BatchNorm statistics for both passes
    assert method.objective(model, batch).total.item() == method.loss(model(batch.images), batch).total.item()


def test_loss_parameters_become_the_methods_losses_group_at_the_loss_lr():
    method, model = build("loss.name=ProxyAnchorLoss", "miner.name=null", num_classes=5)
    (group,) = method.param_groups(model, lr=0.01, weight_decay=0.1)
    assert group["name"] == "losses" and group["lr"] == 0.01 and group["weight_decay"] == 0.0
    assert [tuple(p.shape) for p in group["params"]] == [(5, 8)]
    method, model = build("loss.name=ProxyAnchorLoss", "miner.name=null", "optimizer.loss_lr=0.5", num_classes=5)
    assert method.param_groups(model, lr=0.01, weight_decay=0.1)[0]["lr"] == 0.5
    method, model = build(num_classes=5)
    assert method.param_groups(model, 0.01, 0.0) == []


def test_the_default_plan_is_one_class_balanced_pass_per_epoch(pattern_table):
    train = pattern_table(10, 3, seed=0, name="train")
    config = load_config(None, [*TINY_MODEL, "sampler.classes_per_batch=4", "sampler.samples_per_class=2"])
    method, _ = build_method(config, num_classes=10, train=train, in_chans=1)
    assert method.steps_per_epoch() == 3  # ceil(10 / 4)
    for epoch in (0, 1):
        plan = method.plan(epoch)
        assert len(plan) == 3 and [plan.stream(b) for b in range(3)] == ["class"] * 3
        assert all(len(rows) == len(seeds) == 8 for rows, seeds in zip(plan.indices, plan.seeds, strict=True))
        visited = np.concatenate([train.labels[rows] for rows in plan.indices])
        assert set(visited.tolist()) == set(range(10))
    assert method.phase(0) == "train"


def test_every_registered_method_builds_from_defaults():
    for name in METHODS:
        method, model = build_method(load_config(None, [f"method.name={name}"]), num_classes=4)
        assert method.name == name and model.embedding_dim == 128


def test_unknown_method_keys_are_config_errors():
    with pytest.raises(ConfigError, match=r"^method \(baseline\): unknown key 'confusion_weight'; known keys: none"):
        build("method.confusion_weight=0.1")


# -- every registered method, trained ------------------------------------------------------------------------
# What a method needs to be valid (and quick) on 8 classes of 5 tiny images; a method not listed here trains from
# its defaults, so a new method is picked up by the test below without any change.
EXTRA_OVERRIDES: dict[str, list[str]] = {
    "class_adversarial": ["model.taps=[0]", "method.hidden_dim=16"],
    "divide_conquer": ["method.num_clusters=2", "method.kmeans_iterations=10", "method.kmeans_redo=1"],
    "sharing": ["method.num_shared_clusters=3", "method.shared_dim=6", "method.kmeans_iterations=5"],
}
TRAIN = ["model.channels=[4,8]", "model.embedding_dim=8", "data.image_size=12", "sampler.classes_per_batch=4",
         "sampler.samples_per_class=2", "train.steps=4", "train.validate_every=2", "train.log_every=1",
         "train.threads=1", "evaluation.recall_at=[1,2]", "evaluation.metrics=[recall,map@r]"]


@pytest.fixture
def splits(pattern_table):
    return Splits(train=pattern_table(8, 5, seed=0, name="train"), val=pattern_table(4, 5, seed=1, name="val"),
                  test=pattern_table(6, 5, seed=2, name="test"), dataset="patterns", protocol="generated patterns")


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_registered_method_trains_and_its_checkpoint_round_trips(name, tmp_path, splits, monkeypatch):
    config = load_config(None, [*TRAIN, f"method.name={name}", *EXTRA_OVERRIDES.get(name, [])])
    trainer = Trainer(config, tmp_path, progress=False, splits=splits)
    c, optimizer = trainer.c, trainer.optimizer
    declared = [g["name"] for g in c.method.param_groups(c.model, config.optimizer.lr, config.optimizer.weight_decay)]
    assert set(declared) <= {g["name"] for g in optimizer.param_groups}
    reached = set()
    take_step = trainer._step

    def step_and_record(batch):
        parts = take_step(batch)
        reached.update(g["name"] for g in optimizer.param_groups
                       if any(p.grad is not None and p.grad.abs().sum() > 0 for p in g["params"]))
        return parts

    monkeypatch.setattr(trainer, "_step", step_and_record)
    trainer.fit()

    train = [r for r in map(json.loads, (tmp_path / "history.jsonl").read_text().splitlines()) if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss"]) and all(np.isfinite(v) for v in r.values() if isinstance(v, float))
               for r in train)
    # Every group the method declares, and the network's own, moved the loss on some step.
    assert reached == {g["name"] for g in optimizer.param_groups}

    test = splits.test
    best = unseen.load(tmp_path)  # fit() leaves the best checkpoint's weights in the network
    np.testing.assert_array_equal(best.embed_table(test), c.embed(test))
    assert best.embedding_dim == 8 and best.class_names == splits.train.class_names

    resumed = Trainer.resume(tmp_path, progress=False, splits=splits)
    assert resumed.step == 4 and resumed.c.spec == c.spec
    np.testing.assert_array_equal(resumed.c.embed(test), unseen.load(tmp_path, which="last").embed_table(test))
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert all(torch.equal(v, last["model"][k]) for k, v in resumed.c.model.state_dict().items())
    trained, restored = c.method.state_dict(), resumed.c.method.state_dict()
    assert trained.keys() == restored.keys()
    for key, value in trained.items():
        if key == "_extra_state":  # the clusters of D&C and MIC, and when they were made
            assert value.keys() == restored[key].keys()
            assert all(equal(value[k], restored[key][k]) for k in value), key
        else:
            assert torch.equal(value, restored[key]), key


def equal(a, b):
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b
