import io
import itertools
import time

import numpy as np
import pytest
import torch

import unseen.methods.clustering as clustering
from unseen.methods.clustering import ClusteredRows, cluster_statistics, kmeans, match_clusters


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


def slow_statistics(assignment, k, labels):
    rows = len(assignment)
    smallest = min(sum(1 for a in assignment if a == c) for c in range(k)) / rows
    classes = sorted(set(labels))
    purity = sum(max(sum(1 for a, y in zip(assignment, labels, strict=True) if y == label and a == c)
                     for c in range(k)) / sum(1 for y in labels if y == label) for label in classes) / len(classes)
    per_cluster = sum(len({y for a, y in zip(assignment, labels, strict=True) if a == c}) for c in range(k)) / k
    return {"cluster_smallest_share": smallest, "cluster_class_purity": purity, "cluster_classes_mean": per_cluster}


def test_cluster_statistics_match_a_slow_count():
    rng = np.random.default_rng(0)
    labels = rng.integers(10, 17, size=90)  # ids need not start at 0
    assignment = rng.integers(0, 5, size=90)
    assignment[assignment == 4] = 3  # an empty cluster: the smallest share is 0
    stats = cluster_statistics(assignment, 5, labels)
    expected = slow_statistics(assignment.tolist(), 5, labels.tolist())
    assert stats.keys() == expected.keys() and expected["cluster_smallest_share"] == 0
    assert all(stats[key] == pytest.approx(expected[key], abs=1e-12) for key in expected)
    assert cluster_statistics(assignment, 5) == {"cluster_smallest_share": 0.0}  # without labels: balance only


def test_cluster_statistics_by_hand():
    # class 0: rows in clusters 0, 0, 1 (purity 2/3); class 1: 1, 1 (1); class 2: 0, 1, 2, 2 (1/2)
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    assignment = np.array([0, 0, 1, 1, 1, 0, 1, 2, 2])
    stats = cluster_statistics(assignment, 3, labels)
    assert stats["cluster_class_purity"] == pytest.approx((2 / 3 + 1 + 1 / 2) / 3, abs=1e-12)
    assert stats["cluster_classes_mean"] == pytest.approx((2 + 3 + 1) / 3, abs=1e-12)  # {0, 2}, {0, 1, 2}, {2}
    assert stats["cluster_smallest_share"] == pytest.approx(2 / 9, abs=1e-12)


class Clustered(ClusteredRows, torch.nn.Module):
    pass


def test_reclustering_keeps_the_ids_reports_once_and_travels_in_a_weights_only_state_dict(monkeypatch):
    x, truth = blobs(k=3, per_cluster=10, dim=4, seed=2)
    rows = Clustered()
    rows.recluster(x, 3, seed=0, iterations=20, redo=5, started=time.perf_counter(), labels=truth)
    first = rows.assignment.copy()
    assert same_partition(first, truth)
    report = rows.clustering_report()
    assert report["clustering_s"] >= 0 and report["cluster_class_purity"] == 1.0
    assert rows.clustering_report() == {}
    monkeypatch.setattr(clustering, "kmeans", lambda *args, **kwargs: (first + 1) % 3)  # the same clusters, renamed
    rows.recluster(x, 3, seed=1, iterations=20, redo=5, started=time.perf_counter())
    assert np.array_equal(rows.assignment, first)
    assert set(rows.clustering_report()) == {"clustering_s", "cluster_smallest_share"}
    rows.clustered_epoch, rows.clustered_step = 4, 37
    buffer = io.BytesIO()
    torch.save(rows.state_dict(), buffer)
    buffer.seek(0)
    restored = Clustered()
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert np.array_equal(restored.assignment, first) and restored.assignment.dtype == np.int64
    assert (restored.clustered_epoch, restored.clustered_step) == (4, 37)
