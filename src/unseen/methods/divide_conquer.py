"""Divide and Conquer the Embedding Space (Sanakoyeu et al., CVPR 2019), as the authors' code trains it, in steps.

The training set is split into K clusters (faiss k-means on the trunk's L2-normalized pooled features) and the
class embedding into K slices ("learners"), slice c = dimensions [c·D/K, (c+1)·D/K), each L2-normalized on its
own. Batches come from per-cluster class-balanced streams taken round-robin; a batch from cluster c is scored by
the base loss on slice c only (re-normalized), so only slice c's rows of the embedding layer and the shared trunk
learn from it. The phases, in optimizer steps (an integer, or a share of the budget):

- `warmup`: the whole embedding trains on the default class-balanced stream first, so that the first clustering
  sees learned features (the code starts from ImageNet weights; clustering a random network is noise);
- divided, from the first re-clustering point at or after `warmup`: the data is clustered again every
  `recluster_every` steps and the new clusters are matched to the old by the Hungarian algorithm;
- from `full_embedding_from`, the loss is on the whole embedding (batches still per cluster: the code's hidden
  phase at 8/19 of its fine-tune epoch);
- from `finetune_from` ("conquer"), one class-balanced stream over all data, loss on the whole embedding.

A plan is one re-clustering period, so every clustering happens at a plan's start.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt

from unseen.config import Section, Steps
from unseen.data.samplers import BatchPlan, ClassBalancedBatchSampler
from unseen.errors import ConfigError
from unseen.losses.factory import build_loss, full_precision
from unseen.methods.base import Batch, LossOutput, Method, MethodContext
from unseen.methods.clustering import ClusteredRows, derive_seed
from unseen.models.spec import ModelSpec


class DivideAndConquer(ClusteredRows, Method):
    name = "divide_conquer"

    class Params(Method.Params):
        num_clusters: PositiveInt = Field(8, description="K: clusters of the data = slices of the embedding")
        warmup: Steps = Field(0, description="steps of the whole embedding on all data before the first clustering")
        recluster_every: Steps | None = Field(
            None, description="steps between clusterings; null: two passes over the training images (the code's "
            "2 epochs)")
        full_embedding_from: Steps | None = Field(
            None, description="step from which the loss is on the whole embedding (batches still per cluster)")
        finetune_from: Steps | None = Field(
            None, description="step from which one stream over all data trains the whole embedding (conquer)")
        cluster_on: Literal["penultimate", "embedding"] = Field(
            "penultimate", description="cluster the pooled trunk features (the code) or the class embedding")
        kmeans_iterations: PositiveInt = 100
        kmeans_redo: PositiveInt = Field(5, description="k-means runs; the one of lowest objective is kept")

    @classmethod
    def configure_model(cls, params: DivideAndConquer.Params, spec: ModelSpec) -> ModelSpec:
        if spec.embedding_dim % params.num_clusters:
            raise ConfigError(f"method.num_clusters: {params.num_clusters} does not divide model.embedding_dim "
                              f"{spec.embedding_dim} into equal slices")
        return spec.model_copy(update={"class_slices": params.num_clusters})

    def __init__(self, params: Mapping[str, Any] | Section, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        p = self.params
        self.slice_dim = ctx.embedding_dim // p.num_clusters
        if not any(isinstance(v, float) for v in (p.full_embedding_from, p.finetune_from)):
            self.full_embedding_step  # noqa: B018 - phases in steps are checked now, fractions once the budget is known
        # One criterion per learner, on D/K dimensions (the code keeps one per cluster; proxy losses need the
        # slice's size). Built under a forked RNG so that the data order stays the baseline's.
        with torch.random.fork_rng(devices=[]):
            self.slice_losses = torch.nn.ModuleList(
                build_loss(ctx.loss.name, ctx.loss.kwargs, num_classes=ctx.num_classes, embedding_dim=self.slice_dim)
                for _ in range(p.num_clusters if p.num_clusters > 1 else 0)
            )

    @property
    def warmup_step(self) -> int:
        return self.ctx.steps(self.params.warmup)

    @property
    def finetune_step(self) -> int:
        """The first conquer step (never, when there is none)."""
        p = self.params
        return sys.maxsize if p.finetune_from is None else self.ctx.steps(p.finetune_from)

    @property
    def full_embedding_step(self) -> int:
        p = self.params
        step = self.finetune_step if p.full_embedding_from is None else self.ctx.steps(p.full_embedding_from)
        if step > self.finetune_step:
            raise ConfigError(f"method.full_embedding_from ({step} steps) is after method.finetune_from "
                              f"({self.finetune_step} steps)")
        return step

    # -- phases ------------------------------------------------------------------------------------
    def steps_per_epoch(self) -> int:
        """One plan per re-clustering period. (The trainer asks once the budget is known, so the phases are checked
        here, before any step.)"""
        self.full_embedding_step  # noqa: B018 - raises a ConfigError for phases in the wrong order
        p = self.params
        if p.recluster_every is not None:
            return max(1, self.ctx.steps(p.recluster_every))
        s = self.ctx.sampler
        return max(1, round(2 * len(self.ctx.table) / (s.classes_per_batch * s.samples_per_class)))

    def divided(self, step: int) -> bool:
        """Is the plan that starts at `step` drawn per cluster? From the first plan at or after the warm-up until
        the conquer phase."""
        return self.params.num_clusters > 1 and self.warmup_step <= step < self.finetune_step

    def phase(self, step: int) -> str:
        if self.params.num_clusters == 1 or step >= self.finetune_step:
            return "conquer" if self.params.num_clusters > 1 else "train"
        if self.assignment is None or step < self.warmup_step:
            return "warmup"
        return "divided" if step < self.full_embedding_step else "full_embedding"

    # -- plans -------------------------------------------------------------------------------------
    def plan(self, epoch: int) -> BatchPlan:
        """The period's batches: per-cluster streams dealt round-robin while divided (the data clustered first),
        the default class-balanced stream before the warm-up ends and once conquer begins."""
        start, length = self.ctx.step, self.steps_per_epoch()
        if not self.divided(start):
            return self.sampler().stream(start, length)
        self.cluster(epoch)
        divided = min(length, self.finetune_step - start)
        plan = self.cluster_plan(epoch, divided)
        if divided < length:  # conquer starts inside this period
            rest = self.sampler().stream(start + divided, length - divided)
            plan = BatchPlan(plan.indices + rest.indices, plan.seeds + rest.seeds,
                             plan.streams + ["class"] * len(rest))
        return plan

    def cluster(self, epoch: int) -> None:
        """Cluster the training set for `epoch` (once: a resumed run keeps the checkpointed clusters)."""
        if self.clustered_epoch == epoch and self.assignment is not None:
            return
        p = self.params
        started = time.perf_counter()
        vectors = self.ctx.embed_train("features" if p.cluster_on == "penultimate" else "class")
        if p.cluster_on == "penultimate":  # the code clusters the L2-normalized pooled features
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        self.recluster(vectors, p.num_clusters, seed=derive_seed(self.ctx.seed, epoch), iterations=p.kmeans_iterations,
                       redo=p.kmeans_redo, started=started, labels=self.ctx.table.labels)
        self.clustered_epoch, self.clustered_step = epoch, self.ctx.step

    def cluster_plan(self, epoch: int, length: int) -> BatchPlan:
        """`length` batches dealt round-robin to the clusters' class-balanced streams.

        Per cluster, classes with fewer than 2 images there are left out. A cluster with fewer classes than P
        gives batches of all of its C classes with ⌊P·K / C⌋ images each (repeats where a class has fewer), so
        every batch stays a class-balanced batch of about P×K images; a cluster with fewer than 2 classes sits
        the period out."""
        train, s = self.ctx.table, self.ctx.sampler
        assert self.assignment is not None
        if len(self.assignment) != len(train):
            raise ValueError(f"divide_conquer: clustered {len(self.assignment)} rows, the table has {len(train)}")
        minimum = s.samples_per_class if s.small_classes == "drop" else 2
        samplers: dict[int, tuple[np.ndarray, ClassBalancedBatchSampler]] = {}
        for c in range(self.params.num_clusters):
            rows = np.flatnonzero(self.assignment == c)
            _, counts = np.unique(train.labels[rows], return_counts=True)
            eligible = int((counts >= minimum).sum())
            if eligible < 2:
                continue
            classes = min(s.classes_per_batch, eligible)
            per_class = max(s.samples_per_class, (s.classes_per_batch * s.samples_per_class) // classes)
            small = s.small_classes if per_class == s.samples_per_class else "repeat"
            labels = train.labels[rows]
            if small == "repeat" and minimum > 2:  # keep exactly the classes `drop` made eligible
                keep = np.isin(labels, np.unique(labels)[counts >= minimum])
                rows, labels = rows[keep], labels[keep]
            samplers[c] = rows, ClassBalancedBatchSampler(labels, classes, per_class,
                                                          seed=derive_seed(self.ctx.seed, epoch, c),
                                                          small_classes=small)
        if not samplers:
            raise ConfigError(f"method.num_clusters={self.params.num_clusters}: no cluster holds 2 classes with "
                              f"{minimum}+ images; use fewer clusters")
        active = sorted(samplers)
        streams = {c: cluster_stream(*samplers[c], length=len(range(i, length, len(active))))
                   for i, c in enumerate(active)}
        turns = [(active[b % len(active)], b // len(active)) for b in range(length)]
        return BatchPlan([streams[c].indices[j] for c, j in turns], [streams[c].seeds[j] for c, j in turns],
                         ["cluster"] * length)

    # -- loss --------------------------------------------------------------------------------------
    def cluster_of(self, rows: torch.Tensor) -> int:
        """The one cluster that all `rows` of a batch belong to."""
        if self.assignment is None:
            raise RuntimeError("divide_conquer: a cluster batch before the training set was clustered")
        clusters = np.unique(self.assignment[rows.cpu().numpy()])
        if len(clusters) != 1:
            raise RuntimeError(f"divide_conquer: a batch mixes clusters {clusters.tolist()}")
        return int(clusters[0])

    def loss(self, out: dict[str, torch.Tensor], batch: Batch) -> LossOutput:
        parts = self.clustering_report()
        if batch.stream == "cluster" and self.ctx.step < self.full_embedding_step:
            c = self.cluster_of(batch.rows)
            piece = out["class"][:, c * self.slice_dim : (c + 1) * self.slice_dim]
            piece = F.normalize(piece.to(full_precision(piece.dtype)), dim=-1)  # no matmul: fp32 also under autocast
            total = self.base_objective(piece, batch.labels, self.slice_losses[c])
        else:
            total = self.base_objective(out["class"], batch.labels)
        return LossOutput(total, {"base": total.detach(), **parts})


def cluster_stream(rows: np.ndarray, sampler: ClassBalancedBatchSampler, length: int) -> BatchPlan:
    """`length` batches of one cluster (table rows): the cluster sampler's epochs 0, 1, ... back to back."""
    plan = sampler.stream(0, length)
    return BatchPlan([rows[i] for i in plan.indices], plan.seeds)
