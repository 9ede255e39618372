"""Evaluating a sample table under its protocol: leave-one-out, query -> gallery (In-Shop), or VehicleID's
repeated random galleries. Validation, the final test, `unseen evaluate` and metrics.json all go through here,
so they always agree on who queries whom."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from unseen.data.base import Table
from unseen.evaluation.evaluate import evaluate, evaluate_vehicleid, evaluation_notes

Protocol = Literal["leave_one_out", "query_gallery", "vehicleid"]

DESCRIPTIONS: dict[str, str] = {
    "leave_one_out": "leave-one-out: every image queries all the others (its own row excluded by index)",
    "query_gallery": "query -> gallery: the table's query images search its gallery images",
    "vehicleid": "VehicleID: per draw, one random image of each identity is the gallery and every other image a "
                 "query; retrieval metrics are the mean (± std) over the draws",
}


def choose_protocol(requested: str, table: Table, dataset: str) -> Protocol:
    """`auto`: VehicleID's protocol for the vehicleid dataset, query -> gallery when the table marks queries and
    gallery items apart, else leave-one-out. An explicit choice that the table cannot support is refused."""
    if requested == "auto":
        if dataset == "vehicleid":
            return "vehicleid"
        return "leave_one_out" if table.is_leave_one_out else "query_gallery"
    if requested == "query_gallery" and table.is_leave_one_out:
        from unseen.errors import ConfigError

        raise ConfigError(f"evaluation.protocol: query_gallery, but the {table.name} table marks no query/gallery "
                          "roles (every image is both); use leave_one_out or auto")
    return requested  # type: ignore[return-value]


def evaluate_table(
    embeddings: np.ndarray,
    table: Table,
    protocol: Protocol,
    *,
    metrics: Sequence[str],
    recall_at: Sequence[int],
    vehicleid_repeats: int = 10,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, float]:
    """The asked-for metrics of `embeddings` (one row per table row) under `protocol`."""
    if protocol == "vehicleid":
        return evaluate_vehicleid(embeddings, table.labels, repeats=vehicleid_repeats, seed=seed,
                                  recall_at=recall_at, metrics=metrics, progress=progress)
    masks = (None, None) if protocol == "leave_one_out" else (table.is_query, table.is_gallery)
    return evaluate(np.asarray(embeddings), table.labels, query=masks[0], gallery=masks[1], recall_at=recall_at,
                    metrics=metrics, progress=progress)


def table_notes(table: Table, protocol: Protocol, recall_at: Sequence[int]) -> dict[str, object]:
    """The edges of evaluating `table` under `protocol` (`evaluation_notes`): warnings for trivial or undefined
    metrics, the queries without a positive and how they count, the tie rule. For VehicleID, those of its
    leave-one-out view: every draw keeps one image per identity in the gallery, so the counts vary per draw."""
    masks = (table.is_query, table.is_gallery) if protocol == "query_gallery" else (None, None)
    notes = evaluation_notes(table.labels, query=masks[0], gallery=masks[1], recall_at=recall_at)
    if protocol == "vehicleid":
        notes["protocol"] = DESCRIPTIONS["vehicleid"]
    return notes
