"""Custom data: a folder with one sub-folder of images per class, or a CSV manifest.

Image folders (`data.name: folder`), options:
- `train_dir` + `test_dir`: two folders of class folders, the seen and the unseen classes (must differ);
- else `dir` (default: the data root itself), split by class: a seeded `test_fraction` (default 0.5, `seed`
  default 0) of the classes is the unseen test set, the rest is train.
CSV manifest (`data.name: csv`, or `options.manifest` given): `manifest` (default `manifest.csv` in the data
root) with a header row and the columns `path,label[,split,is_query,is_gallery]`; paths are relative to the
manifest's folder. Without a `split` column the classes are split as for folders (`test_fraction`, `seed`).
Test retrieval is leave-one-out unless the manifest gives `is_query` / `is_gallery` for test rows.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unseen.data.base import Table
from unseen.data.scan import DatasetFiles, reader_options
from unseen.errors import DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLIT_OPTIONS = ("test_fraction", "seed")
COLUMNS = ("path", "label", "split", "is_query", "is_gallery")
TRUE, FALSE = ("1", "true", "yes", "y", "t", ""), ("0", "false", "no", "n", "f")


def read(root: Path, config: Any) -> tuple[Table, Table]:
    """(train, test) from image folders, or from a CSV manifest (`data.name` csv, or `manifest` given)."""
    if config.name == "csv" or "manifest" in (config.options or {}):
        return _read_manifest(Path(root), config)
    return _read_folders(Path(root), config)


def list_class_folders(folder: Path, files: DatasetFiles) -> tuple[list[str], list[str]]:
    """(image paths, class names) of `folder/<class>/**/<image>`, sorted; hidden files and folders ignored."""
    if not folder.is_dir():
        raise DatasetError(f"{files.show(folder)}: not a folder; expected one sub-folder of images per class")
    paths: list[str] = []
    names: list[str] = []
    for class_folder in sorted(path for path in folder.iterdir() if path.is_dir() and not _hidden(path.name)):
        images = sorted(
            str(path)
            for path in class_folder.rglob("*")
            if path.suffix.lower() in IMAGE_SUFFIXES
            and not any(_hidden(part) for part in path.relative_to(class_folder).parts)
            and path.is_file()
        )
        if not images:
            suffixes = " ".join(IMAGE_SUFFIXES)
            raise DatasetError(f"{files.show(class_folder)}: no images ({suffixes}); add some or remove it")
        paths += images
        names += [class_folder.name] * len(images)
    if not paths:
        raise DatasetError(f"{files.show(folder)}: no class folders; expected <class>/<image> files")
    return paths, names


def _hidden(name: str) -> bool:
    return name.startswith(".")


def split_by_class(class_names: Sequence[str], options: dict[str, Any]) -> np.ndarray:
    """Mask of the training rows: a seeded `test_fraction` of the classes (at least one) is the test set."""
    try:
        fraction, seed = float(options.get("test_fraction", 0.5)), int(options.get("seed", 0))
    except (TypeError, ValueError):
        raise DatasetError("data.options: expected test_fraction in (0, 1) and an integer seed") from None
    classes = np.unique(np.asarray(class_names, dtype=str))
    num_test = int(round(fraction * len(classes)))
    if not 0 < fraction < 1 or not 0 < num_test < len(classes):
        raise DatasetError(
            f"data.options.test_fraction={fraction} of {len(classes)} classes gives {num_test} test classes; "
            "need at least one class in train and in test"
        )
    test_classes = np.random.default_rng(seed).permutation(classes)[:num_test]
    return ~np.isin(np.asarray(class_names, dtype=str), test_classes)


def _read_folders(root: Path, config: Any) -> tuple[Table, Table]:
    options = reader_options(config, "folder", ("dir", "train_dir", "test_dir", *SPLIT_OPTIONS))
    files = DatasetFiles.of("folder", root, "check data.options and the folders", config)
    if "train_dir" in options or "test_dir" in options:
        if not {"train_dir", "test_dir"} <= set(options) or {"dir", *SPLIT_OPTIONS} & set(options):
            raise DatasetError("data.options: give train_dir and test_dir, or dir (with test_fraction, seed)")
        train_paths, train_names = list_class_folders(root / options["train_dir"], files)
        test_paths, test_names = list_class_folders(root / options["test_dir"], files)
        paths, names = train_paths + test_paths, train_names + test_names
        in_train = np.arange(len(paths)) < len(train_paths)
        listed_in = f"{options['train_dir']} and {options['test_dir']}"
    else:
        folder = root / options["dir"] if "dir" in options else root
        paths, names = list_class_folders(folder, files)
        in_train = split_by_class(names, options)
        listed_in = str(folder)
    return files.build(paths, names, in_train, listed_in=listed_in)


def _read_manifest(root: Path, config: Any) -> tuple[Table, Table]:
    options = reader_options(config, config.name, ("manifest", *SPLIT_OPTIONS))
    manifest = root / options.get("manifest", "manifest.csv")
    files = DatasetFiles.of(config.name, root, f"fix {manifest.name}", config)
    shown = files.show(files.require(manifest))
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [column.strip().lower() for column in next(reader, [])]
            _check_header(header, shown)
            rows = [(reader.line_num, row) for row in reader if any(field.strip() for field in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DatasetError(f"{shown}: cannot read ({error})") from None
    if not rows:
        raise DatasetError(f"{shown}: no rows after the header")
    columns: dict[str, list] = {name: [] for name in header}
    bad = files.bad_rows(shown)
    for number, row in rows:
        try:
            values = _parse_row(header, row)
        except ValueError as error:
            bad.add(number, str(error))
            continue
        for name, value in values.items():
            columns[name].append(value)
    bad.finish(len(columns["path"]))
    paths = [str(manifest.parent / path) for path in columns["path"]]
    if "split" in header:
        if set(SPLIT_OPTIONS) & set(options):
            raise DatasetError(f"data.options: {shown} has a split column; drop test_fraction and seed")
        in_train = np.array(columns["split"]) == "train"
    else:
        in_train = split_by_class(columns["label"], options)
    return files.build(
        paths, columns["label"], in_train, listed_in=shown,
        is_query=columns.get("is_query"), is_gallery=columns.get("is_gallery"),
    )


def _check_header(header: list[str], shown: str) -> None:
    if not {"path", "label"} <= set(header) <= set(COLUMNS) or len(set(header)) != len(header):
        expected = "path,label[,split,is_query,is_gallery]"
        raise DatasetError(f"{shown}: line 1: expected the header '{expected}', got '{','.join(header)}'")


def _parse_row(header: list[str], row: list[str]) -> dict[str, str | bool]:
    """A manifest row as {column: value}: split is train/test, is_query/is_gallery are booleans (empty =
    true). A ValueError says what is wrong with it."""
    if len(row) != len(header):
        raise ValueError(f"expected {len(header)} columns ({','.join(header)}), got {len(row)}")
    values: dict[str, str | bool] = dict(zip(header, (field.strip() for field in row), strict=True))
    if not values["path"] or not values["label"]:
        raise ValueError("expected a path and a label")
    for column, value in values.items():
        if column == "split":
            if value.lower() not in ("train", "test"):
                raise ValueError(f"split must be train or test, got '{value}'")
            values[column] = value.lower()
        elif column in ("is_query", "is_gallery"):
            if value.lower() not in TRUE + FALSE:
                raise ValueError(f"{column} must be 1/0 or true/false, got '{value}'")
            values[column] = value.lower() in TRUE
    return values
