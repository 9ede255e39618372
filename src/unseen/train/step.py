"""One training step as a module: the network and the method together, the one place that mixed precision and
DistributedDataParallel wrap (`train/distributed.py`) and the trainer calls (`train/trainer.py`)."""

from __future__ import annotations

from torch import nn

from unseen.methods import Batch, LossOutput
from unseen.methods.base import Method
from unseen.models.network import EmbeddingModel


class TrainingStep(nn.Module):
    """The network and the method as one module: `forward(batch)` is one step's loss, forward pass included, for
    every method."""

    def __init__(self, model: EmbeddingModel, method: Method) -> None:
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, batch: Batch) -> LossOutput:
        return self.method.objective(self.model, batch)
