"""Clustering helpers shared by methods: faiss k-means of a set of vectors, and Hungarian matching of two
clusterings of the same samples (so that cluster c keeps roughly the same data after a re-clustering)."""

from __future__ import annotations

import time

import faiss
import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from unseen.train.distributed import once


def derive_seed(*values: int) -> int:
    """A seed in [0, 2³¹) that is a pure function of `values` (train.seed, epoch, cluster...)."""
    return int(np.random.SeedSequence(list(values)).generate_state(1)[0] >> 1)


def kmeans(
    x: np.ndarray, k: int, seed: int, iterations: int = 100, redo: int = 5, threads: int | None = None
) -> np.ndarray:
    """The cluster id (0..k-1) of each row of `x` (N×D) by Lloyd's k-means, the best of `redo` runs.

    Every point takes part (no sub-sampling), as in the Divide and Conquer code; the same (x, k, seed,
    threads) always gives the same assignment. `threads`: faiss's OpenMP threads for this call (default:
    faiss's own); one thread is much faster than two fighting other processes for two busy cores.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or len(x) < k:
        raise ValueError(f"k-means: cannot make {k} clusters of {len(x)} points of shape {x.shape}")
    if k == 1:
        return np.zeros(len(x), dtype=np.int64)
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads or previous)
    try:
        model = faiss.Kmeans(x.shape[1], k, niter=iterations, nredo=redo, seed=seed, verbose=False,
                             max_points_per_centroid=len(x), min_points_per_centroid=1)
        model.train(x)
        _, assignments = model.index.search(x, 1)
    finally:
        faiss.omp_set_num_threads(previous)
    return assignments[:, 0].astype(np.int64)


def match_clusters(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """`permutation` such that `permutation[new]` relabels the new clusters with the old ids they match.

    Hungarian algorithm on the L1 distance between membership indicator vectors,
    cost(i, j) = |old = i| + |new = j| − 2·|old = i ∧ new = j|, which over a full matching is the same as
    maximizing the total overlap (Divide and Conquer's `lib/clustering.py`).
    """
    old, new = np.asarray(old, dtype=np.int64), np.asarray(new, dtype=np.int64)
    if old.shape != new.shape:
        raise ValueError(f"match_clusters: {old.shape} old vs {new.shape} new assignments")
    k = int(max(old.max(initial=-1), new.max(initial=-1))) + 1
    overlap = np.zeros((k, k), dtype=np.int64)
    np.add.at(overlap, (old, new), 1)
    cost = overlap.sum(axis=1)[:, None] + overlap.sum(axis=0)[None, :] - 2 * overlap
    old_ids, new_ids = linear_sum_assignment(cost)
    permutation = np.empty(k, dtype=np.int64)
    permutation[new_ids] = old_ids
    return permutation


class ClusteredRows:
    """Mixin for methods (nn.Modules) that keep a cluster id per train row (D&C's learners, MIC's surrogate
    classes). `recluster` runs the seeded k-means and keeps ids stable across re-clusterings of the same rows
    (Hungarian matching); the ids and the epoch and step they were made at travel in the checkpoint, so a resumed
    plan is not clustered again; `clustering_report` gives the time and the diagnostics once, to the next step."""

    assignment: np.ndarray | None = None
    clustered_epoch: int | None = None
    clustered_step: int | None = None
    _report: dict[str, float] | None = None

    def recluster(self, vectors: np.ndarray, k: int, *, seed: int, iterations: int, redo: int, started: float,
                  labels: np.ndarray | None = None) -> None:
        """Cluster `vectors` (one row per train row) into k; `started` is when the embedding began (perf_counter);
        with the rows' class `labels`, the report also says how the clusters split the classes. Under torchrun the
        k-means runs once, on rank 0, and every process gets its clusters."""
        new = once(lambda: kmeans(vectors, k, seed=seed, iterations=iterations, redo=redo,
                                  threads=torch.get_num_threads()))
        if self.assignment is not None and len(self.assignment) == len(new):
            new = match_clusters(self.assignment, new)[new]
        self.assignment = new
        self._report = {"clustering_s": time.perf_counter() - started, **cluster_statistics(new, k, labels)}

    def clustering_report(self) -> dict[str, float]:
        """The last clustering's seconds and statistics, once (for the next step's logged parts); then {}."""
        report, self._report = self._report or {}, None
        return report

    def get_extra_state(self) -> dict:
        return {"assignment": None if self.assignment is None else torch.from_numpy(self.assignment),
                "clustered_epoch": self.clustered_epoch, "clustered_step": self.clustered_step}

    def set_extra_state(self, state: dict) -> None:
        assignment = state["assignment"]
        self.assignment = None if assignment is None else assignment.numpy().astype(np.int64)
        self.clustered_epoch = state.get("clustered_epoch")
        self.clustered_step = state.get("clustered_step")


def cluster_statistics(assignment: np.ndarray, k: int, labels: np.ndarray | None = None) -> dict[str, float]:
    """`cluster_smallest_share`: the smallest cluster's share of the rows (balance); with labels,
    `cluster_class_purity`: mean over classes of the share of a class's rows in its most common cluster (1: every
    class lies in one cluster, as D&C's sub-problems assume), and `cluster_classes_mean`: classes per cluster."""
    sizes = np.bincount(assignment, minlength=k)
    stats = {"cluster_smallest_share": float(sizes.min() / max(len(assignment), 1))}
    if labels is not None and len(labels) == len(assignment):
        _, classes = np.unique(labels, return_inverse=True)
        table = np.zeros((classes.max() + 1, k), dtype=np.int64)
        np.add.at(table, (classes, assignment), 1)
        stats["cluster_class_purity"] = float((table.max(axis=1) / table.sum(axis=1)).mean())
        stats["cluster_classes_mean"] = float((table > 0).sum(axis=0).mean())
    return stats
