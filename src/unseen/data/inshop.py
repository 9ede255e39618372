"""In-Shop Clothes Retrieval (DeepFashion, Liu et al. 2016): 52,712 photos of 7,982 clothing items.
Zero-shot split as published: train 25,882 images of 3,997 items; test 3,985 other items, retrieved
query -> gallery: 14,218 query and 12,612 gallery images (the test table carries is_query / is_gallery).

Reads `list_eval_partition.txt` (line 1: the number of images; line 2: the header `image_name item_id
evaluation_status`; then one image per line, columns separated by runs of spaces) and the images it names
(`img/...`, relative to the folder that holds `img/`). Accepted: the benchmark's own folder (`Eval/` with the
list, `Img/img/` from extracting `Img/img.zip` in place), `img.zip` extracted beside `Eval/`, or the list
beside `img/`; in the data root, in `In-shop Clothes Retrieval Benchmark/` or in `inshop/` under it.
Class names are the item ids (`id_00000001`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from unseen.data.base import Table
from unseen.data.layouts import ROOT, Layout, locate
from unseen.data.scan import DatasetFiles, reader_options

BENCHMARK = "In-shop Clothes Retrieval Benchmark"
FOLDERS = (BENCHMARK, "inshop", ROOT)
SOURCE = (
    f"get Img/img.zip and Eval/list_eval_partition.txt of the DeepFashion {BENCHMARK}, extract img.zip "
    "where it is (Img/img/) or beside Eval/ (img/)"
)
LIST = "list_eval_partition.txt"
LAYOUTS = (
    Layout("Img/img.zip extracted in place", {"list": f"Eval/{LIST}", "images": "Img/img/"}, FOLDERS),
    Layout("img.zip extracted beside Eval/", {"list": f"Eval/{LIST}", "images": "img/"}, FOLDERS),
    Layout("the list beside img/", {"list": LIST, "images": "img/"}, FOLDERS),
)
COUNTS = {"train": (25_882, 3_997), "test": (26_830, 3_985)}
QUERY_IMAGES, GALLERY_IMAGES = 14_218, 12_612
STATUSES = ("train", "query", "gallery")


def read(root: Path, config: Any) -> tuple[Table, Table]:
    """(train, test with is_query / is_gallery), as image paths."""
    reader_options(config, "inshop", ())
    files = DatasetFiles.of("inshop", root, SOURCE, config)
    found = locate(files, LAYOUTS)
    rows = files.read_rows(
        found.path("list"), expected="<image_name> <item_id> train|query|gallery",
        types=(str, str, _status), header="image_name item_id evaluation_status", count_line=True,
    )
    status = np.array([row[2] for row in rows])
    images = found.path("images").parent  # the list names images as img/...
    train, test = files.build(
        [str(images / image) for image, _, _ in rows],
        [item for _, item, _ in rows],
        status == "train",
        listed_in=files.show(found.path("list")),
        counts=COUNTS,
        is_query=status == "query",
        is_gallery=status == "gallery",
    )
    files.check_count("query images", int(test.is_query.sum()), QUERY_IMAGES)
    files.check_count("gallery images", int(test.is_gallery.sum()), GALLERY_IMAGES)
    return train, test


def _status(value: str) -> str:
    if value not in STATUSES:
        raise ValueError(value)
    return value
