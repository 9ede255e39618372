"""Clustering helpers shared by methods: faiss k-means of a set of vectors, and Hungarian matching of two
clusterings of the same samples (so that cluster c keeps roughly the same data after a re-clustering)."""

from __future__ import annotations

import time

import faiss
import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


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
    (Hungarian matching); the ids travel in the checkpoint; `clustering_report` gives the time once."""

    assignment: np.ndarray | None = None
    last_clustering_seconds: float | None = None
    _report_clustering: bool = False

    def recluster(self, vectors: np.ndarray, k: int, *, seed: int, iterations: int, redo: int, started: float) -> None:
        """Cluster `vectors` (one row per train row) into k; `started` is when the embedding began (perf_counter)."""
        new = kmeans(vectors, k, seed=seed, iterations=iterations, redo=redo, threads=torch.get_num_threads())
        if self.assignment is not None and len(self.assignment) == len(new):
            new = match_clusters(self.assignment, new)[new]
        self.assignment = new
        self.last_clustering_seconds = time.perf_counter() - started
        self._report_clustering = True

    def clustering_report(self) -> dict[str, float]:
        """{"clustering_s": seconds} after a clustering, for the next step's logged parts; then {}."""
        if not self._report_clustering:
            return {}
        self._report_clustering = False
        return {"clustering_s": float(self.last_clustering_seconds or 0.0)}

    def get_extra_state(self) -> dict:
        return {"assignment": None if self.assignment is None else torch.from_numpy(self.assignment)}

    def set_extra_state(self, state: dict) -> None:
        assignment = state["assignment"]
        self.assignment = None if assignment is None else assignment.numpy().astype(np.int64)
