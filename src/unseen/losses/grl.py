"""Gradient reversal (Ganin & Lempitsky 2015): the identity forward, −λ·gradient backward.

Used by the class-adversarial network (Al-Kaabi et al. 2021) and the decorrelation of MIC / Sharing
Matters: the adversary minimizes its loss while the encoder, behind the reversal, maximizes it.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inputs: torch.Tensor, scale: float) -> torch.Tensor:  # type: ignore[override]
        ctx.scale = scale
        return inputs.view_as(inputs)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return -ctx.scale * grad_output, None


def reverse_gradient(inputs: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """y = x forward; ∂L/∂x = −scale · ∂L/∂y backward."""
    return _ReverseGradient.apply(inputs, float(scale))


class GradientReversal(nn.Module):
    """`reverse_gradient` as a module whose scale λ can be changed between steps (e.g. by `dann_schedule`)."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return reverse_gradient(inputs, self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


def dann_schedule(progress: float, maximum: float = 1.0, gamma: float = 10.0) -> float:
    """λ(p) = maximum · (2 / (1 + exp(−γ·p)) − 1), p ∈ [0, 1] the training progress (Ganin et al. 2016)."""
    progress = min(max(progress, 0.0), 1.0)
    return maximum * (2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0)
