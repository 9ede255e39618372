"""The sample table every reader produces, and the splits a run trains, validates and tests on.

A `Table` is one split: for each sample, where its image comes from (a row of an in-memory uint8 array,
or a file path), its class label, and its role in retrieval (query and/or gallery). Labels are remapped
to contiguous ids 0..C-1 per table; `class_names` keeps the original name of each id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from unseen.errors import DatasetError


@dataclass(frozen=True)
class Table:
    """One split's samples. Exactly one of `images` (N×H×W or N×H×W×C uint8) and `paths` is set."""

    labels: np.ndarray
    class_names: tuple[str, ...]
    images: np.ndarray | None = None
    paths: tuple[str, ...] | None = None
    is_query: np.ndarray = field(default=None)  # type: ignore[assignment]
    is_gallery: np.ndarray = field(default=None)  # type: ignore[assignment]
    name: str = ""
    class_groups: tuple[str, ...] | None = None  # the group of each class (Omniglot: its alphabet), if any

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels)
        n = len(labels)
        if (self.images is None) == (self.paths is None):
            raise DatasetError(f"table '{self.name}': expected exactly one of images or paths")
        if self.images is not None and len(self.images) != n:
            raise DatasetError(f"table '{self.name}': {len(self.images)} images for {n} labels")
        if self.paths is not None and len(self.paths) != n:
            raise DatasetError(f"table '{self.name}': {len(self.paths)} paths for {n} labels")
        if n and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            raise DatasetError(f"table '{self.name}': labels must lie in 0..{len(self.class_names) - 1}")
        if self.class_groups is not None and len(self.class_groups) != len(self.class_names):
            raise DatasetError(f"table '{self.name}': {len(self.class_groups)} class groups for "
                               f"{len(self.class_names)} classes")
        object.__setattr__(self, "labels", labels.astype(np.int64, copy=False))
        for role in ("is_query", "is_gallery"):
            mask = getattr(self, role)
            mask = np.ones(n, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
            if mask.shape != (n,):
                raise DatasetError(f"table '{self.name}': {role} has shape {mask.shape}, expected ({n},)")
            object.__setattr__(self, role, mask)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def is_leave_one_out(self) -> bool:
        """True when every sample is both query and gallery (CUB, Cars, SOP); False for In-Shop-like splits."""
        return bool(self.is_query.all() and self.is_gallery.all())

    def select(self, rows: np.ndarray | Sequence[int], name: str | None = None) -> Table:
        """The sub-table of `rows` (indices or a boolean mask), labels remapped to contiguous ids."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        kept, labels = np.unique(self.labels[rows], return_inverse=True)
        return Table(
            labels=labels.reshape(-1),
            class_names=tuple(self.class_names[c] for c in kept),
            images=None if self.images is None else self.images[rows],
            paths=None if self.paths is None else tuple(self.paths[i] for i in rows),
            is_query=self.is_query[rows],
            is_gallery=self.is_gallery[rows],
            name=self.name if name is None else name,
            class_groups=None if self.class_groups is None else tuple(self.class_groups[c] for c in kept),
        )

    @property
    def groups(self) -> tuple[str, ...]:
        """The distinct class groups, sorted (empty when the dataset has none)."""
        return tuple(sorted(set(self.class_groups or ())))

    def load_image(self, index: int) -> Image.Image:
        """The image of sample `index` as PIL (mode L or RGB); a file that cannot be decoded is a DatasetError."""
        if self.images is not None:
            return Image.fromarray(self.images[index])
        path = self.paths[index]  # type: ignore[index]
        try:
            with Image.open(path) as image:
                image.load()
                return image.convert("RGB") if image.mode not in ("L", "RGB") else image.copy()
        except (OSError, ValueError) as error:
            raise DatasetError(f"{path}: cannot read image ({error})") from None


def table_from_labels(
    raw_labels: Sequence[object] | np.ndarray,
    *,
    images: np.ndarray | None = None,
    paths: Sequence[str | Path] | None = None,
    is_query: np.ndarray | None = None,
    is_gallery: np.ndarray | None = None,
    name: str = "",
    group_of: Callable[[str], str] | None = None,
) -> Table:
    """Build a Table from arbitrary class labels (ints or strings), remapped to sorted contiguous ids;
    `group_of(class name)` gives each class its group (e.g. Omniglot's alphabet), when the data has groups."""
    raw = np.asarray(raw_labels)
    kept, labels = np.unique(raw, return_inverse=True)
    names = tuple(str(c) for c in kept)
    return Table(
        labels=labels.reshape(-1),
        class_names=names,
        images=images,
        paths=None if paths is None else tuple(str(p) for p in paths),
        is_query=is_query,
        is_gallery=is_gallery,
        name=name,
        class_groups=None if group_of is None else tuple(group_of(n) for n in names),
    )


@dataclass(frozen=True)
class Splits:
    """The three tables of a run. `val` holds training classes held out for model selection. `bad_images` and
    `bad_rows` are the reports of the image scan and of the list files' malformed lines (`to_dict()` of
    `BadImageReport` / `BadRowReport` in data/scan.py)."""

    train: Table
    val: Table
    test: Table
    dataset: str
    protocol: str
    bad_images: list[dict] = field(default_factory=list)
    bad_rows: list[dict] = field(default_factory=list)

    def describe(self) -> dict[str, object]:
        """Counts and protocol, as written to metrics.json; skipped list-file lines with their file and line
        numbers (the skipped images are listed in bad_images.json)."""
        return {
            "dataset": self.dataset,
            "protocol": self.protocol,
            "bad_images_skipped": sum(report["skipped"] for report in self.bad_images),
            "bad_rows_skipped": sum(report["skipped"] for report in self.bad_rows),
            "bad_rows": [
                {"file": report["file"], "skipped": report["skipped"], "lines": [bad["line"] for bad in report["bad"]]}
                for report in self.bad_rows
            ],
            **{
                f"{t.name}": {"images": len(t), "classes": t.num_classes}
                for t in (self.train, self.val, self.test)
            },
        }


def split_validation(train: Table, fraction: float, seed: int) -> tuple[Table, Table]:
    """Hold out a seeded, class-disjoint `fraction` of the training classes as the validation table."""
    if not 0.0 <= fraction < 1.0:
        raise DatasetError(f"data.val_fraction: expected a number in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    num_val = int(round(fraction * train.num_classes))
    if fraction > 0 and num_val < 2:
        raise DatasetError(
            f"data.val_fraction={fraction} leaves {num_val} validation classes of {train.num_classes}; need 2+"
        )
    val_classes = np.zeros(train.num_classes, dtype=bool)
    val_classes[rng.permutation(train.num_classes)[:num_val]] = True
    in_val = val_classes[train.labels]
    return train.select(~in_val, name="train"), train.select(in_val, name="val")


def split_by_groups(
    seen: Table, val_groups: Sequence[str], train_groups: int | Sequence[str] | None, seed: int
) -> tuple[Table, Table]:
    """Validation = every class of the groups `val_groups`; training = the classes of `train_groups` (names, or
    that many of the other groups drawn with `seed`), or of every other group. Group-disjoint, as the test is."""
    if seen.class_groups is None:
        raise DatasetError(f"data.val_groups: the {seen.name or 'training'} classes have no groups in this dataset; "
                           "use data.val_fraction")
    known = seen.groups
    _check_groups("data.val_groups", val_groups, known)
    if len(set(val_groups)) != len(val_groups):
        raise DatasetError("data.val_groups: a group is listed twice")
    rest = [g for g in known if g not in set(val_groups)]
    if train_groups is None:
        chosen = rest
    elif isinstance(train_groups, int):
        if train_groups > len(rest):
            raise DatasetError(f"data.train_groups: {train_groups} asked for, but only {len(rest)} groups are left "
                               "after the validation groups")
        rng = np.random.default_rng(seed)
        chosen = sorted(rng.choice(np.array(rest, dtype=object), size=train_groups, replace=False).tolist())
    else:
        _check_groups("data.train_groups", train_groups, known)
        overlap = sorted(set(train_groups) & set(val_groups))
        if overlap:
            raise DatasetError(f"data.train_groups: '{overlap[0]}' is also a validation group")
        chosen = list(train_groups)
    group = np.array(seen.class_groups, dtype=object)[seen.labels]
    return (seen.select(np.isin(group, chosen), name="train"),
            seen.select(np.isin(group, list(val_groups)), name="val"))


def _check_groups(key: str, groups: Sequence[str], known: Sequence[str]) -> None:
    unknown = [g for g in groups if g not in known]
    if unknown:
        raise DatasetError(f"{key}: unknown group '{unknown[0]}'; known: {', '.join(known)}")
