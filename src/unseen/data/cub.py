"""CUB-200-2011 (Wah et al. 2011): 11,788 photos of 200 bird species. Zero-shot split: species 1–100 train
(5,864 images), 101–200 test (5,924 images), leave-one-out retrieval.

Reads `images.txt` (`<image_id> <path>`), `image_class_labels.txt` (`<image_id> <class_id>`) and the images
in `images/<path>` of the folder `CUB_200_2011.tgz` extracts to (`CUB_200_2011/`), the data root being that
folder or its parent. Class names are the image folder names, e.g. `001.Black_footed_Albatross`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unseen.data.base import Table
from unseen.data.layouts import ROOT, Layout, locate
from unseen.data.scan import DatasetFiles, reader_options

FOLDER = "CUB_200_2011"
SOURCE = (
    "get CUB_200_2011.tgz (https://www.vision.caltech.edu/datasets/cub_200_2011/) and extract it into the "
    "data root"
)
LAYOUTS = (
    Layout(
        "as CUB_200_2011.tgz extracts",
        {"images_list": "images.txt", "labels": "image_class_labels.txt", "images": "images/"},
        (FOLDER, ROOT),
    ),
)
COUNTS = {"train": (5_864, 100), "test": (5_924, 100)}
TRAIN_CLASSES = 100


def read(root: Path, config: Any) -> tuple[Table, Table]:
    """(train: species 1–100, test: species 101–200), as image paths."""
    reader_options(config, "cub", ())
    files = DatasetFiles.of("cub", root, SOURCE, config)
    found = locate(files, LAYOUTS)
    labels_file = files.show(found.path("labels"))
    labels = dict(files.read_rows(found.path("labels"), expected="<id> <class_id>", types=(int, int)))
    images = files.read_rows(
        found.path("images_list"), expected="<id> <path>", types=(int, str),
        check=lambda row: None if row[0] in labels else f"image {row[0]} has no class in {labels_file}",
    )
    folder = files.require(found.path("images"))
    return files.build(
        [str(folder / path) for _, path in images],
        [path.split("/")[0] for _, path in images],
        [labels[image_id] <= TRAIN_CLASSES for image_id, _ in images],
        listed_in=files.show(found.path("images_list")),
        counts=COUNTS,
    )
