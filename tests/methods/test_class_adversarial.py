import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from unseen.config import load_config
from unseen.data.base import Splits
from unseen.errors import ConfigError
from unseen.losses.grl import dann_schedule
from unseen.methods import Batch
from unseen.models.backbones import build_trunk, resolve_taps
from unseen.train.checkpoint import load_checkpoint
from unseen.train.components import build_method, check_config
from unseen.train.trainer import Trainer

# Distinct widths: pooled last map 24, taps [0, 1] pooled 4 + 8 = 12, embedding 8 (subspace 4), adversary hidden 16.
DIM, FEATURES, CLASSES = 8, 24, 5
TINY_MODEL = ["model.channels=[4,8,24]", f"model.embedding_dim={DIM}"]
METHOD = ["method.name=class_adversarial", "method.hidden_dim=16"]
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def floats(parts: dict) -> dict[str, float]:
    """A LossOutput's parts (detached 0-dim tensors or floats) as floats, as the trainer logs them."""
    return {key: float(value) for key, value in parts.items()}


def config(*overrides, method=METHOD):
    return load_config(None, [*TINY_MODEL, *method, *overrides])


def build(*overrides, method=METHOD, total_steps=None):
    """The method and the network it trains."""
    return build_method(config(*overrides, method=method), num_classes=CLASSES, in_chans=1, total_steps=total_steps)


def adversarial(*overrides, method=METHOD, seed=0, total_steps=None):
    """`build` from a seeded global RNG: the same `seed` gives the same network for every method."""
    torch.manual_seed(seed)
    return build(*overrides, method=method, total_steps=total_steps)


