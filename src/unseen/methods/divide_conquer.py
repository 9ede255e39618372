"""Divide and Conquer the Embedding Space (Sanakoyeu et al., CVPR 2019), as the authors' code trains it.

The training set is split into K clusters (faiss k-means on the trunk's L2-normalized pooled features)
and the class embedding into K slices ("learners"), slice c = dimensions [c·D/K, (c+1)·D/K), each
L2-normalized on its own. Batches come from per-cluster class-balanced streams taken round-robin; a batch
from cluster c is scored by the base loss on slice c only (re-normalized to unit norm), so only slice c's
rows of the embedding layer and the shared trunk learn from it. Every `recluster_every` epochs the data
is clustered again and the new clusters are matched to the old by the Hungarian algorithm. Two later
phases of the code: from `full_embedding_from` the loss is on the whole embedding (batches still per
cluster), from `finetune_from` one class-balanced stream over all data ("conquer").
"""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeInt, PositiveInt
from torch import nn

from unseen.config import Config
from unseen.data.base import Table
from unseen.data.samplers import BatchPlan, ClassBalancedBatchSampler
from unseen.errors import ConfigError
from unseen.losses.factory import build_loss
from unseen.methods.base import Batch, EpochContext, LossOutput, Method
from unseen.methods.clustering import ClusteredRows, derive_seed


