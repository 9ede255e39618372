"""Adversarial decorrelation of two embeddings (MIC, Roth et al. ICCV 2019; Sharing Matters, Milbich et al. TPAMI 2020).

A projection network R learns to predict the class embedding from the shared one; behind a gradient reversal on
both embeddings the encoder and both heads learn the opposite, so the two embeddings carry complementary
information. With ĉ = normalize(GRL(c)), ŝ = normalize(GRL(s)):

    L = −(1/B) Σ_b (1/D) Σ_k (ĉ_bk · normalize(R(ŝ_b))_k)²,   R = Linear(D_s → H) → ReLU → Linear(H → D).

R minimizes L (maximizes the squared element-wise agreement); the encoder, through the reversal, maximizes it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unseen.losses.grl import GradientReversal


def decorrelation_loss(class_embedding: torch.Tensor, projected: torch.Tensor) -> torch.Tensor:
    """−mean over rows b and dimensions k of (ĉ_bk · p̂_bk)², both rows L2-normalized (a "correlation" proxy of
    the MIC code, not a cosine similarity)."""
    agreement = F.normalize(class_embedding, dim=-1) * F.normalize(projected, dim=-1)
    return -agreement.pow(2).mean()


class Decorrelation(nn.Module):
    """The projection R (shared → class space) and the reversed-gradient decorrelation loss of the two embeddings.

    Computed in fp32 (fp64 for a float64 model), also under autocast. `reverse.scale` is the reversal's λ (1: the
    papers)."""

    def __init__(self, shared_dim: int, class_dim: int, hidden_dim: int = 512) -> None:
        super().__init__()
        self.reverse = GradientReversal(1.0)
        self.projection = nn.Sequential(nn.Linear(shared_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, class_dim))

    def forward(self, class_embedding: torch.Tensor, shared_embedding: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(self.projection[0].weight.dtype, torch.float32)
        with torch.autocast(class_embedding.device.type, enabled=False):
            shared = F.normalize(self.reverse(shared_embedding.to(dtype)), dim=-1)
            return decorrelation_loss(self.reverse(class_embedding.to(dtype)), self.projection(shared))
