"""Embedding heads: pooled trunk features -> a D-dimensional, L2-normalized embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EmbeddingHead(nn.Module):
    """z = normalize(W · dropout(f) + b). `linear` is exposed for methods that reuse W on other inputs (ECAML).

    With `slices` = K > 1 (Divide and Conquer) the D outputs form K contiguous slices, each L2-normalized on
    its own and scaled by 1/√K, so the whole vector still has unit norm.
    """

    def __init__(
        self, in_features: int, dim: int, dropout: float = 0.0, normalize: bool = True, slices: int = 1
    ) -> None:
        super().__init__()
        if dim % slices:
            raise ValueError(f"embedding dimension {dim} is not divisible into {slices} slices")
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_features, dim)
        self.normalize = normalize
        self.slices = slices

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = self.linear(self.dropout(features))
        if not self.normalize:
            return z
        if self.slices == 1:
            return F.normalize(z, dim=-1)
        parts = F.normalize(z.unflatten(-1, (self.slices, -1)), dim=-1)
        return parts.flatten(-2) / self.slices**0.5
