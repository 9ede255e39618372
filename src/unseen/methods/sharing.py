"""MIC (Roth, Brattoli, Ommer, ICCV 2019) and Sharing Matters (Milbich*, Roth*, Brattoli, Ommer, TPAMI 2020), as the
authors' code trains them.

Next to the class embedding, a second head on the same trunk (`shared`) learns characteristics shared across
classes (pose, stroke style, background...) from an auxiliary task, and an adversarial projection decorrelates the
two embeddings (`losses/decorrelation.py`), so the class embedding gains complementary, transferable information.
Only the class embedding is used at test time. An epoch interleaves class steps (the configured loss on the class
embedding, P×K class-balanced batches) with shared steps (the configured loss on the shared embedding, P groups ×
K images), one optimizer step each, both with `decorrelation_weight` × the decorrelation loss:

- `variant: mic`: a group is a surrogate class, a cluster of early-layer features with each class's mean removed
  (faiss k-means, K = `num_shared_clusters`), re-clustered on the shared embedding every `recluster_every`
  steps (at the next plan);
- `variant: sharing`: a group is K random images; the triplets pull an anchor to its group mates (mostly other
  classes) and push it from distance-weighted negatives of other groups and classes (`methods/surrogate.py`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt

from unseen.config import Section, Steps
from unseen.data.samplers import SEED_SPACE, BatchPlan
from unseen.errors import ConfigError
from unseen.losses.decorrelation import Decorrelation
from unseen.losses.factory import build_loss
from unseen.methods.base import Batch, LossOutput, Method, MethodContext
from unseen.methods.clustering import ClusteredRows, derive_seed
from unseen.methods.surrogate import (
    group_labels,
    random_group_batches,
    shared_feature_triplets,
    subtract_class_means,
    surrogate_batches,
)
from unseen.models.network import EmbeddingModel
from unseen.models.spec import ModelSpec

# Keys that only MIC's clustering uses; setting one under `variant: sharing` is an error.
MIC_KEYS = frozenset({"num_shared_clusters", "recluster_every", "random_cluster_p", "cluster_tap",
                      "kmeans_iterations", "kmeans_redo"})
# Probability of a shared step per iteration when `shared_task_p` is not set (MIC's CUB/Cars runs; Sharing's code).
SHARED_TASK_P = {"mic": 0.8, "sharing": 1.0}
SCHEDULE_STREAM, AUXILIARY_STREAM = 1, 2  # seed-sequence tags of the epoch's random draws


class Sharing(ClusteredRows, Method):
    name = "sharing"

    class Params(Method.Params):
        variant: Literal["mic", "sharing"] = Field(
            "mic", description="mic: surrogate labels by clustering; sharing: random groups, Sharing-Matters triplets")
        shared_dim: PositiveInt = Field(128, description="dimension of the shared embedding (both papers: 128)")
        decorrelation_weight: float = Field(500.0, ge=0, description="γ of the decorrelation (code: adv_weights, disw)")
        projection_hidden_dim: PositiveInt = Field(512, description="hidden width of the projection R")
        projection_lr: PositiveFloat | None = Field(
            None, description="lr of R; null: projection_lr_multiplier × optimizer.lr")
        projection_lr_multiplier: PositiveFloat = Field(
            50.0, description="lr of R relative to the network's when projection_lr is null (the authors' code: 50×)")
        projection_weight_decay: float = Field(1e-6, ge=0, description="weight decay of R (code: 1e-6)")
        class_task_p: float = Field(1.0, ge=0, le=1, description="fraction of iterations with a class step")
        shared_task_p: float | None = Field(
            None, ge=0, le=1, description="fraction of iterations with a shared step; null: 0.8 (mic), 1.0 (sharing)")
        num_shared_clusters: PositiveInt = Field(30, description="mic: surrogate classes (k-means K)")
        recluster_every: Steps | None = Field(
            None, description="mic: optimizer steps between clusterings of the shared embedding; null: four passes of "
            "the class task over the training images (the code's every 4th epoch)")
        random_cluster_p: float = Field(0.2, ge=0, le=1, description="mic: share of aux images from another cluster")
        cluster_tap: NonNegativeInt = Field(
            0, description="mic: intermediate map of the first clustering (0: ConvNet block0; 1: ResNet layer1)")
        kmeans_iterations: PositiveInt = Field(20, description="mic: Lloyd iterations (code: 20)")
        kmeans_redo: PositiveInt = Field(1, description="mic: k-means runs, the best kept (code: 1)")

    @classmethod
    def configure_model(cls, params: Sharing.Params, spec: ModelSpec) -> ModelSpec:
        return spec.model_copy(update={"extra_heads": {**spec.extra_heads, "shared": params.shared_dim}})

    def __init__(self, params: Mapping[str, Any] | Section, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        p = self.params
        if p.variant == "sharing" and (misplaced := sorted(MIC_KEYS & p.model_fields_set)):
            raise ConfigError(f"method.{misplaced[0]}: only for variant 'mic' (variant 'sharing' does not cluster)")
        if p.class_task_p + self.shared_task_p == 0:
            raise ConfigError("method.class_task_p and method.shared_task_p are both 0: an epoch would have no steps")
        surrogate_classes = p.num_shared_clusters if p.variant == "mic" else ctx.sampler.classes_per_batch
        # Built under a forked RNG so that the data order stays the baseline's.
        with torch.random.fork_rng(devices=[]):
            self.decorrelation = Decorrelation(p.shared_dim, ctx.embedding_dim, p.projection_hidden_dim)
            self.shared_loss = build_loss(ctx.loss.name, ctx.loss.kwargs, num_classes=surrogate_classes,
                                          embedding_dim=p.shared_dim)

    @property
    def shared_task_p(self) -> float:
        p = self.params
        return SHARED_TASK_P[p.variant] if p.shared_task_p is None else p.shared_task_p

    def param_groups(self, model: EmbeddingModel, lr: float, weight_decay: float) -> list[dict]:
        """The losses' own parameters (`optimizer.loss_lr`, no weight decay) and the projection R (`projection_lr`,
        else `projection_lr_multiplier` × lr; `projection_weight_decay`)."""
        p = self.params
        return [*self.own_groups(lr, weight_decay, exclude=self.decorrelation),
                {"name": "projection", "params": list(self.decorrelation.parameters()),
                 "lr": p.projection_lr or p.projection_lr_multiplier * lr,
                 "weight_decay": p.projection_weight_decay}]

    # -- schedule ----------------------------------------------------------------------------------
    def iterations_per_epoch(self) -> int:
        """Iterations of a plan: one class-balanced pass over the classes, ceil(C / P)."""
        return len(self.sampler())

    def steps_per_epoch(self) -> int:
        """Optimizer steps of a plan: round(p·iterations) class steps plus round(p'·iterations) shared steps."""
        iterations = self.iterations_per_epoch()
        return sum(round(q * iterations) for q in (self.params.class_task_p, self.shared_task_p))

    def recluster_interval(self) -> int:
        p, s = self.params, self.ctx.sampler
        if p.recluster_every is not None:
            return self.ctx.steps(p.recluster_every)
        iterations_per_pass = len(self.ctx.table) / (s.classes_per_batch * s.samples_per_class)
        return round(4 * iterations_per_pass * (p.class_task_p + self.shared_task_p))

    def phase(self, step: int) -> str:
        return self.params.variant

    # -- surrogate labels (MIC) --------------------------------------------------------------------
    def cluster(self, epoch: int) -> None:
        """MIC: cluster class-normalized early-layer features before the first plan, the shared embedding at the
        first plan at least `recluster_every` steps after the last clustering (new ids matched to the old)."""
        p, ctx = self.params, self.ctx
        current = self.assignment is not None and len(self.assignment) == len(ctx.table)
        if p.variant != "mic" or self.clustered_epoch == epoch and current:
            return
        if current and ctx.step - (self.clustered_step or 0) < self.recluster_interval():
            return
        started = time.perf_counter()
        if current:
            vectors = ctx.embed_train("shared")  # unit norm, no class normalization (the code)
        else:
            try:
                features = ctx.embed_train(f"tap:{p.cluster_tap}")
            except ConfigError as error:
                raise ConfigError(f"method.cluster_tap: {error}") from None
            features = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
            vectors = subtract_class_means(features, ctx.table.labels)
        self.recluster(vectors, p.num_shared_clusters, seed=derive_seed(ctx.seed, epoch),
                       iterations=p.kmeans_iterations, redo=p.kmeans_redo, started=started, labels=ctx.table.labels)
        self.clustered_epoch, self.clustered_step = epoch, ctx.step

    # -- batches -----------------------------------------------------------------------------------
    def plan(self, epoch: int) -> BatchPlan:
        """Iteration i of the class-balanced pass gives a class step (its class batch i), then a shared step;
        round(p·iterations) iterations of each task, chosen at random, do. Which ones is a pure function of
        (train.seed, epoch); the shared batches are surrogate groups (MIC, clustered first when due) or random
        groups (Sharing)."""
        self.cluster(epoch)
        p, s, train = self.params, self.ctx.sampler, self.ctx.table
        classes = self.sampler().epoch(epoch)
        steps = task_steps(self.iterations_per_epoch(), (p.class_task_p, self.shared_task_p),
                           self.ctx.rng(epoch, SCHEDULE_STREAM))
        count = sum(task == "shared" for task, _ in steps)
        rng = self.ctx.rng(epoch, AUXILIARY_STREAM)
        if p.variant == "mic":
            if len(self.assignment) != len(train):
                raise ValueError(f"sharing: clustered {len(self.assignment)} rows, asked for batches of {len(train)}")
            shared = surrogate_batches(self.assignment, s.classes_per_batch, s.samples_per_class, count,
                                       p.random_cluster_p, rng)
        else:
            shared = random_group_batches(len(train), s.classes_per_batch, s.samples_per_class, count, rng)
        shared_seeds = list(rng.integers(0, SEED_SPACE, size=(count, s.classes_per_batch * s.samples_per_class)))
        indices, seeds, streams, taken = [], [], [], 0
        for task, i in steps:
            if task == "class":
                indices.append(classes.indices[i])
                seeds.append(classes.seeds[i])
            else:
                indices.append(shared[taken])
                seeds.append(shared_seeds[taken])
                taken += 1
            streams.append(task)
        return BatchPlan(indices, seeds, streams)

    # -- loss --------------------------------------------------------------------------------------
    def loss(self, out: dict[str, torch.Tensor], batch: Batch) -> LossOutput:
        """The batch's task loss + decorrelation_weight × the decorrelation of the two embeddings."""
        parts = self.clustering_report()
        if batch.stream == "class":
            name, task = "base", self.base_objective(out["class"], batch.labels)
        elif batch.stream == "shared":
            name, task = "shared", self.shared_objective(out["shared"], batch)
        else:
            raise ValueError(f"sharing: unknown batch stream {batch.stream!r} (expected 'class' or 'shared')")
        decorrelation = self.decorrelation(out["class"], out["shared"])
        total = task + self.params.decorrelation_weight * decorrelation
        return LossOutput(total, {name: task.detach(), "decorrelation": decorrelation.detach(), **parts})

    def shared_objective(self, embeddings: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The shared task's instance of the configured loss on a batch of P groups × K images: MIC with the
        configured miner on surrogate labels; Sharing with its own triplets (group id = position of the group)."""
        rows = batch.rows.cpu().numpy()
        size = self.ctx.sampler.samples_per_class
        if self.params.variant == "mic":
            if self.assignment is None:
                raise RuntimeError("sharing (mic): a shared batch before the training set was clustered")
            labels = torch.from_numpy(group_labels(self.assignment, rows, size)).to(embeddings.device)
            return self.base_objective(embeddings, labels, self.shared_loss)
        groups = torch.arange(len(rows), device=embeddings.device) // size
        rng = np.random.default_rng([self.ctx.seed, *rows.tolist()])  # reproducible, leaves the global RNG

        def mine(vectors: torch.Tensor, group: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return shared_feature_triplets(vectors, group, batch.labels, rng)

        return self.base_objective(embeddings, groups, self.shared_loss, mine=mine)


def task_steps(iterations: int, probabilities: tuple[float, float], rng: np.random.Generator) -> list[tuple[str, int]]:
    """The epoch's optimizer steps as (task, iteration), in order: at iteration i the class step, then the shared
    step, for round(p·iterations) iterations of each task drawn without replacement (a fixed count, so every epoch
    has the same length; MIC's code flips a coin per iteration)."""
    chosen = [set(rng.choice(iterations, size=round(p * iterations), replace=False).tolist()) for p in probabilities]
    return [(task, i) for i in range(iterations) for task, members in zip(("class", "shared"), chosen, strict=True)
            if i in members]
