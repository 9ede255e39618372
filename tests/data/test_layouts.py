from __future__ import annotations

import os

import numpy as np
import pytest

from unseen.data import cars, cub, inshop, sop, vehicleid
from unseen.data.layouts import ROOT, Layout, locate
from unseen.data.scan import DatasetFiles
from unseen.errors import DatasetError

LAYOUTS = (
    Layout("new", {"list": "Eval/list.txt", "images": "Img/img/"}, ("Bench", ROOT)),
    Layout("old", {"list": "list.txt", "images": "img/"}, ("old",)),
)


def _files(root):
    return DatasetFiles("toy", root, "get toy.zip and extract it")


def _make(root, *relatives):
    for relative in relatives:
        path = root / relative
        if relative.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")


@pytest.mark.parametrize(
    ("present", "layout", "folder"),
    [
        (["Bench/Eval/list.txt", "Bench/Img/img/"], "new", "Bench"),
        (["Eval/list.txt", "Img/img/"], "new", ""),
        (["old/list.txt", "old/img/"], "old", "old"),
        # a complete layout wins over one whose main file alone is there
        (["Bench/Eval/list.txt", "old/list.txt", "old/img/"], "old", "old"),
        # only a main file: that layout, so the reader can name what is missing
        (["old/list.txt"], "old", "old"),
        (["Eval/list.txt", "old/list.txt"], "new", ""),
    ],
)
def test_locate_prefers_complete_layouts_then_started_ones(tmp_path, present, layout, folder):
    _make(tmp_path, *present)
    found = locate(_files(tmp_path), LAYOUTS)
    assert (found.layout.description, found.folder) == (layout, tmp_path / folder if folder else tmp_path)
    assert found.path("images") == found.folder / found.layout.files["images"].rstrip("/")


def test_a_file_where_a_folder_is_expected_does_not_count(tmp_path):
    _make(tmp_path, "old/list.txt")
    (tmp_path / "old" / "img").write_text("not a folder")
    _make(tmp_path, "Bench/Eval/list.txt", "Bench/Img/img/")
    assert locate(_files(tmp_path), LAYOUTS).folder == tmp_path / "Bench"


def test_nothing_found_lists_every_place_tried_and_what_to_get(tmp_path):
    expected = (
        f"toy: no dataset files under {tmp_path}; looked for Eval/list.txt + Img/img/ in Bench/ or the root itself "
        "(new); list.txt + img/ in old/ (old); get toy.zip and extract it, or set --data-root / UNSEEN_DATA"
    )
    with pytest.raises(DatasetError) as error:
        locate(_files(tmp_path), LAYOUTS)
    assert str(error.value) == expected


# ------------------------------------------------------------------ every reader, every accepted layout


def _cars_class_folders(build, folder):
    build.cars(folder)
    annotations = cars._read_annotations(folder / "cars_annos.mat", _files(folder))
    for path, _, name in zip(*annotations, strict=True):
        os.makedirs(folder / "images" / name, exist_ok=True)
        os.replace(path, folder / "images" / name / os.path.basename(path))
    (folder / "cars_annos.mat").unlink()


EVAL_LIST = "Eval/list_eval_partition.txt"

