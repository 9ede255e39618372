"""Attention pooling of an intermediate feature map (Al-Kaabi et al. 2021; our design, docs/methods.md).

A tap h (B×C×H×W) becomes one vector g = Σ_u A(u)·h'(u) over its H×W positions u, where
- h' = h, or with channel attention (squeeze-and-excitation, Hu et al. 2018) h'_c = a_c·h_c,
  a = σ(W₂·ReLU(W₁·mean_u h(u)));
- A is the spatial attention: a 1×1-convolution score s(u) = w·h'(u) + b normalized over the positions,
  softmax A(u) = exp s(u) / Σ_v exp s(v), or sigmoid A(u) = σ(s(u)) / Σ_v σ(s(v)). Either way A ≥ 0 and
  Σ_u A(u) = 1, so g is a weighted average of the map's vectors.
The score starts at zero (w = 0, b = 0): A starts uniform and g starts as the plain global average.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Attention = Literal["none", "spatial", "spatial+channel"]
Normalization = Literal["softmax", "sigmoid"]


class ChannelAttention(nn.Module):
    """h'_c = a_c·h_c with a = σ(W₂·ReLU(W₁·mean_u h(u))) (SE; hidden width C/16, at least 8)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 8)
        self.squeeze = nn.Linear(channels, hidden)
        self.excite = nn.Linear(hidden, channels)

    def gates(self, maps: torch.Tensor) -> torch.Tensor:
        """a: B×C, each in (0, 1)."""
        return torch.sigmoid(self.excite(F.relu(self.squeeze(maps.mean(dim=(-2, -1))))))

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return maps * self.gates(maps)[:, :, None, None]


class AttentionPool(nn.Module):
    """A feature map B×C×H×W -> B×C: plain average (`none`), spatially attended (`spatial`), or channel- then
    spatially attended (`spatial+channel`)."""

    def __init__(
        self, channels: int, attention: Attention = "spatial", normalization: Normalization = "softmax"
    ) -> None:
        super().__init__()
        if attention not in ("none", "spatial", "spatial+channel"):
            raise ValueError(f"attention: expected none, spatial or spatial+channel, got {attention!r}")
        if normalization not in ("softmax", "sigmoid"):
            raise ValueError(f"normalization: expected softmax or sigmoid, got {normalization!r}")
        self.channel = ChannelAttention(channels) if attention == "spatial+channel" else None
        self.score = nn.Conv2d(channels, 1, kernel_size=1) if attention != "none" else None
        if self.score is not None:
            nn.init.zeros_(self.score.weight)
            nn.init.zeros_(self.score.bias)
        self.normalization = normalization
        self.channels = channels

    def attend(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h', A): the channel-attended maps B×C×H×W and the spatial weights B×H×W (≥ 0, summing to 1 per map)."""
        if self.channel is not None:
            maps = self.channel(maps)
        if self.score is None:
            return maps, torch.full_like(maps[:, 0], 1.0 / (maps.shape[-2] * maps.shape[-1]))
        scores = self.score(maps).flatten(1).float()
        if self.normalization == "sigmoid":
            scores = F.logsigmoid(scores)  # softmax(log σ(s)) = σ(s) / Σ σ(s), without underflow of the sum
        return maps, torch.softmax(scores, dim=1).to(maps.dtype).view_as(maps[:, 0])

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        if self.score is None:
            return maps.mean(dim=(-2, -1))
        maps, weights = self.attend(maps)
        return torch.einsum("bchw,bhw->bc", maps, weights)
