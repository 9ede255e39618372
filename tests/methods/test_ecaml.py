import math

import pytest
import torch

from unseen.config import load_config
from unseen.data.base import Splits
from unseen.errors import ConfigError
from unseen.losses.energy_confusion import different_class_pairs
from unseen.methods.base import Batch
from unseen.train.components import build_components, build_method, check_config
from unseen.train.trainer import build_optimizer

DIM = 8


def floats(parts: dict) -> dict[str, float]:
    """A LossOutput's parts (detached 0-dim tensors or floats) as floats, as the trainer logs them."""
    return {key: float(value) for key, value in parts.items()}


def config(*overrides, method="ecaml"):
    return load_config(None, [f"method.name={method}", "model.channels=[4,8]", f"model.embedding_dim={DIM}",
                              *overrides])


def ecaml(*overrides, seed=0, method="ecaml"):
    """The method and the network it trains (seeded: the same `seed` gives the same network for every method)."""
    torch.manual_seed(seed)
    return build_method(config(*overrides, method=method), num_classes=4, in_chans=1)


def pk_batch(p=4, k=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(p * k, 1, 12, 12, generator=generator)
    return Batch(images, torch.arange(p).repeat_interleave(k), torch.randperm(40, generator=generator)[: p * k])


def trunk_grads(model):
    return [p.grad for p in model.trunk.parameters()]


def metric_layer(model):
    return model.heads["class"].linear


def test_confusion_gradient_is_zero_on_the_backbone_and_non_zero_on_the_metric_layer():
    (method, model), batch = ecaml(), pk_batch()
    layer = metric_layer(model)
    confusion, _, penalty = method.confusion_terms(model(batch.images)["features"], batch, layer)
    (confusion + penalty).backward()
    assert all(g is None or torch.count_nonzero(g) == 0 for g in trunk_grads(model))
    assert torch.count_nonzero(layer.weight.grad) > 0 and torch.count_nonzero(layer.bias.grad) > 0


def test_the_total_gives_the_backbone_exactly_the_baseline_gradient():
    batch = pk_batch()
    grads = []
    for name in ("baseline", "ecaml"):
        method, model = ecaml(method=name)
        method.objective(model, batch).total.backward()
        grads.append(trunk_grads(model))
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


def test_without_detaching_the_confusion_also_reaches_the_backbone():
    (method, model), batch = ecaml("method.detach_features=false"), pk_batch()
    confusion, _, _ = method.confusion_terms(model(batch.images)["features"], batch, metric_layer(model))
    confusion.backward()
    assert all(torch.count_nonzero(g) > 0 for g in trunk_grads(model))


def test_terms_match_a_slow_reference_on_the_unnormalized_metric_layer_output():
    (method, model), batch = ecaml("method.pairs_per_anchor=3"), pk_batch(p=3, k=4)
    model = model.double().eval()  # eval: the objective's forward pass and this one see the same BatchNorm
    batch = Batch(batch.images.double(), batch.labels, batch.rows)
    result = method.objective(model, batch)
    layer, features = metric_layer(model), model(batch.images)["features"]
    weight, bias, features = (t.detach().tolist() for t in (layer.weight, layer.bias, features))
    z = [[sum(w * f for w, f in zip(weight[k], row, strict=True)) + bias[k] for k in range(DIM)] for row in features]
    anchors, partners = different_class_pairs(batch.labels, 3, method.pair_generator(batch))
    energy = sum(0.5 * sum((z[i][k] - z[j][k]) ** 2 for k in range(DIM))
                 for i, j in zip(anchors.tolist(), partners.tolist(), strict=True)) / len(anchors)
    penalty = 0.5 / DIM * sum((sum(w * w for w in row) - 1) ** 2 for row in weight)
    parts = floats(result.parts)
    assert parts["energy"] == pytest.approx(energy, abs=1e-6)
    assert parts["confusion"] == pytest.approx(math.log(energy), abs=1e-6)
    assert parts["penalty"] == pytest.approx(penalty, abs=1e-6)
    assert result.total.item() == pytest.approx(parts["base"] + 0.13 * parts["confusion"] + parts["penalty"],
                                                abs=1e-6)


def draw(method, batch):
    return different_class_pairs(batch.labels, 2, method.pair_generator(batch))


def test_the_pair_draw_is_a_function_of_seed_and_batch_rows():
    batch = pk_batch()
    method, _ = ecaml()
    again, _ = ecaml()
    assert all(torch.equal(a, b) for a, b in zip(draw(method, batch), draw(again, batch), strict=True))
    other_rows = Batch(batch.images, batch.labels, batch.rows + 100)
    other_seed, _ = ecaml("train.seed=1")
    assert not torch.equal(draw(method, batch)[1], draw(method, other_rows)[1])
    assert not torch.equal(draw(method, batch)[1], draw(other_seed, batch)[1])


def test_zero_weights_give_the_baseline_loss_and_log_energy_off_gives_e():
    (baseline, model), batch = ecaml(method="baseline"), pk_batch()
    out, layer = model(batch.images), metric_layer(model)
    expected = baseline.loss(out, batch).total
    off, _ = ecaml("method.confusion_weight=0", "method.row_norm_weight=0")
    assert off.loss(out, batch, layer).total.item() == expected.item()
    linear, _ = ecaml("method.log_energy=false")
    parts = floats(linear.loss(out, batch, layer).parts)
    assert parts["confusion"] == parts["energy"]


def test_a_one_class_batch_has_no_confusion_term():
    method, model = ecaml()
    batch = Batch(torch.randn(4, 1, 12, 12), torch.zeros(4, dtype=torch.long), torch.arange(4))
    confusion, energy, _ = method.confusion_terms(model(batch.images)["features"], batch, metric_layer(model))
    assert confusion.item() == energy.item() == 0.0


def test_the_metric_layer_stays_the_networks_own():
    method, model = ecaml("loss.name=MultiSimilarityLoss")
    assert list(method.parameters()) == [] and method.state_dict() == {}
    groups = method.param_groups(model, 1e-3, 0.0)
    assert [g["name"] for g in groups] == ["metric_layer", "metric_layer_bias"]
    layer = metric_layer(model)
    assert groups[0]["params"][0] is layer.weight and groups[1]["params"][0] is layer.bias
    batch = pk_batch()
    with pytest.raises(ValueError, match=r"^ecaml: the loss needs the network's metric layer"):
        method.loss(model(batch.images), batch)


@pytest.fixture
def splits(pattern_table):
    return Splits(train=pattern_table(4, 4, seed=0, name="train"), val=pattern_table(2, 4, seed=1, name="val"),
                  test=pattern_table(2, 4, seed=2, name="test"), dataset="patterns", protocol="generated patterns")


@pytest.mark.parametrize("multiplier", [10.0, 1.0])
def test_the_optimizer_holds_the_metric_layer_once_at_its_multiplied_lr(multiplier, splits):
    extra = [] if multiplier == 10.0 else [f"method.metric_layer_lr={multiplier}"]  # 10: the default
    c = build_components(config("optimizer.lr=0.002", "optimizer.weight_decay=0.1", "loss.name=ProxyAnchorLoss",
                                "miner.name=null", "sampler.classes_per_batch=2", "sampler.samples_per_class=2",
                                "data.image_size=12", *extra), splits)
    groups = {g["name"]: g for g in build_optimizer(c).param_groups}
    layer = metric_layer(c.model)
    held = [id(p) for g in groups.values() for p in g["params"]]
    owned = [*c.model.parameters(), *c.method.parameters()]
    assert sorted(held) == sorted(id(p) for p in owned)  # every parameter exactly once
    assert set(groups) == {"backbone", "losses", "metric_layer", "metric_layer_bias"}  # the heads group emptied
    assert groups["metric_layer"]["params"] == [layer.weight] and groups["metric_layer_bias"]["params"] == [layer.bias]
    assert groups["metric_layer"]["lr"] == groups["metric_layer_bias"]["lr"] == pytest.approx(0.002 * multiplier)
    assert groups["metric_layer"]["weight_decay"] == 0.1 and groups["metric_layer_bias"]["weight_decay"] == 0.0
    assert groups["backbone"]["lr"] == groups["losses"]["lr"] == 0.002  # the proxies stay at the lr


def test_terms_stay_fp32_under_bf16_autocast():
    (method, model), batch = ecaml(), pk_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch.images)
        terms = method.confusion_terms(out["features"], batch, metric_layer(model))
    assert all(t.dtype == torch.float32 for t in terms)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("confusion_weigth", "0.1", r"unknown key 'confusion_weigth'; did you mean 'confusion_weight'"),
     ("row_norm_weight", "-1", r"row_norm_weight: .*greater than or equal to 0"),
     ("pairs_per_anchor", "0", r"pairs_per_anchor: .*greater than 0"),
     ("metric_layer_lr", "0", r"metric_layer_lr: .*greater than 0")],
)
def test_bad_params_are_named(key, value, message):
    with pytest.raises(ConfigError, match=rf"^method \(ecaml\): {message}"):
        ecaml(f"method.{key}={value}")