# case -> (reader, dataset folder name, build(builders, folder), whether the root may be the folder itself)
CASES = {
    "cub: CUB_200_2011.tgz": (cub, "CUB_200_2011", lambda build, folder: build.cub(folder), True),
    "cars: car_ims.tgz + cars_annos.mat": (cars, "cars196", lambda build, folder: build.cars(folder), True),
    "cars: class folders": (cars, "cars196", _cars_class_folders, False),
    "sop: Stanford_Online_Products.zip": (
        sop, "Stanford_Online_Products", lambda build, folder: build.sop(folder), True,
    ),
    "inshop: the benchmark folder, Img/img.zip extracted in place": (
        inshop, "In-shop Clothes Retrieval Benchmark", lambda build, folder: build.inshop(folder, EVAL_LIST, "Img"),
        True,
    ),
    "inshop: img.zip extracted beside Eval/": (
        inshop, "In-shop Clothes Retrieval Benchmark", lambda build, folder: build.inshop(folder, EVAL_LIST), True,
    ),
    "inshop: Eval/ and img/ in inshop/": (
        inshop, "inshop", lambda build, folder: build.inshop(folder, EVAL_LIST), True,
    ),
    "inshop: the list beside img/": (inshop, "inshop", lambda build, folder: build.inshop(folder), True),
    "vehicleid: VehicleID_V1.0": (vehicleid, "VehicleID_V1.0", lambda build, folder: build.vehicleid(folder), True),
}

# (train images, train classes, test images, test classes, test queries, test gallery items)
EXPECTED = {
    cub: (5, 2, 4, 2, 4, 4),
    cars: (5, 3, 5, 2, 5, 5),
    sop: (5, 3, 5, 2, 5, 5),
    inshop: (5, 2, 6, 2, 3, 3),
    vehicleid: (6, 3, 9, 4, 9, 9),
}


@pytest.mark.parametrize("root_at", ["parent", "folder"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_reader_reads_its_layouts_with_the_root_at_the_folder_or_its_parent(
    tmp_path, config, build, case, root_at
):
    reader, name, make, at_root = CASES[case]
    folder = tmp_path / ("data" if root_at == "parent" else "elsewhere") / name
    make(build, folder)
    root = folder.parent if root_at == "parent" else folder
    dataset = reader.__name__.rsplit(".", 1)[1]
    if root_at == "folder" and not at_root:
        with pytest.raises(DatasetError, match=f"^{dataset}: no dataset files under {root}; looked for"):
            reader.read(root, config(dataset, allow_subset=True))
        return
    train, test = reader.read(root, config(dataset, allow_subset=True))
    found = tuple(
        int(value)
        for value in (len(train), train.num_classes, len(test), test.num_classes, test.is_query.sum(),
                      test.is_gallery.sum())
    )
    assert found == EXPECTED[reader]
    for table in (train, test):
        assert all(path.startswith(str(folder) + os.sep) and os.path.isfile(path) for path in table.paths)
        assert np.array_equal(np.unique(table.labels), np.arange(table.num_classes))
    assert not set(train.class_names) & set(test.class_names)


ARCHIVES = {
    cub: ["CUB_200_2011.tgz", "images.txt + image_class_labels.txt + images/ in CUB_200_2011/ or the root itself"],
    cars: ["car_ims.tgz", "cars_annos.mat", "cars_annos.mat + car_ims/ in cars196/ or the root itself",
           "images/ in cars196/"],
    sop: ["Stanford_Online_Products.zip", "Ebay_train.txt + Ebay_test.txt in Stanford_Online_Products/ or the root"],
    inshop: ["img.zip", "Eval/list_eval_partition.txt + Img/img/ in In-shop Clothes Retrieval Benchmark/ or inshop/ "
             "or the root itself", "Eval/list_eval_partition.txt + img/", "; list_eval_partition.txt + img/"],
    vehicleid: ["VehicleID_V1.0 archive", "train_test_split/ + image/ in VehicleID_V1.0/ or the root itself"],
}


@pytest.mark.parametrize("reader", list(ARCHIVES), ids=lambda reader: reader.__name__)
def test_no_data_names_every_layout_and_the_archives(tmp_path, config, reader):
    dataset = reader.__name__.rsplit(".", 1)[1]
    with pytest.raises(DatasetError) as error:
        reader.read(tmp_path, config(dataset))
    message = str(error.value)
    assert message.startswith(f"{dataset}: no dataset files under {tmp_path}; looked for ")
    assert message.endswith(", or set --data-root / UNSEEN_DATA") and "\n" not in message
    for part in ARCHIVES[reader]:
        assert part in message
