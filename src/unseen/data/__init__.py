"""Datasets: readers by name, data-root resolution, and the train / val / test splits of a run."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from unseen.config import DataConfig
from unseen.data.base import Splits, Table, split_by_groups, split_validation, table_from_labels
from unseen.data.scan import apply_bad_image_policy, recording_bad_rows
from unseen.errors import ConfigError
from unseen.registry import Registry

Reader = Callable[[Path, DataConfig], tuple[Table, Table]]

# `data.name` -> `read(root, config) -> (seen-class table, unseen-class table)`; each module imported on use.
READERS: Registry[Reader] = Registry("dataset", key="data.name")
for _name, _module in (("omniglot", "omniglot"), ("cub", "cub"), ("cars", "cars"), ("sop", "sop"),
                       ("inshop", "inshop"), ("vehicleid", "vehicleid"), ("folder", "folder"), ("csv", "folder")):
    READERS.register_lazy(_name, f"unseen.data.{_module}:read")


def data_root(configured: str | None = None) -> Path:
    """`data.root` / --data-root, else $UNSEEN_DATA, else ~/.cache/unseen."""
    if configured:
        return Path(configured).expanduser()
    if os.environ.get("UNSEEN_DATA"):
        return Path(os.environ["UNSEEN_DATA"]).expanduser()
    return Path("~/.cache/unseen").expanduser()


def read_dataset(config: DataConfig) -> tuple[Table, Table]:
    """The seen-class (train) and unseen-class (test) tables of `data.name`."""
    return READERS.get(config.name)(data_root(config.root), config)


def build_splits(config: DataConfig, progress: bool = False) -> Splits:
    """Train on the seen classes minus a seeded, class-disjoint validation slice; test on the unseen classes.

    Image files are checked before anything trains (`data.on_bad_image`: fail with the list, or skip and
    report them in `Splits.bad_images`); so are the lines of list files (`data.on_bad_row`, `Splits.bad_rows`)."""
    with recording_bad_rows() as bad_rows:
        seen, unseen = read_dataset(config)
    seen, seen_report = apply_bad_image_policy(seen, config.on_bad_image, progress=progress)
    unseen, unseen_report = apply_bad_image_policy(unseen, config.on_bad_image, progress=progress)
    if config.val_groups:
        train, val = split_by_groups(seen, config.val_groups, config.train_groups, config.split_seed)
        held_out = (f"train on the classes of {len(train.groups)} groups ({', '.join(train.groups)}), validate on "
                    f"the {val.num_classes} classes of {len(val.groups)} other groups ({', '.join(val.groups)})")
    else:
        if config.train_groups is not None:
            raise ConfigError("data.train_groups: needs data.val_groups (a group-disjoint validation split)")
        train, val = split_validation(seen, config.val_fraction, config.split_seed)
        held_out = f"{config.val_fraction:.0%} of them held out for validation (seed {config.split_seed})"
    protocol = (
        f"train/val: {config.name} seen classes, {held_out}; test: the unseen classes; "
        "checkpoint selection on validation only"
    )
    return Splits(train=train, val=val, test=unseen, dataset=config.name, protocol=protocol,
                  bad_images=[r.to_dict() for r in (seen_report, unseen_report) if r.checked],
                  bad_rows=[r.to_dict() for r in bad_rows])


__all__ = ["READERS", "Splits", "Table", "build_splits", "data_root", "read_dataset", "table_from_labels"]
