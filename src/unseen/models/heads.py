"""Embedding heads: pooled trunk features -> a D-dimensional, L2-normalized embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EmbeddingHead(nn.Module):
    """z = normalize(W · dropout(f) + b). `linear` is exposed for methods that reuse W on other inputs (ECAML)."""

    def __init__(self, in_features: int, dim: int, dropout: float = 0.0, normalize: bool = True) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_features, dim)
        self.normalize = normalize

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = self.linear(self.dropout(features))
        return F.normalize(z, dim=-1) if self.normalize else z
