"""The method contract: what a generalization method may decide on top of the base metric loss, and what it sees.

A method sees a `MethodContext` (its slice of the config, the device, the sample table of its training classes,
seeded random streams, the step counter and a way to embed the training set), never the whole run config. It
declares four things and implements one:

- `configure_model(params, spec)`: what it needs of the network (extra heads, a sliced class embedding) or
  refuses one;
- `param_groups(model, lr, weight_decay)`: optimizer groups for its own modules, and learning-rate multipliers
  for layers of the network it owns the training of (ECAML's metric layer);
- `steps_per_epoch()` and `plan(epoch)`: its batch stream, in optimizer steps; an epoch is one plan, whose
  length the method fixes once; phases (D&C's conquer, MIC's alternation, re-clustering) are decided in steps,
  reading `ctx.step`, and a plan may do its own preparation (clustering) first;
- `objective(model, batch)`: the one training step's loss, forward pass included, so that mixed precision and
  DistributedDataParallel wrap one place for every method.

The config's `loss:` and `miner:` sections are the base objective (`base_objective`), so every method runs over
any conventional loss.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from pydantic import ValidationError
from pytorch_metric_learning.losses import BaseMetricLossFunction
from torch import nn

from unseen.config import LossConfig, MinerConfig, SamplerConfig, Section, describe_validation_error, resolve_steps
from unseen.data.base import Table
from unseen.data.samplers import BatchPlan, ClassBalancedBatchSampler
from unseen.errors import ConfigError
from unseen.losses.factory import build_loss, build_miner, metric_loss
from unseen.registry import Registry

if TYPE_CHECKING:
    from unseen.models.network import EmbeddingModel
    from unseen.models.spec import ModelSpec


METHODS: Registry[type[Method]] = Registry("method", key="method.name")


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
    """The loss to minimize and its named parts, for history.jsonl and the progress bar: detached 0-dim tensors
    (`value.detach()`, never `float(value)`: that would wait for the device once per part and step), or floats a
    method knows without the device (a schedule's λ, clustering statistics). The trainer reads them as floats
    only when it logs."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor | float] = field(default_factory=dict)


@dataclass
class MethodContext:
    """What a method sees of the run. `output_dims` gives the width of each named output of the network built
    for it; `step` is the number of optimizer steps taken so far (the trainer keeps it current: at `plan(epoch)`
    it is the epoch's first step, in `objective` the step being taken)."""

    loss: LossConfig
    miner: MinerConfig
    sampler: SamplerConfig
    num_classes: int
    embedding_dim: int
    seed: int = 0
    total_steps: int = 0  # 0 while unknown: a budget in epochs is known once the plan length is
    train: Table | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    embed: Callable[[str], np.ndarray] | None = None
    output_dims: dict[str, int] = field(default_factory=dict)
    loss_lr: float | None = None  # `optimizer.loss_lr`: the losses' own parameters' lr; None: the lr
    step: int = 0

    @property
    def table(self) -> Table:
        """The sample table of the training classes (a config check builds methods without one)."""
        if self.train is None:
            raise RuntimeError("this method needs its training table, but the context was built without data")
        return self.train

    def embed_train(self, output: str) -> np.ndarray:
        """The whole training table embedded with the eval transform: `features`, `class`, an extra head, or
        `tap:I` (the I-th intermediate map pooled to 4×4), as an N×D float32 array in table order."""
        if self.embed is None:
            raise RuntimeError("this method embeds its training set, but the context has no embedding function")
        return self.embed(output)

    def rng(self, *tags: int) -> np.random.Generator:
        """A generator that is a pure function of (train.seed, *tags): reproducible, resume included, and
        independent of the global random state that drives dropout and the augmentations."""
        return np.random.default_rng([self.seed, *tags])

    def steps(self, value: int | float) -> int:
        """A step count from a config value: an integer as is, a fraction of the budget rounded."""
        if not isinstance(value, int) and self.total_steps <= 0:
            raise ConfigError(f"a method setting of {value} (a share of the budget) needs the budget in steps: set "
                              "train.steps")
        return resolve_steps(value, self.total_steps)

    @property
    def progress(self) -> float:
        """Training progress p = step / total steps, in [0, 1]."""
        return min(1.0, self.step / max(self.total_steps, 1))


class Method(nn.Module):
    """Base class and the plain base loss; `Params` validates the `method:` section's keys. A subclass that sets
    `name` is registered under it (`METHODS`)."""

    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            METHODS.register(cls.name)(cls)

    class Params(Section):
        pass

    def __init__(self, params: Mapping[str, Any] | Section, ctx: MethodContext) -> None:
        super().__init__()
        self.params = self.parse_params(params)
        object.__setattr__(self, "ctx", ctx)  # shared with the trainer, not a submodule
        self.base_loss = build_loss(ctx.loss.name, ctx.loss.kwargs, num_classes=ctx.num_classes,
                                    embedding_dim=ctx.embedding_dim)
        self.miner = build_miner(ctx.miner.name, ctx.miner.kwargs)
        self._sampler: ClassBalancedBatchSampler | None = None

    ctx: MethodContext

    @classmethod
    def parse_params(cls, params: Mapping[str, Any] | Section) -> Section:
        """The `method:` section's keys (bar `name`) validated by `Params`; a bad key is one ConfigError line."""
        if isinstance(params, cls.Params):
            return params
        try:
            return cls.Params.model_validate(dict(params))
        except ValidationError as error:
            raise ConfigError(f"method ({cls.name}): {describe_validation_error(error, cls.Params)}") from None

    # -- declarations ------------------------------------------------------------------------------
    @classmethod
    def configure_model(cls, params: Any, spec: ModelSpec) -> ModelSpec:
        """The network this method trains, decided from its parsed `params` before the method is built (it then
        sees the network's output widths): `spec` with extra heads or slices (unchanged by default). Raise a
        ConfigError for a network the method cannot work with."""
        return spec

    def param_groups(self, model: EmbeddingModel, lr: float, weight_decay: float) -> list[dict]:
        """Optimizer groups of the method's own parameters: `losses` (the metric losses' proxies or margins, at
        `optimizer.loss_lr`, no weight decay) and `method` (its other modules, at lr with the weight decay). A
        method may add groups, also of parameters of `model`; those then leave the network's own groups."""
        return self.own_groups(lr, weight_decay)

    def own_groups(self, lr: float, weight_decay: float, exclude: nn.Module | None = None) -> list[dict]:
        """The `losses` and `method` groups of this module's parameters, leaving out those of `exclude`."""
        left_out = {id(p) for p in exclude.parameters()} if exclude is not None else set()
        losses, seen = [], set(left_out)
        for module in self.modules():
            if isinstance(module, BaseMetricLossFunction):
                for p in module.parameters():
                    if p.requires_grad and id(p) not in seen:
                        losses.append(p)
                        seen.add(id(p))
        others = [p for p in self.parameters() if p.requires_grad and id(p) not in seen]
        groups = [{"name": "losses", "params": losses, "lr": self.ctx.loss_lr or lr, "weight_decay": 0.0}]
        groups.append({"name": "method", "params": others, "lr": lr, "weight_decay": weight_decay})
        return [g for g in groups if g["params"]]

    def steps_per_epoch(self) -> int:
        """Optimizer steps in one plan (fixed for the run): by default one class-balanced pass, ceil(C / P)."""
        return len(self.sampler())

    def plan(self, epoch: int) -> BatchPlan:
        """The batches of `epoch` (default: class-balanced P×K): a pure function of the seed, the epoch and the
        method's checkpointed state, so a resumed run replays it."""
        return self.sampler().epoch(epoch)

    def phase(self, step: int) -> str:
        """The name of the method's phase at `step`, logged with the training losses."""
        return "train"

    # -- the step ----------------------------------------------------------------------------------
    def objective(self, model: EmbeddingModel, batch: Batch) -> LossOutput:
        """The loss of one training step on `batch`, forward pass included."""
        return self.loss(model(batch.images), batch)

    def loss(self, out: dict[str, torch.Tensor], batch: Batch) -> LossOutput:
        """The loss from the network's named outputs; the baseline: the base loss on the class embedding."""
        total = self.base_objective(out["class"], batch.labels)
        return LossOutput(total, {"base": total.detach()})

    # -- shared helpers ----------------------------------------------------------------------------
    def base_objective(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        loss: nn.Module | None = None,
        mine: Callable[[torch.Tensor, torch.Tensor], Any] | None = None,
    ) -> torch.Tensor:
        """The configured metric loss (or another instance of it, e.g. one per D&C learner) on `embeddings`, its
        pairs or triplets chosen by the configured miner, or by `mine(embeddings, labels)` (Sharing's triplets).
        Loss and miner run in fp32 (fp64 for float64 embeddings) with autocast off (`metric_loss`), also under
        train.precision=bf16. Every method's metric terms go through here."""
        return metric_loss(loss or self.base_loss, embeddings, labels, mine or self.miner)

    def sampler(self) -> ClassBalancedBatchSampler:
        """The class-balanced P×K sampler over the training table."""
        if self._sampler is None:
            s = self.ctx.sampler
            self._sampler = ClassBalancedBatchSampler(self.ctx.table.labels, s.classes_per_batch,
                                                      s.samples_per_class, seed=self.ctx.seed,
                                                      small_classes=s.small_classes)
        return self._sampler
