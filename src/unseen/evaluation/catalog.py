"""The metrics by name: one table for the config (`evaluation.metrics`), `unseen evaluate --metrics` and the engine.

`recall` stands for Recall@K at every K of `recall_at`; on the command line `recall@1,recall@4` names both at once.
Retrieval metrics need the k-NN search; clustering metrics need k-means (the slow part at SOP scale), so asking
only for what is needed saves the rest. Formulas: docs/metrics.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from unseen.errors import ConfigError
from unseen.registry import Registry


@dataclass(frozen=True)
class Metric:
    name: str
    kind: Literal["retrieval", "clustering"]
    description: str


METRICS: Registry[Metric] = Registry("metric", key="evaluation.metrics")
_DEFINED = (
    Metric("recall", "retrieval", "Recall@K: share of queries with a same-class item among their K nearest"),
    Metric("precision@1", "retrieval", "share of queries whose nearest neighbour has their class"),
    Metric("r_precision", "retrieval", "mean r/R: same-class items among the top R, R = the query's class size"),
    Metric("map@r", "retrieval", "mean average precision over the top R (Musgrave et al. 2020)"),
    Metric("nmi", "clustering", "normalized mutual information of k-means (K = number of classes) and the labels"),
    Metric("f1", "clustering", "pairwise F1 of that k-means clustering (Song et al. 2016)"),
)
for _metric in _DEFINED:
    METRICS.register(_metric.name)(_metric)

# In the order results are reported.
RETRIEVAL_METRICS = tuple(m.name for m in _DEFINED if m.kind == "retrieval")
CLUSTERING_METRICS = tuple(m.name for m in _DEFINED if m.kind == "clustering")

_RECALL = re.compile(r"recall@(\d+)")


def parse_metric_names(
    names: str | Iterable[str], option: str = "--metrics"
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """`"recall@1,map@r,nmi"` -> (("recall", "map@r", "nmi"), (1,)): the metric names and the recall cutoffs.

    A plain `recall` keeps the cutoffs empty (the caller's default applies)."""
    items = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    if not items:
        raise ConfigError(f"{option}: expected comma-separated metric names, e.g. recall@1,map@r,nmi")
    metrics: list[str] = []
    cutoffs: list[int] = []
    for item in items:
        match = _RECALL.fullmatch(item)
        if match is not None:
            if int(match.group(1)) < 1:
                raise ConfigError(f"{option}: recall@K needs K >= 1, got {item!r}")
            cutoffs.append(int(match.group(1)))
            item = "recall"
        elif item not in METRICS:
            known = ", ".join(n if n != "recall" else "recall@K" for n in METRICS)
            raise ConfigError(f"{option}: unknown metric {item!r}; known: {known}")
        if item not in metrics:
            metrics.append(item)
    return tuple(metrics), tuple(sorted(set(cutoffs)))
