"""Datasets: readers by name, data-root resolution, and the train / val / test splits of a run."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from unseen.config import DataConfig
from unseen.data.base import Splits, Table, split_validation, table_from_labels
from unseen.data.scan import apply_bad_image_policy, recording_bad_rows
from unseen.errors import ConfigError

# name -> module with `read(root, config) -> (train table, test table)`; imported on use.
READERS: dict[str, str] = {
    "omniglot": "unseen.data.omniglot",
    "cub": "unseen.data.cub",
    "cars": "unseen.data.cars",
    "sop": "unseen.data.sop",
    "inshop": "unseen.data.inshop",
    "vehicleid": "unseen.data.vehicleid",
    "folder": "unseen.data.folder",
    "csv": "unseen.data.folder",
}


def data_root(configured: str | None = None) -> Path:
    """`data.root` / --data-root, else $UNSEEN_DATA, else ~/.cache/unseen."""
    if configured:
        return Path(configured).expanduser()
    if os.environ.get("UNSEEN_DATA"):
        return Path(os.environ["UNSEEN_DATA"]).expanduser()
    return Path("~/.cache/unseen").expanduser()


def read_dataset(config: DataConfig) -> tuple[Table, Table]:
    """The seen-class (train) and unseen-class (test) tables of `data.name`."""
    if config.name not in READERS:
        raise ConfigError(f"data.name: unknown dataset '{config.name}'; known: {', '.join(sorted(READERS))}")
    reader = importlib.import_module(READERS[config.name])
    return reader.read(data_root(config.root), config)


def build_splits(config: DataConfig, progress: bool = False) -> Splits:
    """Train on the seen classes minus a seeded, class-disjoint validation slice; test on the unseen classes.

    Image files are checked before anything trains (`data.on_bad_image`: fail with the list, or skip and
    report them in `Splits.bad_images`); so are the lines of list files (`data.on_bad_row`, `Splits.bad_rows`)."""
    with recording_bad_rows() as bad_rows:
        seen, unseen = read_dataset(config)
    seen, seen_report = apply_bad_image_policy(seen, config.on_bad_image, progress=progress)
    unseen, unseen_report = apply_bad_image_policy(unseen, config.on_bad_image, progress=progress)
    train, val = split_validation(seen, config.val_fraction, config.split_seed)
    protocol = (
        f"train/val: {config.name} seen classes, {config.val_fraction:.0%} of them held out for validation "
        f"(seed {config.split_seed}); test: the unseen classes, "
        + ("leave-one-out retrieval" if unseen.is_leave_one_out else "query -> gallery retrieval")
        + "; checkpoint selection on validation only"
    )
    return Splits(train=train, val=val, test=unseen, dataset=config.name, protocol=protocol,
                  bad_images=[r.to_dict() for r in (seen_report, unseen_report) if r.checked],
                  bad_rows=[r.to_dict() for r in bad_rows])


__all__ = ["READERS", "Splits", "Table", "build_splits", "data_root", "read_dataset", "table_from_labels"]
