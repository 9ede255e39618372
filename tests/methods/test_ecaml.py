import math

import pytest
import torch

from unseen.config import load_config
from unseen.errors import ConfigError
from unseen.losses.energy_confusion import different_class_pairs
from unseen.methods.base import Batch
from unseen.methods.baseline import Baseline
from unseen.methods.ecaml import ECAML
from unseen.models.backbones import ConvNet
from unseen.models.network import EmbeddingModel

DIM = 8


def config(*overrides):
    return load_config(None, ["method.name=ecaml", f"model.embedding_dim={DIM}", *overrides])


def embedder(seed=0):
    torch.manual_seed(seed)
    return EmbeddingModel(ConvNet(in_chans=1, channels=(4, 8)), DIM)


def ecaml(*overrides, model=None):
    method = ECAML(config(*overrides), num_classes=4, embedding_dim=DIM)
    if model is not None:
        method.attach(model)
    return method


def pk_batch(p=4, k=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(p * k, 1, 12, 12, generator=generator)
    return Batch(images, torch.arange(p).repeat_interleave(k), torch.randperm(40, generator=generator)[: p * k])


def trunk_grads(model):
    return [p.grad for p in model.trunk.parameters()]


def test_confusion_gradient_is_zero_on_the_backbone_and_non_zero_on_the_metric_layer():
    model, batch = embedder(), pk_batch()
    method = ecaml(model=model)
    confusion, _, penalty = method.confusion_terms(model(batch.images)["features"], batch)
    (confusion + penalty).backward()
    assert all(g is None or torch.count_nonzero(g) == 0 for g in trunk_grads(model))
    layer = model.heads["class"].linear
    assert torch.count_nonzero(layer.weight.grad) > 0 and torch.count_nonzero(layer.bias.grad) > 0


def test_the_total_gives_the_backbone_exactly_the_baseline_gradient():
    batch = pk_batch()
    grads = []
    for method_cls in (Baseline, ECAML):
        model = embedder()
        method = method_cls(config(), num_classes=4, embedding_dim=DIM)
        if method_cls is ECAML:
            method.attach(model)
        method.loss(model(batch.images), batch).total.backward()
        grads.append(trunk_grads(model))
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


def test_without_detaching_the_confusion_also_reaches_the_backbone():
    model, batch = embedder(), pk_batch()
    method = ecaml("method.detach_features=false", model=model)
    confusion, _, _ = method.confusion_terms(model(batch.images)["features"], batch)
    confusion.backward()
    assert all(torch.count_nonzero(g) > 0 for g in trunk_grads(model))


def test_terms_match_a_slow_reference_on_the_unnormalized_metric_layer_output():
    model, batch = embedder().double(), pk_batch(p=3, k=4)
    method = ecaml("method.pairs_per_anchor=3", model=model)
    out = model(batch.images.double())
    result = method.loss(out, batch)
    layer = model.heads["class"].linear
    weight, bias, features = (t.detach().tolist() for t in (layer.weight, layer.bias, out["features"]))
    z = [[sum(w * f for w, f in zip(weight[k], row, strict=True)) + bias[k] for k in range(DIM)] for row in features]
    anchors, partners = different_class_pairs(batch.labels, 3, method.pair_generator(batch))
    energy = sum(0.5 * sum((z[i][k] - z[j][k]) ** 2 for k in range(DIM))
                 for i, j in zip(anchors.tolist(), partners.tolist(), strict=True)) / len(anchors)
    penalty = 0.5 / DIM * sum((sum(w * w for w in row) - 1) ** 2 for row in weight)
    parts = result.parts
    assert parts["energy"] == pytest.approx(energy, abs=1e-6)
    assert parts["confusion"] == pytest.approx(math.log(energy), abs=1e-6)
    assert parts["penalty"] == pytest.approx(penalty, abs=1e-6)
    assert result.total.item() == pytest.approx(parts["base"] + 0.13 * parts["confusion"] + parts["penalty"],
                                                abs=1e-6)


def draw(method, batch):
    return different_class_pairs(batch.labels, 2, method.pair_generator(batch))


def test_the_pair_draw_is_a_function_of_seed_and_batch_rows():
    batch = pk_batch()
    method = ecaml()
    assert all(torch.equal(a, b) for a, b in zip(draw(method, batch), draw(ecaml(), batch), strict=True))
    other_rows = Batch(batch.images, batch.labels, batch.rows + 100)
    other_seed = ecaml("train.seed=1")
    assert not torch.equal(draw(method, batch)[1], draw(method, other_rows)[1])
    assert not torch.equal(draw(method, batch)[1], draw(other_seed, batch)[1])


def test_zero_weights_give_the_baseline_loss_and_log_energy_off_gives_e():
    model, batch = embedder(), pk_batch()
    out = model(batch.images)
    baseline = Baseline(config(), num_classes=4, embedding_dim=DIM).loss(out, batch).total
    off = ecaml("method.confusion_weight=0", "method.row_norm_weight=0", model=model).loss(out, batch)
    assert off.total.item() == baseline.item()
    linear = ecaml("method.log_energy=false", model=model).loss(out, batch).parts
    assert linear["confusion"] == linear["energy"]


def test_a_one_class_batch_has_no_confusion_term():
    model = embedder()
    batch = Batch(torch.randn(4, 1, 12, 12), torch.zeros(4, dtype=torch.long), torch.arange(4))
    confusion, energy, _ = ecaml(model=model).confusion_terms(model(batch.images)["features"], batch)
    assert confusion.item() == energy.item() == 0.0


def test_the_metric_layer_stays_the_embedders_own():
    model = embedder()
    method = ecaml("loss.name=MultiSimilarityLoss", model=model)
    assert list(method.parameters()) == [] and method.state_dict() == {}
    assert method.param_groups(1e-3, 0.0) == []
    with pytest.raises(RuntimeError, match=r"call method\.attach\(model\)"):
        ecaml().loss(model(pk_batch().images), pk_batch())


def test_terms_stay_fp32_under_bf16_autocast():
    model, batch = embedder(), pk_batch()
    method = ecaml(model=model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch.images)
        terms = method.confusion_terms(out["features"], batch)
    assert all(t.dtype == torch.float32 for t in terms)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("confusion_weigth", "0.1", r"unknown key 'confusion_weigth'; did you mean 'confusion_weight'"),
     ("row_norm_weight", "-1", r"row_norm_weight: .*greater than or equal to 0"),
     ("pairs_per_anchor", "0", r"pairs_per_anchor: .*greater than 0")],
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
def test_ecaml_composes_with_base_losses_in_a_real_forward_backward_step(name):
    model, batch = embedder(), pk_batch(p=4, k=4)
    method = ecaml(*BASE_LOSSES[name], model=model)
    groups = model.param_groups(1e-3, None, 0.0) + method.param_groups(1e-3, 0.0)
    optimizer = torch.optim.Adam(groups)
    before = model.heads["class"].linear.weight.detach().clone()
    result = method.loss(model(batch.images), batch)
    assert set(result.parts) == {"base", "confusion", "energy", "penalty"}
    assert torch.isfinite(result.total)
    result.total.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert all(p.grad is not None for p in method.parameters())  # MarginLoss's learnable beta
    optimizer.step()
    assert not torch.equal(before, model.heads["class"].linear.weight)


def test_ecaml_refuses_a_tapped_model():
    from unseen.config import load_config
    from unseen.errors import ConfigError
    from unseen.train.components import check_config

    with pytest.raises(ConfigError, match=r"method \(ecaml\): model\.taps is not supported"):
        check_config(load_config(None, ["method.name=ecaml", "model.taps=[block1]"]))
