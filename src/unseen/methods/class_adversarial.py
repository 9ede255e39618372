"""Class-adversarial DML (Al-Kaabi, Monsefi & Zabihzadeh 2021); no public code, our design (docs/methods.md).

total = L_base(e) + CE(adversary(GRL_λ(h)), y): an MLP adversary, d_h → hidden → ReLU → C_train, learns to
predict the training class y from a representation h and minimizes its cross-entropy; the gradient reversal
GRL_λ (identity forward, −λ·gradient backward) makes the network maximize it, i.e. push h toward class-invariant
features that keep the concepts shared by all classes. λ is constant or follows the DANN ramp
λ_max·(2/(1 + exp(−10p)) − 1) over the training progress p.

Where h sits (`placement`) matters: the paper asks the *deep model* for class-invariant features while the
metric loss keeps the embedding discriminative, so by default (`features`) h is the general-feature branch: the
attention-pooled intermediate maps (with `model.taps`), else the trunk's pooled last map. `subspace` puts h on
the first `subspace_dim` dimensions of the class embedding only (those rows of the class layer, normalized on
their own); `embedding` on the whole retrieval embedding,
where the adversary fights the metric loss head-on (version 1 of this code; kept for the comparison). The
paper's other component, attention-pooled intermediate features, is part of the network (`model.taps`,
`model.attention`), so evaluation embeds with the network alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveFloat, PositiveInt, model_validator
from torch import nn

from unseen.config import Section
from unseen.errors import ConfigError
from unseen.losses.factory import full_precision
from unseen.losses.grl import GradientReversal, dann_schedule
from unseen.methods.base import Batch, LossOutput, Method, MethodContext
from unseen.models.network import EmbeddingModel


class ClassAdversarial(Method):
    name = "class_adversarial"

    class Params(Method.Params):
        adversary: bool = Field(True, description="the class adversary on; false: the base loss alone (ablation)")
        placement: Literal["features", "subspace", "embedding"] = Field(
            "features", description="what the adversary reads: the general-feature branch (pooled taps, else the "
            "pooled trunk features), the first subspace_dim dimensions of the embedding, or the whole embedding")
        subspace_dim: PositiveInt | None = Field(None, description="placement subspace: its width; default D/2")
        adversary_weight: float = Field(
            1.0, ge=0, description="λ_max: scale of the reversed gradient (the adversary's own loss is unweighted)"
        )
        schedule: Literal["constant", "dann"] = Field(
            "dann", description="λ constant at adversary_weight, or the DANN ramp from 0 to it over the training"
        )
        hidden_dim: PositiveInt = Field(512, description="width of the adversary's hidden layer")
        adversary_lr: PositiveFloat | None = Field(None, description="the adversary's learning rate; default: lr")

        @model_validator(mode="after")
        def _subspace_only_there(self) -> ClassAdversarial.Params:
            if self.subspace_dim is not None and self.placement != "subspace":
                raise ValueError("subspace_dim is only for placement 'subspace'")
            return self

    def __init__(self, params: Mapping[str, Any] | Section, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        p = self.params
        self.reversal = GradientReversal(self.reversal_scale(0.0))
        self.adversary: nn.Module | None = None
        if p.adversary:
            width = self.adversary_input_dim(ctx)
            # Built under a forked RNG, so the network (built before the method) and its data order stay the
            # baseline's whatever the adversary's size.
            with torch.random.fork_rng(devices=[]):
                self.adversary = nn.Sequential(
                    nn.Linear(width, p.hidden_dim), nn.ReLU(inplace=True), nn.Linear(p.hidden_dim, ctx.num_classes)
                )

    def adversary_input_dim(self, ctx: MethodContext) -> int:
        p, dims = self.params, ctx.output_dims
        if p.placement == "features":
            return dims.get("intermediate", dims.get("features", ctx.embedding_dim))
        if p.placement == "subspace":
            width = p.subspace_dim or ctx.embedding_dim // 2
            if not 0 < width < ctx.embedding_dim:
                raise ConfigError(f"method.subspace_dim: {width}, but it must leave part of the "
                                  f"{ctx.embedding_dim}-d embedding free of the adversary (1..{ctx.embedding_dim - 1})")
            return width
        return ctx.embedding_dim

    def objective(self, model: EmbeddingModel, batch: Batch) -> LossOutput:
        return self.loss(model(batch.images), batch, model.heads["class"].linear)

    def adversary_input(self, out: dict[str, torch.Tensor], class_layer: nn.Linear | None = None) -> torch.Tensor:
        """h: the general-feature branch, the sub-space, or the whole class embedding. The sub-space is its own
        rows of the class layer applied to the head's input and normalized alone, so that the adversary's gradient
        reaches those rows only (a slice of the whole normalized embedding would couple every dimension)."""
        p = self.params
        if p.placement == "features":
            return out.get("intermediate", out["features"])
        if p.placement == "subspace":
            if class_layer is None:
                raise ValueError("class_adversarial: placement 'subspace' needs the class layer (objective passes it)")
            width = self.adversary[0].in_features  # type: ignore[index]
            return F.normalize(F.linear(out["fused"], class_layer.weight[:width], class_layer.bias[:width]), dim=-1)
        return out["class"]

    def reversal_scale(self, progress: float) -> float:
        """λ at training progress p ∈ [0, 1]."""
        p = self.params
        return p.adversary_weight if p.schedule == "constant" else dann_schedule(progress, p.adversary_weight)

    def loss(self, out: dict[str, torch.Tensor], batch: Batch, class_layer: nn.Linear | None = None) -> LossOutput:
        """base + the adversary's cross-entropy behind the reversal; `class_layer`: the network's class-head
        linear layer (placement subspace only)."""
        base = self.base_objective(out["class"], batch.labels)
        if self.adversary is None:
            return LossOutput(base, {"base": base.detach()})
        self.reversal.scale = self.reversal_scale(self.ctx.progress)
        # The adversary (linear layers) may run in bf16 under autocast; its log-softmax / cross-entropy runs in fp32.
        logits = self.adversary(self.reversal(self.adversary_input(out, class_layer)))
        with torch.autocast(logits.device.type, enabled=False):
            logits = logits.to(full_precision(logits.dtype))
            adversary = F.cross_entropy(logits, batch.labels)
            accuracy = (logits.detach().argmax(dim=1) == batch.labels).float().mean()
        parts = {"base": base.detach(), "adversary": adversary.detach(), "adversary_accuracy": accuracy,
                 "lambda": self.reversal.scale}
        return LossOutput(base + adversary, parts)

    def param_groups(self, model: EmbeddingModel, lr: float, weight_decay: float) -> list[dict]:
        """The base loss's parameters (proxies, margins) as for every method, and the adversary in its own group
        (`adversary_lr`, the optimizer's weight decay)."""
        if self.adversary is None:
            return super().param_groups(model, lr, weight_decay)
        return [*self.own_groups(lr, weight_decay, exclude=self.adversary),
                {"name": "adversary", "params": list(self.adversary.parameters()),
                 "lr": self.params.adversary_lr or lr, "weight_decay": weight_decay}]
