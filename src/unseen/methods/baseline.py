"""The plain base loss: the configured metric loss on the class embedding, nothing else."""

from __future__ import annotations

import torch

from unseen.methods.base import Batch, LossOutput, Method


class Baseline(Method):
    name = "baseline"

    def loss(self, out: dict[str, torch.Tensor], batch: Batch) -> LossOutput:
        total = self.base_objective(out["class"], batch.labels)
        return LossOutput(total, {"base": float(total.detach())})
