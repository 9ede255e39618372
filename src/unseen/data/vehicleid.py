"""PKU VehicleID (Liu et al. 2016): photos of vehicles by identity. Zero-shot split as published:
`train_list.txt` (13,164 vehicles) for training; one of the test lists `test_list_800.txt`,
`test_list_1600.txt`, `test_list_2400.txt` (800 / 1,600 / 2,400 other vehicles: the small / medium / large
test sets) for testing, chosen by `options.test_list` (default `test_list_2400`).

Reads `train_test_split/<list>.txt` (`<image_name> <vehicle_id>` per line) and the images
`image/<image_name>.jpg` of the `VehicleID_V1.0/` folder, the data root being that folder or its parent.
Vehicle counts are asserted; image counts are not (published numbers differ from the lists). The test table
is plain leave-one-out; the standard VehicleID protocol (per identity one random gallery image, the rest
queries) belongs to the evaluation engine.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from unseen.data.base import Table
from unseen.data.layouts import ROOT, Layout, locate
from unseen.data.scan import DatasetFiles, reader_options
from unseen.errors import DatasetError

FOLDER = "VehicleID_V1.0"
SOURCE = (
    "get the VehicleID_V1.0 archive (https://www.pkuml.org/resources/pku-vehicleid.html) and extract it into "
    "the data root"
)
LAYOUTS = (
    Layout("as the VehicleID_V1.0 archive extracts",
           {"lists": "train_test_split/", "images": "image/"}, (FOLDER, ROOT)),
)
TRAIN_VEHICLES = 13_164
DEFAULT_TEST_LIST = "test_list_2400"


def read(root: Path, config: Any) -> tuple[Table, Table]:
    """(train: train_list.txt, test: options.test_list), as image paths."""
    options = reader_options(config, "vehicleid", ("test_list",))
    test_list = str(options.get("test_list", DEFAULT_TEST_LIST)).removesuffix(".txt")
    match = re.fullmatch(r"test_list_(\d+)", test_list)
    if match is None:
        expected = "test_list_800, test_list_1600 or test_list_2400"
        raise DatasetError(f"data.options.test_list: expected {expected}, got '{test_list}'")
    files = DatasetFiles.of("vehicleid", root, SOURCE, config)
    found = locate(files, LAYOUTS)
    paths, names, in_train = [], [], []
    for list_name in ("train_list", test_list):
        rows = files.read_rows(
            found.path("lists") / f"{list_name}.txt", expected="<image_name> <vehicle_id>", types=(str, int)
        )
        paths += [str(found.path("images") / f"{image}.jpg") for image, _ in rows]
        names += [f"{vehicle:05d}" for _, vehicle in rows]
        in_train += [list_name == "train_list"] * len(rows)
    counts = {"train": (None, TRAIN_VEHICLES), "test": (None, int(match.group(1)))}
    listed_in = f"{files.show(found.path('lists') / 'train_list.txt')} and {test_list}.txt"
    return files.build(paths, names, in_train, listed_in=listed_in, counts=counts)
