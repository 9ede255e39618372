"""Stanford Cars / CARS196 (Krause et al. 2013): 16,185 photos of 196 car models. Zero-shot split: classes
1–98 train (8,054 images), 99–196 test (8,131 images), leave-one-out retrieval. The split is by class; the
`test` flag of `cars_annos.mat` (a classification split) is ignored.

Reads `cars_annos.mat` (struct array `annotations` with `relative_im_path`, `class`, `test`; and
`class_names`) with the images in `car_ims/` (as `car_ims.tgz` extracts) beside it, in the data root or in
`cars196/` under it; else the class-folder layout `cars196/images/<class>/`, where a folder name that starts
with a number is the class id and otherwise classes are numbered in sorted name order (as the MIC / Sharing
Matters code does).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from unseen.data.base import Table
from unseen.data.folder import list_class_folders
from unseen.data.layouts import ROOT, Layout, locate
from unseen.data.scan import DatasetFiles, reader_options
from unseen.errors import DatasetError

FOLDER = "cars196"
SOURCE = (
    "get car_ims.tgz and cars_annos.mat (Stanford Cars, 2013), extract car_ims.tgz and put cars_annos.mat "
    f"beside the car_ims/ folder, in the data root or in {FOLDER}/ under it"
)
LAYOUTS = (
    Layout("car_ims.tgz extracted beside cars_annos.mat", {"annotations": "cars_annos.mat", "images": "car_ims/"},
           (FOLDER, ROOT)),
    Layout("one folder of images per class", {"classes": "images/"}, (FOLDER,)),
)
COUNTS = {"train": (8_054, 98), "test": (8_131, 98)}
TRAIN_CLASSES = 98
FIELDS = ("relative_im_path", "class")


def read(root: Path, config: Any) -> tuple[Table, Table]:
    """(train: classes 1–98, test: classes 99–196), as image paths."""
    reader_options(config, "cars", ())
    files = DatasetFiles.of("cars", root, SOURCE, config)
    found = locate(files, LAYOUTS)
    if "annotations" in found.layout.files:
        paths, class_ids, names = _read_annotations(found.path("annotations"), files)
        listed_in = files.show(found.path("annotations"))
    else:
        paths, names = list_class_folders(found.path("classes"), files)
        class_ids = _class_ids(names)
        listed_in = files.show(found.path("classes")) + "/"
    in_train = np.asarray(class_ids) <= TRAIN_CLASSES
    return files.build(paths, names, in_train, listed_in=listed_in, counts=COUNTS)


def _read_annotations(path: Path, files: DatasetFiles) -> tuple[list[str], list[int], list[str]]:
    """(paths, class ids 1..196, class names `NNN.<model>`) from the official annotation file."""
    shown = files.show(path)
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True)
    except Exception as error:  # scipy signals a damaged file with many exception types (IndexError, ...)
        raise DatasetError(f"{shown}: cannot read ({type(error).__name__}: {error})") from None
    annotations = np.atleast_1d(mat.get("annotations", np.array([])))
    if annotations.dtype.names is None or not set(FIELDS) <= set(annotations.dtype.names):
        raise DatasetError(f"{shown}: expected a struct array 'annotations' with fields {', '.join(FIELDS)}")
    models = [str(name) for name in np.atleast_1d(mat.get("class_names", np.array([])))]
    paths, class_ids, names = [], [], []
    for number, annotation in enumerate(annotations, 1):
        try:
            class_id = int(annotation["class"])
            relative = str(annotation["relative_im_path"])
        except (TypeError, ValueError):
            expected = "expected a class and a relative_im_path"
            raise DatasetError(f"{shown}: annotation {number}: {expected}") from None
        if not 1 <= class_id <= max(len(models), 196):
            raise DatasetError(f"{shown}: annotation {number}: class {class_id} is not in 1..196")
        paths.append(str(path.parent / relative))
        class_ids.append(class_id)
        names.append(f"{class_id:03d}" + (f".{models[class_id - 1]}" if class_id <= len(models) else ""))
    return paths, class_ids, names


def _class_ids(folder_names: list[str]) -> list[int]:
    """A leading number in every folder name is the class id; else 1.. in sorted name order."""
    numbers = {name: re.match(r"\d+", name) for name in folder_names}
    if all(numbers.values()):
        return [int(numbers[name].group()) for name in folder_names]  # type: ignore[union-attr]
    rank = {name: index for index, name in enumerate(sorted(set(folder_names)), 1)}
    return [rank[name] for name in folder_names]
