"""Stanford Online Products (Oh Song et al. 2016): 120,053 photos of 22,634 products from eBay. Zero-shot
split as published: `Ebay_train.txt` 59,551 images of 11,318 products, `Ebay_test.txt` 60,502 images of
11,316 products; leave-one-out retrieval.

Reads `Ebay_train.txt` and `Ebay_test.txt` (header `image_id class_id super_class_id path`, paths relative to
their folder) of the folder `Stanford_Online_Products.zip` extracts to (`Stanford_Online_Products/`), the
data root being that folder or its parent. Class names are the product ids, zero-padded (`00001`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unseen.data.base import Table
from unseen.data.layouts import ROOT, Layout, locate
from unseen.data.scan import DatasetFiles, reader_options

FOLDER = "Stanford_Online_Products"
SOURCE = (
    "get Stanford_Online_Products.zip (cvgl.stanford.edu/projects/lifted_struct) and extract it into the data root"
)
LAYOUTS = (
    Layout("as Stanford_Online_Products.zip extracts", {"train": "Ebay_train.txt", "test": "Ebay_test.txt"},
           (FOLDER, ROOT)),
)
COUNTS = {"train": (59_551, 11_318), "test": (60_502, 11_316)}
HEADER = "image_id class_id super_class_id path"


def read(root: Path, config: Any) -> tuple[Table, Table]:
    """(train: Ebay_train.txt, test: Ebay_test.txt), as image paths."""
    reader_options(config, "sop", ())
    files = DatasetFiles.of("sop", root, SOURCE, config)
    found = locate(files, LAYOUTS)
    paths, names, in_train = [], [], []
    for split in ("train", "test"):
        rows = files.read_rows(
            found.path(split), expected="<image_id> <class_id> <super_class_id> <path>",
            types=(int, int, int, str), header=HEADER,
        )
        paths += [str(found.folder / path) for *_, path in rows]
        names += [f"{class_id:05d}" for _, class_id, _, _ in rows]
        in_train += [split == "train"] * len(rows)
    listed_in = f"{files.show(found.path('train'))} and {found.path('test').name}"
    return files.build(paths, names, in_train, listed_in=listed_in, counts=COUNTS)
