"""Shared helpers for the evaluation tests: toy data and the obvious, slow reference ranking."""

import numpy as np
import pytest


def make_clustered(num_classes: int, dim: int, seed: int, sizes=(1, 8), noise: float = 0.8):
    """Unit vectors around random class centres; class sizes drawn in [sizes[0], sizes[1]] (1 = singleton)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(sizes[0], sizes[1] + 1, num_classes)
    labels = np.repeat(np.arange(num_classes), counts)
    centres = rng.standard_normal((num_classes, dim))
    x = centres[labels] + noise * rng.standard_normal((len(labels), dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    order = rng.permutation(len(labels))
    return x[order].astype(np.float32), labels[order]


def reference_ranking(query: np.ndarray, gallery: np.ndarray, self_index=None) -> list[list[int]]:
    """For each query, gallery rows by float64 inner product descending, then lower index; self left out."""
    sims = query.astype(np.float64) @ gallery.astype(np.float64).T
    rankings = []
    for i, row in enumerate(sims):
        skip = -1 if self_index is None else self_index[i]
        rankings.append(sorted((j for j in range(len(row)) if j != skip), key=lambda j, row=row: (-row[j], j)))
    return rankings


@pytest.fixture
def clustered():
    return make_clustered


@pytest.fixture
def ranking():
    return reference_ranking
