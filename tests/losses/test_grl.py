import math

import pytest
import torch

from unseen.losses.grl import GradientReversal, dann_schedule, reverse_gradient


@pytest.mark.parametrize("scale", [0.0, 0.5, 1.0, 3.0])
def test_identity_forward_and_exactly_minus_scale_backward(scale):
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(4, 3, dtype=torch.float64)
    y = reverse_gradient(x, scale)
    assert torch.equal(y, x)
    y.backward(upstream)
    assert torch.equal(x.grad, -scale * upstream)


def test_module_scale_can_change_between_steps():
    layer = GradientReversal(1.0)
    x = torch.ones(2, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad.tolist() == [-1.0, -1.0]
    layer.scale = 0.25
    x.grad = None
    layer(x).sum().backward()
    assert x.grad.tolist() == [-0.25, -0.25]


def test_dann_schedule():
    assert dann_schedule(0.0) == 0.0
    assert dann_schedule(1.0, maximum=0.5) == pytest.approx(0.5 * (2 / (1 + math.exp(-10)) - 1))
    assert dann_schedule(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert dann_schedule(2.0) == dann_schedule(1.0) and dann_schedule(-1.0) == 0.0
