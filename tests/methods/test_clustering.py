import itertools

import numpy as np
import pytest

from unseen.methods.clustering import kmeans, match_clusters


def blobs(k, per_cluster, dim, seed):
    """k well-separated Gaussian blobs; returns (points, true cluster of each point)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 10, size=(k, dim))
    truth = np.repeat(np.arange(k), per_cluster)
    return (centers[truth] + rng.normal(0, 0.1, size=(len(truth), dim))).astype(np.float32), truth


def same_partition(a, b):
    return len(set(zip(a.tolist(), b.tolist(), strict=True))) == len(set(a.tolist())) == len(set(b.tolist()))


def test_kmeans_is_deterministic_under_a_seed_and_finds_separated_blobs():
    x, truth = blobs(k=5, per_cluster=40, dim=8, seed=0)
    first = kmeans(x, 5, seed=3, iterations=20, redo=5)
    assert first.dtype == np.int64 and first.shape == (200,) and set(first.tolist()) == set(range(5))
    assert np.array_equal(first, kmeans(x, 5, seed=3, iterations=20, redo=5))
    assert same_partition(first, truth)


def test_kmeans_with_one_cluster_and_too_few_points():
    x, _ = blobs(k=2, per_cluster=3, dim=4, seed=1)
    assert np.array_equal(kmeans(x, 1, seed=0), np.zeros(6, dtype=np.int64))
    with pytest.raises(ValueError, match="cannot make 7 clusters of 6 points"):
        kmeans(x, 7, seed=0)


def test_matching_undoes_a_relabelling():
    rng = np.random.default_rng(0)
    old = rng.integers(0, 6, size=300)
    relabel = rng.permutation(6)
    permutation = match_clusters(old, relabel[old])
    assert np.array_equal(permutation[relabel[old]], old)


def l1_cost(old, new, permutation):
    """Σ_j ‖1[old = permutation[j]] − 1[new = j]‖₁, looping over clusters."""
    return sum(int(np.sum((old == permutation[j]) != (new == j))) for j in range(len(permutation)))


def test_matching_minimizes_the_l1_distance_of_membership_vectors():
    rng = np.random.default_rng(1)
    old = rng.integers(0, 5, size=200)
    new = np.where(rng.random(200) < 0.6, (old + 2) % 5, rng.integers(0, 5, size=200))
    permutation = match_clusters(old, new)
    best = min(l1_cost(old, new, np.array(p)) for p in itertools.permutations(range(5)))
    assert sorted(permutation.tolist()) == list(range(5))
    assert l1_cost(old, new, permutation) == best
