"""The method contract: what a generalization method may decide, on top of the base metric loss.

A method owns the batch stream, its extra heads and modules, the per-epoch work (re-clustering...),
and the loss. The config's `loss:` and `miner:` sections are its base objective, so every method
runs over any conventional loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn

from unseen.config import Config, Section, describe_validation_error
from unseen.data.base import Table
from unseen.data.samplers import BatchPlan, ClassBalancedBatchSampler
from unseen.errors import ConfigError
from unseen.losses.factory import build_loss, build_miner

if TYPE_CHECKING:
    from unseen.models.embedder import Embedder


@dataclass
class Batch:
    """A training batch: images, labels, the rows of the train table they come from, and the stream (task)
    of the method's batch plan it belongs to ("class" unless the method interleaves auxiliary batches)."""

    images: torch.Tensor
    labels: torch.Tensor
    rows: torch.Tensor
    stream: str = "class"


@dataclass
class LossOutput:
    """The loss to minimize and its named parts (floats, for history.jsonl and the progress bar)."""

    total: torch.Tensor
    parts: dict[str, float] = field(default_factory=dict)


@dataclass
class EpochContext:
    """What a method sees at the start of an epoch; `embed(output)` embeds the whole train table with the
    eval transform and returns the named output (`features`, `class`, ...) as an N×D array."""

    epoch: int
    train: Table
    seed: int
    embed: Callable[[str], np.ndarray]


class Method(nn.Module):
    """Base class; `Params` validates the `method:` section's keys (none for the baseline)."""

    name: ClassVar[str]

    class Params(Section):
        pass

    def __init__(self, config: Config, *, num_classes: int, embedding_dim: int) -> None:
        super().__init__()
        self.params = self.parse_params(config.method.kwargs)
        self.config = config
        self.base_loss = build_loss(config.loss.name, config.loss.kwargs, num_classes=num_classes,
                                    embedding_dim=embedding_dim)
        self.miner = build_miner(config.miner.name, config.miner.kwargs)
        self._sampler: ClassBalancedBatchSampler | None = None

    @classmethod
    def parse_params(cls, kwargs: dict[str, Any]) -> Section:
        try:
            return cls.Params.model_validate(kwargs)
        except ValidationError as error:
            raise ConfigError(f"method ({cls.name}): {describe_validation_error(error, cls.Params)}") from None

    def extra_heads(self) -> dict[str, int]:
        """Extra embedding heads on the trunk, name -> dimension."""
        return {}

    def attach(self, model: Embedder) -> None:
        """Called once the embedder is built and placed, before the optimizer exists: a method that reuses the
        embedder's layers keeps references here (ECAML: the metric layer W, b). Nothing by default."""

    def class_slices(self) -> int:
        """Number of separately normalized slices of the class embedding (Divide and Conquer's learners)."""
        return 1

    def sampler(self, train: Table) -> ClassBalancedBatchSampler:
        if self._sampler is None:
            s = self.config.sampler
            self._sampler = ClassBalancedBatchSampler(
                train.labels, s.classes_per_batch, s.samples_per_class, seed=self.config.train.seed,
                small_classes=s.small_classes,
            )
        return self._sampler

    def batches(self, train: Table, epoch: int) -> BatchPlan:
        """The batches of `epoch` (default: class-balanced P×K); a pure function of the seed and the epoch."""
        return self.sampler(train).epoch(epoch)

    def on_epoch_start(self, ctx: EpochContext) -> None:
        """Per-epoch work such as re-clustering; nothing by default."""

    def on_step(self, step: int, total_steps: int) -> None:
        """Called before each optimizer step (0-based `step` of `total_steps`): schedules such as the DANN
        ramp of an adversary's λ; nothing by default."""

    def base_objective(
        self, embeddings: torch.Tensor, labels: torch.Tensor, loss: nn.Module | None = None
    ) -> torch.Tensor:
        """The configured metric loss (or another instance of it, e.g. one per D&C learner) on `embeddings`,
        mined by the configured miner, in fp32."""
        embeddings = embeddings.float()
        tuples = self.miner(embeddings, labels) if self.miner is not None else None
        return (loss or self.base_loss)(embeddings, labels, tuples)

    def loss(self, out: dict[str, torch.Tensor], batch: Batch) -> LossOutput:
        raise NotImplementedError

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """The method's own parameters (the loss's proxies or margins, adversaries...) as optimizer groups."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"name": "method", "params": params, "lr": lr, "weight_decay": 0.0}] if params else []
