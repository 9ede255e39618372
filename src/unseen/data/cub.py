"""CUB-200-2011 (Wah et al. 2011): 11,788 photos of 200 bird species. Zero-shot split: species 1–100 train
(5,864 images), 101–200 test (5,924 images), leave-one-out retrieval.

Reads `CUB_200_2011/images.txt` (`<image_id> <path>`), `CUB_200_2011/image_class_labels.txt`
(`<image_id> <class_id>`) and the images in `CUB_200_2011/images/<path>`. Class names are the image folder
names, e.g. `001.Black_footed_Albatross`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unseen.data.base import Table
from unseen.data.scan import DatasetFiles, reader_options

FOLDER = "CUB_200_2011"
SOURCE = "extract CUB_200_2011.tgz (https://www.vision.caltech.edu/datasets/cub_200_2011/) into the data root"
COUNTS = {"train": (5_864, 100), "test": (5_924, 100)}
TRAIN_CLASSES = 100


def read(root: Path, config: Any) -> tuple[Table, Table]:
    """(train: species 1–100, test: species 101–200), as image paths."""
    reader_options(config, "cub", ())
    files = DatasetFiles.of("cub", root, SOURCE, config)
    labels = dict(
        files.read_rows(f"{FOLDER}/image_class_labels.txt", expected="<id> <class_id>", types=(int, int))
    )
    unlabelled = f"has no class in {FOLDER}/image_class_labels.txt"
    images = files.read_rows(
        f"{FOLDER}/images.txt", expected="<id> <path>", types=(int, str),
        check=lambda row: None if row[0] in labels else f"image {row[0]} {unlabelled}",
    )
    folder = files.require(f"{FOLDER}/images")
    return files.build(
        [str(folder / path) for _, path in images],
        [path.split("/")[0] for _, path in images],
        [labels[image_id] <= TRAIN_CLASSES for image_id, _ in images],
        listed_in=f"{FOLDER}/images.txt",
        counts=COUNTS,
    )
