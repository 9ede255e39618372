"""Class-adversarial DML (Al-Kaabi, Monsefi & Zabihzadeh 2021); no public code, our design (../shared/METHODS.md §2.3).

total = L_base(e) + CE(adversary(GRL_λ(e)), y), e the class embedding, y the batch's training-class labels. The
adversary, an MLP d → hidden → ReLU → C_train, minimizes its cross-entropy; the gradient reversal GRL_λ (identity
forward, −λ·gradient backward) makes the embedder maximize it, i.e. push e toward class-invariant features that
keep the concepts shared by all classes. λ is constant or follows the DANN ramp λ_max·(2/(1 + exp(−10p)) − 1)
over the training progress p. The paper's other component, attention-pooled intermediate features, is part of the
model (`model.taps`, `model.attention`, see models/embedder.py), so evaluation embeds with the model alone.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from unseen.config import Config
from unseen.losses.grl import GradientReversal, dann_schedule
from unseen.methods.base import Batch, LossOutput, Method


class ClassAdversarial(Method):
    name = "class_adversarial"

    class Params(Method.Params):
        adversary: bool = Field(True, description="the class adversary on; false: the base loss alone (ablation)")
        adversary_weight: float = Field(
            1.0, ge=0, description="λ_max: scale of the reversed gradient (the adversary's own loss is unweighted)"
        )
        schedule: Literal["constant", "dann"] = Field(
            "dann", description="λ constant at adversary_weight, or the DANN ramp from 0 to it over the training"
        )
        hidden_dim: PositiveInt = Field(512, description="width of the adversary's hidden layer")
        adversary_lr: PositiveFloat | None = Field(None, description="the adversary's learning rate; default: lr")

    def __init__(self, config: Config, *, num_classes: int, embedding_dim: int) -> None:
        super().__init__(config, num_classes=num_classes, embedding_dim=embedding_dim)
        p = self.params
        self.reversal = GradientReversal(self.reversal_scale(0.0))
        self.adversary: nn.Module | None = None
        if p.adversary:
            # Built under a forked RNG, so the embedder (built after the method) starts as the baseline's.
            with torch.random.fork_rng(devices=[]):
                self.adversary = nn.Sequential(
                    nn.Linear(embedding_dim, p.hidden_dim), nn.ReLU(inplace=True), nn.Linear(p.hidden_dim, num_classes)
                )

    def reversal_scale(self, progress: float) -> float:
        """λ at training progress p ∈ [0, 1]."""
        p = self.params
        return p.adversary_weight if p.schedule == "constant" else dann_schedule(progress, p.adversary_weight)

    def on_step(self, step: int, total_steps: int) -> None:
        self.reversal.scale = self.reversal_scale(step / max(total_steps, 1))

    def loss(self, out: dict[str, torch.Tensor], batch: Batch) -> LossOutput:
        embeddings = out["class"]
        base = self.base_objective(embeddings, batch.labels)
        if self.adversary is None:
            return LossOutput(base, {"base": float(base.detach())})
        logits = self.adversary(self.reversal(embeddings))  # cross-entropy runs in fp32 under autocast
        adversary = F.cross_entropy(logits, batch.labels)
        accuracy = (logits.detach().argmax(dim=1) == batch.labels).float().mean()
        parts = {"base": float(base.detach()), "adversary": float(adversary.detach()),
                 "adversary_accuracy": float(accuracy), "lambda": self.reversal.scale}
        return LossOutput(base + adversary, parts)

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """The base loss's parameters (proxies, margins) as for every method, and the adversary in its own group
        (`adversary_lr`, the optimizer's weight decay)."""
        if self.adversary is None:
            return super().param_groups(lr, weight_decay)
        own = {id(p) for p in self.adversary.parameters()}
        others = [p for p in self.parameters() if p.requires_grad and id(p) not in own]
        groups = [{"name": "method", "params": others, "lr": lr, "weight_decay": 0.0}] if others else []
        return [*groups, {"name": "adversary", "params": list(self.adversary.parameters()),
                          "lr": self.params.adversary_lr or lr, "weight_decay": weight_decay}]
