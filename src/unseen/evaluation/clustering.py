"""Clustering quality: k-means with K = number of classes (faiss' seeded start, exact assignments), then NMI
and pairwise F1 from the contingency table (never from loops over pairs). Formulas in docs/metrics.md."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from unseen.evaluation.knn import knn

FAISS_SEED = 1234  # faiss' default seed, hence pytorch-metric-learning's: the same clustering as theirs


def kmeans(
    embeddings: torch.Tensor | np.ndarray,
    num_clusters: int,
    *,
    seed: int = FAISS_SEED,
    max_iterations: int = 20,
    progress: bool = False,
) -> np.ndarray:
    """Cluster ids (int64, one per row) from Lloyd's k-means in L2, seeded, on the rows' own device.

    Initial centroids are the rows faiss' k-means would draw with `seed` (faiss.rand_perm). Each
    assignment is the exact nearest centroid from `knn.py` (largest float64 x·c - |c|²/2, ties to the lower
    centroid index): the same on CPU and CUDA, and about twice as fast as faiss' float32 search on AMX CPUs.
    A centroid left without rows takes half of the largest cluster, as faiss splits it. At most
    `max_iterations` updates (20, as PML); it stops as soon as an update leaves the assignment unchanged.
    """
    import faiss  # imported here: retrieval alone does not need it

    x = torch.as_tensor(embeddings).detach().float()
    x_cpu = x.cpu()
    permutation = np.empty(len(x), dtype=np.int32)
    faiss.rand_perm(faiss.swig_ptr(permutation), len(x), seed + 1)  # as faiss.Clustering with nredo = 1
    centroids = x_cpu[torch.from_numpy(permutation[:num_clusters].astype(np.int64))]
    points = torch.cat([x, torch.ones((len(x), 1), device=x.device)], dim=1)
    assignment = _nearest_centroid(points, centroids)
    for _ in tqdm(range(max_iterations), desc="k-means", unit="iter", disable=not progress):
        centroids = _centroids(x_cpu, assignment, num_clusters, centroids)
        update = _nearest_centroid(points, centroids)
        if torch.equal(update, assignment):
            break
        assignment = update
    return assignment.numpy()


def _nearest_centroid(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """argmin_c |x - c|² = argmax_c x·c - |c|²/2, by exact search over (x, 1)·(c, -|c|²/2); on the CPU."""
    half_norms = (centroids.double().square().sum(1, keepdim=True) / 2).float()
    _, nearest = knn(points, torch.cat([centroids, -half_norms], dim=1).to(points.device), 1)
    return nearest[:, 0].cpu()


def _centroids(x: torch.Tensor, assignment: torch.Tensor, k: int, previous: torch.Tensor) -> torch.Tensor:
    """Mean of each cluster's rows (float64 sums, in row order); an empty cluster splits the largest one."""
    sums = torch.zeros((k, x.shape[1]), dtype=torch.float64)
    for start in range(0, len(x), 8192):
        sums.index_add_(0, assignment[start : start + 8192], x[start : start + 8192].double())
    counts = torch.bincount(assignment, minlength=k)
    centroids = (sums / counts.clamp(min=1)[:, None]).float()
    centroids[counts == 0] = previous[counts == 0]
    for empty in (counts == 0).nonzero().squeeze(1).tolist():
        largest = int(torch.argmax(counts))
        sign = torch.ones(x.shape[1])
        sign[1::2] = -1  # faiss' split: ±1/1024 on alternate dimensions, in opposite directions
        centroids[empty] = centroids[largest] * (1 + sign / 1024)
        centroids[largest] = centroids[largest] * (1 - sign / 1024)
        counts[empty] = counts[largest] // 2
        counts[largest] -= counts[empty]
    return centroids


def contingency(labels: np.ndarray, clusters: np.ndarray) -> tuple[np.ndarray, ...]:
    """The non-zero cells of the class × cluster table, as (class index, cluster index, count n_ij) arrays,
    then the class sizes a_i and the cluster sizes b_j."""
    _, class_ids = np.unique(np.asarray(labels), return_inverse=True)
    _, cluster_ids = np.unique(np.asarray(clusters), return_inverse=True)
    width = int(cluster_ids.max(initial=0)) + 1
    cells, counts = np.unique(class_ids.astype(np.int64) * width + cluster_ids, return_counts=True)
    return cells // width, cells % width, counts, np.bincount(class_ids), np.bincount(cluster_ids)


def nmi(labels: np.ndarray, clusters: np.ndarray) -> float:
    """NMI = I(Ω; C) / mean(H(Ω), H(C)) with the arithmetic mean (sklearn >= 0.22 default), natural log.

    1.0 when both labelings have a single group (a perfect match), 0.0 when I = 0, as sklearn.
    """
    class_of, cluster_of, n_ij, class_sizes, cluster_sizes = contingency(labels, clusters)
    if len(class_sizes) == len(cluster_sizes) == 1:
        return 1.0
    n = float(n_ij.sum())
    a, b, n_ij = class_sizes[class_of].astype(float), cluster_sizes[cluster_of].astype(float), n_ij.astype(float)
    mutual_information = max(float(np.sum(n_ij / n * (np.log(n_ij) + np.log(n) - np.log(a) - np.log(b)))), 0.0)
    if mutual_information == 0.0:
        return 0.0
    return mutual_information / ((_entropy(class_sizes, n) + _entropy(cluster_sizes, n)) / 2)


def pairwise_f1(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Pairwise F1 of a clustering (Song et al. 2016): over unordered pairs, P = TP/(TP+FP), R = TP/(TP+FN),
    F1 = 2PR/(P+R) = 2·TP / (pairs in a common cluster + pairs in a common class), with
    TP = Σ C(n_ij, 2), TP+FP = Σ C(b_j, 2), TP+FN = Σ C(a_i, 2). 1.0 when there are no such pairs at all
    (both labelings all singletons, hence equal)."""
    _, _, n_ij, class_sizes, cluster_sizes = contingency(labels, clusters)
    true_positives = _pairs(n_ij)
    denominator = _pairs(cluster_sizes) + _pairs(class_sizes)
    return 1.0 if denominator == 0 else 2 * true_positives / denominator


def _pairs(counts: np.ndarray) -> int:
    counts = counts.astype(np.int64)
    return int(np.sum(counts * (counts - 1) // 2))


def _entropy(sizes: np.ndarray, n: float) -> float:
    p = sizes[sizes > 0] / n
    return float(-np.sum(p * np.log(p)))
