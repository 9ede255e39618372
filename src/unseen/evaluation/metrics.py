"""Retrieval metrics from the neighbour-label matrix: pure functions, formulas in docs/metrics.md.

`hits[i, j]` is True when the j-th nearest gallery item of query i has the query's class (columns past a
query's R may be anything: they are masked). `num_relevant[i]` is R, the number of gallery items of the
query's class other than the query itself. Every query passed in has R >= 1; queries with R = 0 are
excluded (and counted) by the caller. Means are over queries (micro average), in float64.
"""

from __future__ import annotations

import torch


def recall_at_k(found: torch.Tensor) -> float:
    """Recall@K (Song et al. 2016, the DML usage): fraction of queries with >= 1 same-class item in their top K.

    `found[i]`: query i has one (`hits[:, :K].any(1)`, or `Neighbours.found_within[:, m]` for any K).
    """
    return found.double().mean().item()


def precision_at_1(hits: torch.Tensor) -> float:
    """P@1: fraction of queries whose nearest neighbour has their class (equals Recall@1)."""
    return hits[:, 0].double().mean().item()


def r_precision(hits: torch.Tensor, num_relevant: torch.Tensor) -> float:
    """R-Precision (Musgrave et al. 2020, "A Metric Learning Reality Check"): mean over queries of r / R,
    r = same-class items among the top R."""
    relevant = _within_r(hits, num_relevant)
    return (relevant.sum(1).double() / num_relevant).mean().item()


def map_at_r(hits: torch.Tensor, num_relevant: torch.Tensor) -> float:
    """MAP@R (Musgrave et al. 2020): mean over queries of (1/R) Σ_{i<=R} P(i)·rel(i), where P(i) is the
    precision among the first i neighbours and rel(i) = 1 if the i-th neighbour has the query's class."""
    relevant = _within_r(hits, num_relevant)
    positions = torch.arange(1, hits.shape[1] + 1, device=hits.device, dtype=torch.float64)
    precision = relevant.cumsum(1, dtype=torch.float64) / positions
    return ((precision * relevant).sum(1) / num_relevant).mean().item()


def _within_r(hits: torch.Tensor, num_relevant: torch.Tensor) -> torch.Tensor:
    """hits restricted to the first R columns of each row."""
    if hits.shape[1] < int(num_relevant.max()):
        raise ValueError(f"hits: {hits.shape[1]} columns, but a query has R = {int(num_relevant.max())}")
    columns = torch.arange(hits.shape[1], device=hits.device)
    return hits & (columns < num_relevant[:, None].to(hits.device))
