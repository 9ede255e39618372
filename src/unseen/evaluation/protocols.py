"""Who queries whom: leave-one-out, query -> gallery, and the VehicleID random-gallery protocol."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Split:
    """Query and gallery rows of one evaluation, and where each query sits in the gallery (-1: not there)."""

    query: torch.Tensor  # (Q,) int64 row indices
    gallery: torch.Tensor  # (G,) int64 row indices
    self_index: torch.Tensor  # (Q,) int64 position of the query's own row in `gallery`, or -1


def leave_one_out(num_rows: int) -> Split:
    """Every row queries all the others (single-split datasets: CUB, Cars, SOP, Omniglot)."""
    rows = torch.arange(num_rows)
    return Split(rows, rows, rows)


def query_gallery(query_mask: torch.Tensor, gallery_mask: torch.Tensor) -> Split:
    """Masked rows query the masked gallery (In-Shop). A row in both never retrieves itself (by index)."""
    query, gallery = query_mask.nonzero().squeeze(1), gallery_mask.nonzero().squeeze(1)
    position = torch.full((len(query_mask),), -1, dtype=torch.long)
    position[gallery] = torch.arange(len(gallery))
    return Split(query, gallery, position[query])


def vehicleid_splits(labels: torch.Tensor | np.ndarray, *, repeats: int = 10, seed: int = 0) -> list[Split]:
    """VehicleID (Liu et al. 2016): per repetition, one random image of each identity forms the gallery and
    all other images are queries; `repeats` independent draws from a generator seeded with `seed`."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    splits = []
    for _ in range(repeats):
        order = rng.permutation(len(labels))
        _, first = np.unique(labels[order], return_index=True)  # a uniform random member of each identity
        in_gallery = np.zeros(len(labels), dtype=bool)
        in_gallery[order[first]] = True
        splits.append(query_gallery(torch.from_numpy(~in_gallery), torch.from_numpy(in_gallery)))
    return splits