BASE_LOSSES = {
    "multi-similarity+miner": ["loss.name=MultiSimilarityLoss", "miner.name=MultiSimilarityMiner"],
    "margin+distance-weighted": ["loss.name=MarginLoss", "loss.learn_beta=true", "miner.name=DistanceWeightedMiner",
                                 "miner.cutoff=0.5", "miner.nonzero_loss_cutoff=1.4"],
    "triplet": ["loss.name=TripletMarginLoss", "loss.margin=0.2", "miner.name=null"],
    "contrastive": ["loss.name=ContrastiveLoss", "loss.neg_margin=1.0", "miner.name=null"],
}


@pytest.mark.parametrize("name", sorted(BASE_LOSSES))
def test_ecaml_composes_with_base_losses_in_a_real_forward_backward_step(name, splits):
    cfg = config(*BASE_LOSSES[name], "data.image_size=12", "sampler.classes_per_batch=2",
                 "sampler.samples_per_class=2")
    torch.manual_seed(0)
    c = build_components(cfg, splits)
    method, model, batch = c.method, c.model, pk_batch(p=4, k=4)
    optimizer = build_optimizer(c)
    before = metric_layer(model).weight.detach().clone()
    result = method.objective(model, batch)
    assert set(result.parts) == {"base", "confusion", "energy", "penalty"}
    assert torch.isfinite(result.total)
    result.total.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert all(p.grad is not None for p in method.parameters())  # MarginLoss's learnable beta
    optimizer.step()
    assert not torch.equal(before, metric_layer(model).weight)


def test_ecaml_refuses_a_tapped_model():
    with pytest.raises(ConfigError, match=r"^method \(ecaml\): model\.taps is not supported"):
        check_config(load_config(None, ["method.name=ecaml", "model.taps=[block1]"]))
    with pytest.raises(ConfigError, match=r"^method \(ecaml\): model\.taps is not supported"):
        ecaml("model.taps=[0]")
