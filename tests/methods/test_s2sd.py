"""S2SD: the similarity distillation recomputed the slow way, and how the terms add up."""

import math

import pytest
import torch
import torch.nn.functional as F

from unseen.config import load_config
from unseen.methods import METHODS, Batch
from unseen.methods.s2sd import similarity_distillation
from unseen.train.components import build_method


def floats(parts: dict) -> dict[str, float]:
    """A LossOutput's parts (detached 0-dim tensors or floats) as floats, as the trainer logs them."""
    return {key: float(value) for key, value in parts.items()}


def slow_distillation(student, teacher, temperature):
    """mean_i Σ_j q_ij (log q_ij − log p_ij) · T², p/q the row softmax of the cosine similarities / T."""
    def rows(x):
        x = [[v / math.sqrt(sum(w * w for w in row)) for v in row] for row in x.tolist()]
        sims = [[sum(a * b for a, b in zip(u, v, strict=True)) / temperature for v in x] for u in x]
        out = []
        for row in sims:
            top = max(row)
            z = sum(math.exp(s - top) for s in row)
            out.append([math.exp(s - top) / z for s in row])
        return out

    p, q = rows(student), rows(teacher)
    kl = [sum(qj * (math.log(qj) - math.log(pj)) for pj, qj in zip(pi, qi, strict=True)) for pi, qi in zip(p, q,
                                                                                                          strict=True)]
    return sum(kl) / len(kl) * temperature**2


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_the_distillation_matches_a_slow_reference(temperature):
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(6, 4, generator=generator), torch.randn(6, 16, generator=generator)
    got = similarity_distillation(student.double(), teacher.double(), temperature).item()
    assert got == pytest.approx(slow_distillation(student, teacher, temperature), abs=1e-6)
    assert similarity_distillation(student, student * 3, temperature).item() == pytest.approx(0.0, abs=1e-6)


def test_the_teacher_is_detached_and_the_student_learns():
    student = torch.randn(6, 4, requires_grad=True)
    teacher = torch.randn(6, 16, requires_grad=True)
    similarity_distillation(student, teacher, 1.0).backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0


def make(*overrides):
    torch.manual_seed(0)
    config = load_config(None, ["method.name=s2sd", "model.channels=[4,8]", "model.embedding_dim=8",
                                "method.target_dims=[16,32]", *overrides])
    return build_method(config, num_classes=4)


def pk_batch():
    generator = torch.Generator().manual_seed(1)
    return Batch(torch.randn(8, 1, 12, 12, generator=generator), torch.arange(4).repeat_interleave(2), torch.arange(8))


def test_the_total_is_base_plus_each_targets_loss_and_weighted_distillation():
    method, model = make("method.distillation_weight=3")
    batch = pk_batch()
    out = model(batch.images)
    result = method.loss(out, batch)
    expected = method.base_objective(out["class"], batch.labels)
    for k, head in enumerate(method.targets):
        target = F.normalize(head(out["fused"]), dim=-1)
        term = method.base_objective(target, batch.labels, method.target_losses[k])
        distillation = similarity_distillation(out["class"], target, 1.0)
        assert float(result.parts[f"target{k}"]) == pytest.approx(term.item(), abs=1e-6)
        assert float(result.parts[f"distillation{k}"]) == pytest.approx(distillation.item(), abs=1e-6)
        expected = expected + term + 3 * distillation
    assert result.total.item() == pytest.approx(expected.item(), abs=1e-5)
    assert [head[-1].out_features for head in method.targets] == [16, 32]


def test_targets_are_training_only_and_zero_weights_keep_the_base_gradient_of_the_network():
    method, model = make("method.distillation_weight=0")
    assert not any(name.startswith("target") for name in model.state_dict())  # the saved network is unchanged
    batch = pk_batch()
    method.loss(model(batch.images), batch).total.backward()
    with_targets = model.heads["class"].linear.weight.grad.clone()
    model.zero_grad()
    method.base_objective(model(batch.images)["class"], batch.labels).backward()
    assert torch.equal(model.heads["class"].linear.weight.grad, with_targets)  # only the distillation reaches e


def test_feature_distillation_adds_its_weighted_term():
    method, model = make("method.feature_distillation=true", "method.feature_distillation_weight=2")
    batch = pk_batch()
    out = model(batch.images)
    parts = floats(method.loss(out, batch).parts)
    assert parts["feature_distillation"] == pytest.approx(
        similarity_distillation(out["class"], out["features"], 1.0).item(), abs=1e-6)


def test_s2sd_is_registered_by_its_file_alone():
    assert "s2sd" in METHODS
