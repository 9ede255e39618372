import pytest
import torch
import torch.nn.functional as F

from unseen.losses.decorrelation import Decorrelation, decorrelation_loss
from unseen.models.network import build_model
from unseen.models.spec import ModelSpec


def test_loss_is_minus_the_mean_squared_elementwise_agreement_of_the_unit_rows():
    torch.manual_seed(0)
    c, p = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    slow = 0.0
    for b in range(5):
        c_norm = sum(float(c[b, k]) ** 2 for k in range(4)) ** 0.5
        p_norm = sum(float(p[b, k]) ** 2 for k in range(4)) ** 0.5
        slow += sum((float(c[b, k]) / c_norm * float(p[b, k]) / p_norm) ** 2 for k in range(4)) / 4
    assert float(decorrelation_loss(c, p)) == pytest.approx(-slow / 5, abs=1e-12)
    assert float(decorrelation_loss(c, c)) < float(decorrelation_loss(c, p)) < 0


def test_module_projects_the_normalized_shared_embedding_into_the_class_space():
    torch.manual_seed(0)
    module = Decorrelation(shared_dim=3, class_dim=4, hidden_dim=7).double()
    c, s = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    projected = module.projection(F.normalize(s, dim=-1))
    assert [tuple(q.shape) for q in module.parameters()] == [(7, 3), (7,), (4, 7), (4,)]
    assert module(c, s).item() == pytest.approx(decorrelation_loss(c, projected).item(), abs=1e-12)


def test_reversal_gives_the_encoder_the_negative_of_the_projections_gradient():
    """R descends L; the trunk and both heads, behind the reversal, get exactly −∂L (they ascend it)."""
    torch.manual_seed(0)
    # the network MIC and Sharing train: a trunk, the class head and the shared head
    model = build_model(ModelSpec(backbone="convnet", in_chans=1, channels=(4, 8), embedding_dim=8,
                                  extra_heads={"shared": 6})).double()
    module = Decorrelation(shared_dim=6, class_dim=8, hidden_dim=5).double()
    images = torch.randn(6, 1, 12, 12, dtype=torch.float64)

    def gradients(loss_of):
        model.zero_grad()
        module.zero_grad()
        loss_of(model(images)).backward()
        encoder = {n: q.grad.clone() for n, q in model.named_parameters() if q.grad is not None}
        return encoder, {n: q.grad.clone() for n, q in module.named_parameters()}

    reversed_encoder, reversed_projection = gradients(lambda out: module(out["class"], out["shared"]))
    plain_encoder, plain_projection = gradients(  # the objective R minimizes, without any reversal
        lambda out: decorrelation_loss(out["class"], module.projection(F.normalize(out["shared"], dim=-1))))
    assert set(plain_encoder) == {n for n, _ in model.named_parameters()}  # trunk and both heads
    assert set(reversed_encoder) == set(plain_encoder)
    for name, gradient in plain_encoder.items():
        assert gradient.abs().sum() > 0, name
        torch.testing.assert_close(reversed_encoder[name], -gradient, rtol=1e-12, atol=1e-15)
    for name, gradient in plain_projection.items():
        torch.testing.assert_close(reversed_projection[name], gradient, rtol=1e-12, atol=1e-15)


def test_fp32_under_autocast():
    torch.manual_seed(0)
    module = Decorrelation(shared_dim=3, class_dim=4)
    c, s = torch.randn(5, 4), torch.randn(5, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = module(c.bfloat16(), s.bfloat16())
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(module(c.bfloat16().float(), s.bfloat16().float()).item(), abs=1e-7)
