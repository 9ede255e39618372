import itertools
import math
from collections import Counter

import numpy as np
import pytest
import torch
from sklearn.metrics import normalized_mutual_info_score

from unseen.evaluation.clustering import _centroids, kmeans, nmi, pairwise_f1


def _nmi_reference(labels, clusters) -> float:
    n = len(labels)
    a, b, joint = Counter(labels), Counter(clusters), Counter(zip(labels, clusters, strict=True))
    mi = sum(c / n * math.log(n * c / (a[i] * b[j])) for (i, j), c in joint.items())
    entropy = lambda counts: -sum(c / n * math.log(c / n) for c in counts.values())  # noqa: E731
    return mi / ((entropy(a) + entropy(b)) / 2)


def _f1_reference(labels, clusters) -> float:
    tp = fp = fn = 0
    for i, j in itertools.combinations(range(len(labels)), 2):
        same_class, same_cluster = labels[i] == labels[j], clusters[i] == clusters[j]
        tp += same_class and same_cluster
        fp += same_cluster and not same_class
        fn += same_class and not same_cluster
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return 2 * precision * recall / (precision + recall)


def test_hand_computed_values():
    labels, clusters = [0, 0, 0, 1, 1], [5, 5, 7, 7, 7]
    # same class: 3 + 1 = 4 pairs; same cluster: 1 + 3 = 4; both: (0,1) and (3,4) -> P = R = F1 = 1/2
    assert pairwise_f1(labels, clusters) == 0.5
    h = -(0.6 * math.log(0.6) + 0.4 * math.log(0.4))
    mi = 0.4 * math.log(0.4 / (0.6 * 0.4)) + 0.2 * math.log(0.2 / (0.6 * 0.6)) + 0.4 * math.log(0.4 / (0.4 * 0.6))
    assert nmi(labels, clusters) == pytest.approx(mi / h, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_nmi_and_f1_equal_references_and_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, rng.integers(2, 15), 120)
    clusters = rng.integers(0, rng.integers(2, 15), 120) * 3 + 1000
    assert nmi(labels, clusters) == pytest.approx(_nmi_reference(labels.tolist(), clusters.tolist()), abs=1e-12)
    assert nmi(labels, clusters) == pytest.approx(normalized_mutual_info_score(labels, clusters), abs=1e-12)
    assert pairwise_f1(labels, clusters) == pytest.approx(_f1_reference(labels, clusters), abs=1e-12)


def test_edge_cases_follow_sklearn():
    assert nmi([3, 3, 3], [1, 1, 1]) == 1.0
    assert nmi([0, 0, 1, 1], [2, 2, 2, 2]) == normalized_mutual_info_score([0, 0, 1, 1], [2, 2, 2, 2]) == 0.0
    assert pairwise_f1([0, 1, 2], [0, 1, 2]) == 1.0  # no pairs anywhere: both all singletons, equal
    assert pairwise_f1([0, 0, 1], [0, 1, 2]) == 0.0


def test_kmeans_is_seeded_and_converges_to_a_lloyd_fixed_point(clustered):
    x, labels = clustered(12, 6, seed=1, sizes=(3, 9), noise=0.3)
    clusters = kmeans(x, 12, seed=3)
    assert clusters.shape == (len(x),) and clusters.dtype == np.int64
    assert np.array_equal(clusters, kmeans(x, 12, seed=3))
    ids = np.unique(clusters)
    centroids = np.stack([x[clusters == c].mean(0) for c in ids])
    nearest = ids[np.argmin(((x[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)]
    assert np.array_equal(nearest, clusters)
    assert nmi(labels, clusters) > 0.8


def test_an_empty_cluster_splits_the_largest_as_faiss_does():
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [5.0, 5.0]])
    previous = torch.zeros(3, 2)
    centroids = _centroids(x, torch.tensor([0, 0, 0, 0, 2]), 3, previous)
    assert torch.allclose(centroids[2], torch.tensor([5.0, 5.0]))
    assert torch.allclose(centroids[1], torch.tensor([1 + 1 / 1024, 2 * (1 - 1 / 1024)]))
    assert torch.allclose(centroids[0], torch.tensor([1 - 1 / 1024, 2 * (1 + 1 / 1024)]))
    duplicates = np.repeat(np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32), 5, axis=0)
    clusters = kmeans(duplicates, 4, seed=0)  # identical starting rows leave clusters empty
    assert np.array_equal(clusters, kmeans(duplicates, 4, seed=0)) and clusters.min() >= 0
