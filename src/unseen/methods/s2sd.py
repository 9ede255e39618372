"""S2SD — Simultaneous Similarity-based Self-Distillation (Roth, Milbich, Ommer, Cohen, Ghassemi, ICML 2021).

Beside the class embedding e (dimension d, the one used at test time), a few auxiliary "target" heads map the same
network input to higher-dimensional embeddings t_k (e.g. 512 to 2048 dimensions) and learn with the same base loss.
High-dimensional embeddings keep more of the data's structure and generalize better, but retrieval with them is
costly; S2SD distills their *batch similarity structure* into e while everything trains together:

    L = L_base(e) + Σ_k [ L_base(t_k) + ω · KL( softmax(S(t_k)/T) ‖ softmax(S(e)/T) ) ]

where S(x) = x xᵀ is the B×B cosine-similarity matrix of the L2-normalized batch, softmax runs over each row
(each anchor's distribution over the batch), the target side is detached (the heads teach, they do not learn to
agree), and KL is summed over the row's entries and averaged over the rows, times T². Optionally the trunk's pooled
features are a further, fixed-width teacher (`feature_distillation`). The target heads are training-only modules of
this method, not of the network, so retrieval cost and the saved embedder do not change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt
from torch import nn

from unseen.config import Section
from unseen.losses.factory import build_loss, full_precision
from unseen.methods.base import Batch, LossOutput, Method, MethodContext


def similarity_distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · mean over anchors i of KL(softmax(S_teacher[i]/T) ‖ softmax(S_student[i]/T)), with S = x xᵀ of the
    L2-normalized rows; the teacher is detached. In fp32 (fp64 for float64 inputs) with autocast off: under autocast
    the similarity matmuls would run in bf16."""
    dtype = full_precision(torch.promote_types(student.dtype, teacher.dtype))
    with torch.autocast(student.device.type, enabled=False):
        s = F.normalize(student.to(dtype), dim=-1)
        t = F.normalize(teacher.detach().to(dtype), dim=-1)
        log_student = F.log_softmax(s @ s.T / temperature, dim=-1)
        log_teacher = F.log_softmax(t @ t.T / temperature, dim=-1)
        return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * temperature**2


class S2SD(Method):
    name = "s2sd"

    class Params(Method.Params):
        target_dims: tuple[PositiveInt, ...] = Field(
            (512, 1024, 1536, 2048), min_length=1, description="widths of the auxiliary target embeddings")
        target_hidden: bool = Field(
            True, description="each target head is Linear → ReLU → Linear (true) or one Linear (false)")
        distillation_weight: NonNegativeFloat = Field(50.0, description="ω of each similarity distillation")
        temperature: PositiveFloat = Field(1.0, description="T of the row softmax")
        feature_distillation: bool = Field(False, description="also distill from the pooled trunk features")
        feature_distillation_weight: NonNegativeFloat = Field(50.0, description="ω of the feature distillation")

    def __init__(self, params: Mapping[str, Any] | Section, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        p = self.params
        width = ctx.output_dims.get("fused", ctx.output_dims.get("features", ctx.embedding_dim))
        # Built under a forked RNG, so the network and the data order stay the baseline's.
        with torch.random.fork_rng(devices=[]):
            self.targets = nn.ModuleList(
                nn.Sequential(nn.Linear(width, dim), nn.ReLU(), nn.Linear(dim, dim)) if p.target_hidden
                else nn.Linear(width, dim)
                for dim in p.target_dims)
            self.target_losses = nn.ModuleList(
                build_loss(ctx.loss.name, ctx.loss.kwargs, num_classes=ctx.num_classes, embedding_dim=dim)
                for dim in p.target_dims)

    def loss(self, out: dict[str, torch.Tensor], batch: Batch) -> LossOutput:
        p = self.params
        student = out["class"]
        base = self.base_objective(student, batch.labels)
        parts: dict[str, torch.Tensor | float] = {"base": base.detach()}
        total = base
        for k, (head, target_loss) in enumerate(zip(self.targets, self.target_losses, strict=True)):
            # the head may run in bf16 under autocast; its embedding is normalized (no matmul: fp32 also under
            # autocast) and scored in fp32
            hidden = head(out["fused"])
            target = F.normalize(hidden.to(full_precision(hidden.dtype)), dim=-1)
            term = self.base_objective(target, batch.labels, target_loss)
            distillation = similarity_distillation(student, target, p.temperature)
            total = total + term + p.distillation_weight * distillation
            parts[f"target{k}"] = term.detach()
            parts[f"distillation{k}"] = distillation.detach()
        if p.feature_distillation:
            features = similarity_distillation(student, out["features"], p.temperature)
            total = total + p.feature_distillation_weight * features
            parts["feature_distillation"] = features.detach()
        return LossOutput(total, parts)