class DivideAndConquer(ClusteredRows, Method):
    name = "divide_conquer"

    class Params(Method.Params):
        num_clusters: PositiveInt = Field(8, description="K: clusters of the data = slices of the embedding")
        recluster_every: PositiveInt = Field(2, description="T: epochs between two clusterings")
        full_embedding_from: NonNegativeInt | None = Field(
            None, description="epoch from which the loss is on the full embedding (batches still per cluster)")
        finetune_from: NonNegativeInt | None = Field(
            None, description="epoch from which one stream over all data trains the full embedding")
        cluster_on: Literal["penultimate", "embedding"] = Field(
            "penultimate", description="cluster the pooled trunk features (the code) or the class embedding")
        kmeans_iterations: PositiveInt = 100
        kmeans_redo: PositiveInt = Field(5, description="k-means runs; the one of lowest objective is kept")

    def __init__(self, config: Config, *, num_classes: int, embedding_dim: int) -> None:
        super().__init__(config, num_classes=num_classes, embedding_dim=embedding_dim)
        p = self.params
        if embedding_dim % p.num_clusters:
            raise ConfigError(f"method.num_clusters: {p.num_clusters} does not divide model.embedding_dim "
                              f"{embedding_dim} into equal slices")
        if None not in (p.full_embedding_from, p.finetune_from) and p.full_embedding_from > p.finetune_from:
            raise ConfigError(f"method.full_embedding_from ({p.full_embedding_from}) is after method.finetune_from "
                              f"({p.finetune_from})")
        self.slice_dim = embedding_dim // p.num_clusters
        # One criterion per learner, on D/K dimensions (the code keeps one per cluster; proxy losses need the
        # slice's size). Built under a forked RNG so the trunk's initialization matches the baseline's.
        with torch.random.fork_rng(devices=[]):
            self.slice_losses = nn.ModuleList(
                build_loss(config.loss.name, config.loss.kwargs, num_classes=num_classes, embedding_dim=self.slice_dim)
                for _ in range(p.num_clusters if p.num_clusters > 1 else 0)
            )
        self.epoch = 0

    # -- phases ------------------------------------------------------------------------------------
    def class_slices(self) -> int:
        return self.params.num_clusters

    def divided(self, epoch: int) -> bool:
        """Batches come per cluster (and the data is re-clustered) until `finetune_from`."""
        p = self.params
        return p.num_clusters > 1 and (p.finetune_from is None or epoch < p.finetune_from)

    def sliced(self, epoch: int) -> bool:
        """The loss of a cluster-c batch is on slice c only until `full_embedding_from`."""
        p = self.params
        return self.divided(epoch) and (p.full_embedding_from is None or epoch < p.full_embedding_from)

    # -- clustering --------------------------------------------------------------------------------
    def on_epoch_start(self, ctx: EpochContext) -> None:
        """Cluster the train set at the first divided epoch and every `recluster_every` epochs after."""
        self.epoch = ctx.epoch
        p = self.params
        if not self.divided(ctx.epoch):
            return
        if self.assignment is not None and len(self.assignment) == len(ctx.train) and ctx.epoch % p.recluster_every:
            return
        started = time.perf_counter()
        vectors = ctx.embed("features" if p.cluster_on == "penultimate" else "class")
        if p.cluster_on == "penultimate":  # the code clusters the L2-normalized pooled features
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        self.recluster(vectors, p.num_clusters, seed=derive_seed(ctx.seed, ctx.epoch), iterations=p.kmeans_iterations,
                       redo=p.kmeans_redo, started=started)

    # -- batches -----------------------------------------------------------------------------------
    def batches(self, train: Table, epoch: int) -> BatchPlan:
        """The default stream's number of batches, dealt round-robin to the clusters' class-balanced streams.

        Before the first clustering (the trainer sizes the run first) and outside the divided phase this
        is the default stream itself. Per cluster, classes with fewer than 2 images there are dropped; a
        cluster with fewer than P such classes gives batches of all of them (×K); one with fewer than 2
        sits the epoch out.
        """
        if not self.divided(epoch) or self.assignment is None:
            return super().batches(train, epoch)
        if len(self.assignment) != len(train):
            raise ValueError(f"divide_conquer: clustered {len(self.assignment)} rows, asked for batches of "
                             f"{len(train)}")
        s = self.config.sampler
        minimum = s.samples_per_class if s.small_classes == "drop" else 2
        samplers: dict[int, tuple[np.ndarray, ClassBalancedBatchSampler]] = {}
        for c in range(self.params.num_clusters):
            rows = np.flatnonzero(self.assignment == c)
            _, counts = np.unique(train.labels[rows], return_counts=True)
            eligible = int((counts >= minimum).sum())
            if eligible >= 2:
                samplers[c] = rows, ClassBalancedBatchSampler(
                    train.labels[rows], min(s.classes_per_batch, eligible), s.samples_per_class,
                    seed=derive_seed(self.config.train.seed, epoch, c), small_classes=s.small_classes)
        if not samplers:
            raise ConfigError(f"method.num_clusters={self.params.num_clusters}: no cluster holds 2 classes with "
                              f"{minimum}+ images; use fewer clusters")
        total = len(self.sampler(train))
        active = sorted(samplers)
        streams = {c: cluster_stream(*samplers[c], length=len(range(i, total, len(active))))
                   for i, c in enumerate(active)}
        turns = [(active[b % len(active)], b // len(active)) for b in range(total)]
        return BatchPlan([streams[c].indices[j] for c, j in turns], [streams[c].seeds[j] for c, j in turns])

    # -- loss --------------------------------------------------------------------------------------
    def cluster_of(self, rows: torch.Tensor) -> int:
        """The one cluster that all `rows` of a batch belong to."""
        if self.assignment is None:
            raise RuntimeError("divide_conquer: loss asked for before on_epoch_start clustered the train set")
        clusters = np.unique(self.assignment[rows.cpu().numpy()])
        if len(clusters) != 1:
            raise RuntimeError(f"divide_conquer: a batch mixes clusters {clusters.tolist()}")
        return int(clusters[0])

    def loss(self, out: dict[str, torch.Tensor], batch: Batch) -> LossOutput:
        parts = self.clustering_report()
        if self.sliced(self.epoch):
            c = self.cluster_of(batch.rows)
            piece = F.normalize(out["class"][:, c * self.slice_dim : (c + 1) * self.slice_dim].float(), dim=-1)
            total = self.base_objective(piece, batch.labels, self.slice_losses[c])
        else:
            total = self.base_objective(out["class"], batch.labels)
        return LossOutput(total, {"base": float(total.detach()), **parts})


def cluster_stream(rows: np.ndarray, sampler: ClassBalancedBatchSampler, length: int) -> BatchPlan:
    """`length` batches of one cluster (table rows): the cluster sampler's epochs 0, 1, ... back to back."""
    indices: list[np.ndarray] = []
    seeds: list[np.ndarray] = []
    sweep = 0
    while len(indices) < length:
        plan = sampler.epoch(sweep)
        indices += [rows[i] for i in plan.indices]
        seeds += plan.seeds
        sweep += 1
    return BatchPlan(indices[:length], seeds[:length])
