"""A trained run on its own data: the model from the run artifact (`unseen.load`), the tables from the run's
dataset config, the protocol from its evaluation config. What `unseen evaluate RUN` and `unseen embed RUN` do."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unseen.artifact import Embedder, load
from unseen.config import Config
from unseen.data import build_splits
from unseen.data.base import Table
from unseen.errors import CheckpointError, ConfigError
from unseen.evaluation.table import DESCRIPTIONS, choose_protocol, evaluate_table, table_notes

SPLITS = ("train", "val", "test")


def run_table(embedder: Embedder, split: str, data_root: str | Path | None = None) -> tuple[Config, Table, str]:
    """(the run's config with `data_root` applied, the table of `split`, the dataset name)."""
    if split not in SPLITS:
        raise ConfigError(f"--split: expected train, val or test, got {split!r}")
    if embedder.config is None:
        raise CheckpointError(f"{embedder.checkpoint}: its config cannot be read by this version of unseen, so its "
                              "dataset is unknown; embed image files instead")
    config = embedder.config
    if data_root is not None:
        config = config.model_copy(update={"data": config.data.model_copy(update={"root": str(data_root)})})
    splits = build_splits(config.data)
    return config, getattr(splits, split), splits.dataset


def evaluate_run(
    run: str | Path, *, which: str = "best", split: str = "test", metrics: Sequence[str] | None = None,
    recall_at: Sequence[int] | None = None, data_root: str | Path | None = None, progress: bool = False,
) -> dict[str, Any]:
    """The metrics of a run's checkpoint on one of its splits (test by default), under the run's protocol:
    {"metrics": {...}, "notes": {...} (`evaluation_notes`), "protocol", "split", "checkpoint", "step", "commit"}."""
    embedder = load(run, which)
    config, table, dataset = run_table(embedder, split, data_root)
    ev = config.evaluation
    protocol = choose_protocol(ev.protocol, table, dataset)
    cutoffs = tuple(recall_at or ev.recall_at)
    notes = table_notes(table, protocol, cutoffs)  # before the metrics: it says why one is undefined
    vectors = embedder.embed_table(table, progress=progress)
    values = evaluate_table(vectors, table, protocol, metrics=tuple(metrics or ev.metrics), recall_at=cutoffs,
                            vehicleid_repeats=ev.vehicleid_repeats, progress=progress)
    return {"metrics": values, "notes": notes, "protocol": DESCRIPTIONS[protocol], "split": split,
            "checkpoint": str(embedder.checkpoint), "step": embedder.step, "commit": embedder.commit}


def embed_run_split(run: str | Path, *, which: str = "best", split: str = "test",
                    data_root: str | Path | None = None, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(N×D embeddings, N labels) of a run's split."""
    embedder = load(run, which)
    _, table, _ = run_table(embedder, split, data_root)
    return embedder.embed_table(table, progress=progress), table.labels