def pk_batch(p=CLASSES, k=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(p * k, 1, 12, 12, generator=generator)
    return Batch(images, torch.arange(p).repeat_interleave(k), torch.arange(p * k))


def model_grads(model):
    return [p.grad for p in model.parameters()]


def outputs(size, dtype=torch.float32, seed=0):
    """Network outputs as leaves: a unit class embedding and pooled features."""
    generator = torch.Generator().manual_seed(seed)
    return {"class": F.normalize(torch.randn(size, DIM, generator=generator, dtype=dtype), dim=1).requires_grad_(),
            "features": torch.randn(size, FEATURES, generator=generator, dtype=dtype).requires_grad_()}


# What the adversary reads of the network's outputs under each placement (no taps).
ADVERSARY_INPUT = {
    "features": lambda out, layer: out["features"],
    # its own rows of the class layer on the head's input, normalized alone
    "subspace": lambda out, layer: F.normalize(out["fused"] @ layer.weight[: DIM // 2].T + layer.bias[: DIM // 2],
                                               dim=-1),
    "embedding": lambda out, layer: out["class"],
}


@pytest.mark.parametrize("placement", sorted(ADVERSARY_INPUT))
def test_with_lambda_zero_it_is_the_base_loss_plus_an_independent_classifier(placement):
    batch = pk_batch()
    reference, reference_model = adversarial(method=[])  # the baseline, on the same network
    base = reference.objective(reference_model, batch).total
    base.backward()

    method, model = adversarial(f"method.placement={placement}", "method.adversary_weight=0",
                                "method.schedule=constant")
    method.ctx.step, method.ctx.total_steps = 7, 10
    classifier = copy.deepcopy(method.adversary)
    out = model(batch.images)
    layer = model.heads["class"].linear
    result = method.loss(out, batch, layer)
    result.total.backward()

    alone = F.cross_entropy(classifier(ADVERSARY_INPUT[placement](out, layer).detach()), batch.labels)
    alone.backward()
    assert result.parts["lambda"] == 0.0 and float(result.parts["base"]) == base.item()
    assert result.total.item() == pytest.approx(base.item() + alone.item(), abs=1e-6)
    assert float(result.parts["adversary"]) == alone.item()
    assert all(torch.equal(a, b) for a, b in zip(model_grads(model), model_grads(reference_model), strict=True))
    assert all(torch.equal(a.grad, b.grad)
               for a, b in zip(method.adversary.parameters(), classifier.parameters(), strict=True))


@pytest.mark.parametrize("placement", ["embedding", "features"])
def test_the_outputs_get_the_base_gradient_minus_lambda_times_the_adversarys(placement):
    batch = pk_batch()
    method, _ = build(f"method.placement={placement}", "method.adversary_weight=0.3", "method.schedule=constant")
    method = method.double()
    out = outputs(len(batch.labels), torch.float64)
    leaves = [out["class"], out["features"]]
    result = method.loss(out, batch)
    total = torch.autograd.grad(result.total, leaves, allow_unused=True, materialize_grads=True)
    base = torch.autograd.grad(method.base_objective(out["class"], batch.labels), leaves, allow_unused=True,
                               materialize_grads=True)
    adversary_loss = F.cross_entropy(method.adversary(ADVERSARY_INPUT[placement](out, None)), batch.labels)
    adversary = torch.autograd.grad(adversary_loss, leaves, allow_unused=True, materialize_grads=True)
    assert float(result.parts["adversary"]) == pytest.approx(adversary_loss.item(), abs=1e-12)
    for got, b, a in zip(total, base, adversary, strict=True):
        torch.testing.assert_close(got, b - 0.3 * a, rtol=0, atol=1e-12)
    assert adversary[1 if placement == "features" else 0].abs().sum() > 0


def test_parts_report_the_adversarys_accuracy_slowly_recomputed():
    batch = pk_batch()
    method, _ = build()
    out = outputs(len(batch.labels))
    logits = method.adversary(out["features"])  # the default placement reads the pooled features
    correct = sum(int(logits[i].argmax()) == int(batch.labels[i]) for i in range(len(batch.labels)))
    parts = method.loss(out, batch).parts
    assert set(parts) == {"base", "adversary", "adversary_accuracy", "lambda"}
    assert float(parts["adversary_accuracy"]) == pytest.approx(correct / len(batch.labels))


# placement -> the adversary's input width, read from the network the method was built against
WIDTHS = {
    "features": ([], FEATURES),
    "features with taps": (["model.taps=[0,1]"], 4 + 8),
    "subspace": (["method.placement=subspace"], DIM // 2),
    "subspace of 3": (["method.placement=subspace", "method.subspace_dim=3"], 3),
    "subspace with taps": (["method.placement=subspace", "model.taps=[0,1]"], DIM // 2),
    "embedding": (["method.placement=embedding"], DIM),
}


@pytest.mark.parametrize("case", sorted(WIDTHS))
def test_the_adversary_reads_a_width_of_the_network_it_was_built_for(case):
    overrides, width = WIDTHS[case]
    method, model = build(*overrides)
    batch = pk_batch()
    assert method.adversary[0].in_features == width
    out = model(batch.images)
    layer = model.heads["class"].linear
    assert tuple(method.adversary_input(out, layer).shape) == (len(batch.labels), width)
    assert torch.isfinite(method.loss(out, batch, layer).total)


def adversary_gradients(overrides):
    """name -> the part of each network parameter's gradient that the adversary's term gives (total − base)."""
    method, model = adversarial(*overrides, "method.schedule=constant")
    batch = pk_batch()
    method.objective(model, batch).total.backward()
    total = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    method.base_objective(model(batch.images)["class"], batch.labels).backward()
    return {n: total[n] - (p.grad if p.grad is not None else 0) for n, p in model.named_parameters()}


def reached(gradients, prefix):
    return any(g.abs().sum() > 0 for n, g in gradients.items() if n.startswith(prefix))


def untouched(gradients, prefix):
    return all(torch.count_nonzero(g) == 0 for n, g in gradients.items() if n.startswith(prefix))


def test_features_placement_reaches_the_trunk_and_never_the_class_head():
    gradients = adversary_gradients([])
    assert untouched(gradients, "heads.class.")
    assert all(reached(gradients, f"trunk.blocks.{i}.") for i in range(3))


def test_features_placement_with_taps_reaches_the_attention_and_the_tapped_trunk_only():
    gradients = adversary_gradients(["model.taps=[0,1]"])
    assert untouched(gradients, "heads.class.")
    assert reached(gradients, "attention.0.") and reached(gradients, "attention.1.")
    assert reached(gradients, "trunk.blocks.0.") and reached(gradients, "trunk.blocks.1.")
    assert untouched(gradients, "trunk.blocks.2.")  # after the last tap: the adversary never reads it


def test_embedding_placement_reaches_every_row_of_the_class_head_and_the_trunk():
    gradients = adversary_gradients(["method.placement=embedding"])
    weight, bias = gradients["heads.class.linear.weight"], gradients["heads.class.linear.bias"]
    assert bool((weight.abs().sum(dim=1) > 0).all()) and bool((bias != 0).all())
    assert all(reached(gradients, f"trunk.blocks.{i}.") for i in range(3))


def test_subspace_placement_reaches_the_subspace_rows_of_the_class_head_and_the_trunk():
    gradients = adversary_gradients(["method.placement=subspace"])
    weight = gradients["heads.class.linear.weight"]
    assert bool((weight[: DIM // 2].abs().sum(dim=1) > 0).all())
    assert all(reached(gradients, f"trunk.blocks.{i}.") for i in range(3))


def test_subspace_placement_leaves_the_free_rows_of_the_class_head_to_the_base_loss():
    gradients = adversary_gradients(["method.placement=subspace"])
    assert torch.count_nonzero(gradients["heads.class.linear.weight"][DIM // 2 :]) == 0
    assert torch.count_nonzero(gradients["heads.class.linear.bias"][DIM // 2 :]) == 0


def test_the_adversary_has_its_own_param_group():
    method, model = build("loss.name=ProxyAnchorLoss", "miner.name=null", "method.adversary_lr=0.05")
    groups = {g["name"]: g for g in method.param_groups(model, lr=0.01, weight_decay=0.1)}
    assert set(groups) == {"losses", "adversary"}
    assert [tuple(p.shape) for p in groups["losses"]["params"]] == [(CLASSES, DIM)]  # the proxies
    assert groups["losses"]["lr"] == 0.01 and groups["losses"]["weight_decay"] == 0.0
    assert [tuple(p.shape) for p in groups["adversary"]["params"]] == [(16, FEATURES), (16,), (CLASSES, 16),
                                                                       (CLASSES,)]
    assert groups["adversary"]["lr"] == 0.05 and groups["adversary"]["weight_decay"] == 0.1
    method, model = build()
    (only,) = method.param_groups(model, lr=0.01, weight_decay=0.0)
    assert only["name"] == "adversary" and only["lr"] == 0.01


def test_without_the_adversary_it_is_exactly_the_baseline():
    batch = pk_batch()
    out = outputs(len(batch.labels))
    method, model = build("method.adversary=false")
    baseline, _ = build(method=[])
    result, expected = method.loss(out, batch), baseline.loss(out, batch)
    assert torch.equal(result.total, expected.total) and floats(result.parts) == floats(expected.parts)
    assert method.adversary is None and method.param_groups(model, 0.01, 0.0) == []


@pytest.mark.parametrize("adversary", ["true", "false"])
def test_building_the_method_leaves_the_global_rng_as_the_baselines(adversary):
    torch.manual_seed(3)
    build(method=[])
    expected = torch.rand(3)
    torch.manual_seed(3)
    build(f"method.adversary={adversary}")
    assert torch.equal(expected, torch.rand(3))


def test_lambda_follows_the_training_progress():
    batch = pk_batch()
    dann, _ = build("method.adversary_weight=0.5", total_steps=100)
    assert dann.reversal.scale == 0.0  # p = 0 before the first step
    for step in (0, 25, 99, 100, 150):
        dann.ctx.step = step
        out = outputs(len(batch.labels))
        result = dann.loss(out, batch)
        expected = dann_schedule(min(step / 100, 1.0), 0.5)
        assert result.parts["lambda"] == dann.reversal.scale == expected
        # the reversed gradient of this step is scaled by this step's λ
        (features,) = torch.autograd.grad(result.total, [out["features"]])
        (adversary,) = torch.autograd.grad(F.cross_entropy(dann.adversary(out["features"]), batch.labels),
                                           [out["features"]])
        torch.testing.assert_close(features, -expected * adversary, rtol=1e-6, atol=1e-9)
    constant, _ = build("method.adversary_weight=0.5", "method.schedule=constant", total_steps=100)
    assert constant.reversal.scale == 0.5
    constant.ctx.step = 60
    assert constant.loss(outputs(len(batch.labels)), batch).parts["lambda"] == 0.5


@pytest.mark.parametrize(("overrides", "message"), [
    (["method.schedule=linear"], r"^method \(class_adversarial\): schedule: input should be 'constant' or 'dann'"),
    (["method.adversary_weight=-1"], r"^method \(class_adversarial\): adversary_weight: input should be greater"),
    (["method.adversarial=true"], r"^method \(class_adversarial\): unknown key 'adversarial'; did you mean"),
    (["method.placement=trunk"], r"^method \(class_adversarial\): placement: input should be 'features', "),
    (["method.subspace_dim=2"], r"^method \(class_adversarial\): .*subspace_dim is only for placement 'subspace'"),
    (["method.placement=subspace", f"method.subspace_dim={DIM}"],
     rf"^method\.subspace_dim: {DIM}, but it must leave part of the {DIM}-d embedding free of the adversary"),
])
def test_bad_keys_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build(*overrides)


# The ablation cells of docs/methods.md, each one override away from configs/omniglot/class_adversarial.yaml:
# overrides, taps, adversary on, its input width (taps 64 + 128 + 256 at 28 px; last map 256; embedding 128).
ABLATION = {
    "both": ([], (1, 2, 3), True, 448),
    "attention only": (["method.adversary=false"], (1, 2, 3), False, None),
    "adversary only": (["model.taps=[]"], (), True, 256),
    "baseline": (["model.taps=[]", "method.adversary=false"], (), False, None),
    "taps without attention": (["model.attention=none"], (1, 2, 3), True, 448),
    "adversary on a subspace": (["method.placement=subspace"], (1, 2, 3), True, 64),
    "adversary on the embedding": (["method.placement=embedding"], (1, 2, 3), True, 128),
}


@pytest.mark.parametrize("cell", sorted(ABLATION))
def test_each_ablation_cell_is_one_override_of_the_omniglot_config(cell):
    overrides, taps, has_adversary, width = ABLATION[cell]
    cfg = load_config(CONFIGS / "omniglot" / "class_adversarial.yaml", overrides)
    method, model = build_method(cfg, num_classes=CLASSES, in_chans=1)
    assert model.taps == taps and (method.adversary is not None) == has_adversary
    assert width is None or method.adversary[0].in_features == width
    attention = [name for name, _ in model.attention.named_parameters()]
    assert bool(attention) == (bool(taps) and cfg.model.attention != "none")


@pytest.mark.parametrize("path", sorted((CONFIGS / "paper").glob("class_adversarial_*.yaml")), ids=lambda p: p.name)
def test_paper_configs_tap_stages_of_their_backbone(path):
    cfg = load_config(path)
    assert cfg.method.name == "class_adversarial" and cfg.model.taps
    check_config(cfg)  # the method built against its network
    assert len(resolve_taps(trunk_stages(cfg.model.backbone), cfg.model.taps)) == len(cfg.model.taps)


_STAGES: dict[str, tuple[str, ...]] = {}


def trunk_stages(backbone):
    if backbone not in _STAGES:
        _STAGES[backbone] = build_trunk(backbone, in_chans=3).stage_names
    return _STAGES[backbone]


# -- whole runs ------------------------------------------------------------------------------------------------
TINY = ["model.channels=[4,8,8]", "model.embedding_dim=8", "data.image_size=12", "sampler.classes_per_batch=4",
        "sampler.samples_per_class=2", "train.threads=1", "train.epochs=2", "train.validate_every=3",
        "train.log_every=1", "evaluation.recall_at=[1,2]", "evaluation.metrics=[recall,map@r]"]


@pytest.fixture
def splits(pattern_table):
    return Splits(train=pattern_table(12, 4, seed=0, name="train"), val=pattern_table(4, 4, seed=1, name="val"),
                  test=pattern_table(6, 4, seed=2, name="test"), dataset="patterns", protocol="generated patterns")


def history(run_dir):
    records = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "images_per_s"} for r in records]


def test_without_taps_and_adversary_it_trains_exactly_like_the_baseline(tmp_path, splits):
    runs = {}
    for name, method in (("baseline", []), ("class_adversarial", [*METHOD, "method.adversary=false"])):
        Trainer(load_config(None, [*TINY, *method]), tmp_path / name, progress=False, splits=splits).fit()
        runs[name] = load_checkpoint(tmp_path / name / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(runs["baseline"][k], runs["class_adversarial"][k]) for k in runs["baseline"])
    assert history(tmp_path / "baseline") == history(tmp_path / "class_adversarial")


def test_a_run_with_attention_and_the_dann_ramped_adversary(tmp_path, splits):
    cfg = load_config(None, [*TINY, *METHOD, "model.taps=[block0,block1]", "model.attention=spatial+channel",
                             "method.adversary_weight=0.5"])
    trainer = Trainer(cfg, tmp_path, progress=False, splits=splits)
    assert [g["name"] for g in trainer.optimizer.param_groups] == ["backbone", "heads", "attention", "adversary"]
    assert trainer.c.method.adversary[0].in_features == 4 + 8  # the attention-pooled taps
    metrics = trainer.fit()
    train = [r for r in history(tmp_path) if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, trainer.total_steps + 1))
    assert [r["lambda"] for r in train] == [dann_schedule((r["step"] - 1) / trainer.total_steps, 0.5) for r in train]
    assert all(0 <= r["adversary_accuracy"] <= 1 for r in train)
    assert 0 <= metrics["test"]["recall@1"] <= 1
    state = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert any(key.startswith("attention.") for key in state["model"])
    assert any(key.startswith("adversary.") for key in load_checkpoint(tmp_path / "checkpoints" / "last.pt")["method"])
