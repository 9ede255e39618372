"""Fixtures that build miniature copies of each dataset's official on-disk layout in a temporary folder."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def make_config(name: str = "omniglot", **overrides: object) -> SimpleNamespace:
    """A stand-in for the run's data config with the defaults readers rely on."""
    fields = {
        "name": name,
        "image_size": 28,
        "download": False,
        "allow_subset": False,
        "on_bad_image": "fail",
        "on_bad_row": "fail",
        "options": {},
    }
    fields.update(overrides)
    return SimpleNamespace(**fields)


@pytest.fixture(scope="session")
def config():
    """`config(name, **fields)` builds a data config."""
    return make_config


@pytest.fixture(scope="session")
def real_data_root() -> Path:
    """The folder with the real omniglot/omniglot.npz: $UNSEEN_DATA, else ../shared/data beside the repo."""
    root = Path(os.environ.get("UNSEEN_DATA") or REPO.parent / "shared" / "data")
    if not (root / "omniglot" / "omniglot.npz").is_file():
        pytest.fail(f"{root}/omniglot/omniglot.npz not found; set UNSEEN_DATA to the folder with omniglot/")
    return root


# ----------------------------------------------------------------------------------------------- Omniglot

# (alphabet, number of characters, background?) in char-id order, like the real data: background first
OMNIGLOT_ALPHABETS = [("Zeta_(script)", 11, True), ("Alpha", 2, True), ("Gamma", 3, False)]
OMNIGLOT_DRAWERS = 3
OMNIGLOT_SIZE = 12


def omniglot_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """A miniature omniglot.npz with the real arrays and conventions (0 = ink, ordered by char_id, drawer)."""
    rng = np.random.default_rng(seed)
    char_id, drawer, alphabet_id, background = [], [], [], []
    next_id = 0
    for a, (_, characters, is_background) in enumerate(OMNIGLOT_ALPHABETS):
        for c in range(next_id, next_id + characters):
            for d in range(OMNIGLOT_DRAWERS):
                char_id.append(c)
                drawer.append(d)
                alphabet_id.append(a)
                background.append(is_background)
        next_id += characters
    n = len(char_id)
    images = np.where(rng.random((n, OMNIGLOT_SIZE, OMNIGLOT_SIZE)) < 0.2, 0, 255).astype(np.uint8)
    return {
        "images": images,
        "char_id": np.array(char_id, dtype=np.int16),
        "drawer": np.array(drawer, dtype=np.int8),
        "alphabet_id": np.array(alphabet_id, dtype=np.int8),
        "background": np.array(background, dtype=bool),
        "alphabet_names": np.array([name for name, _, _ in OMNIGLOT_ALPHABETS]),
    }


def omniglot_members(arrays: dict[str, np.ndarray]) -> dict[str, bytes]:
    """The official archive members `<set>/<alphabet>/characterNN/<id>_<drawer>.png` (1-bit PNGs)."""
    members = {}
    first = {}
    for i in range(len(arrays["images"])):
        a, c = int(arrays["alphabet_id"][i]), int(arrays["char_id"][i])
        first.setdefault(a, c)
        set_name = "images_background" if arrays["background"][i] else "images_evaluation"
        name = (
            f"{set_name}/{arrays['alphabet_names'][a]}/character{c - first[a] + 1:02d}/"
            f"{c + 1:04d}_{int(arrays['drawer'][i]) + 1:02d}.png"
        )
        buffer = io.BytesIO()
        Image.fromarray(arrays["images"][i] > 127).save(buffer, format="PNG")
        members[name] = buffer.getvalue()
    return members


def omniglot_zip_bytes(members: dict[str, bytes], set_name: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            if name.startswith(set_name + "/"):
                archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def omniglot_tree(tmp_path: Path):
    """`build(layout)` makes `<tmp>/<layout>/omniglot/` (npz, folders, zips or mixed); returns the root."""
    arrays = omniglot_arrays()
    members = omniglot_members(arrays)

    def build(layout: str) -> Path:
        folder = tmp_path / layout / "omniglot"
        folder.mkdir(parents=True)
        if layout == "npz":
            np.savez_compressed(folder / "omniglot.npz", **arrays)
        for index, set_name in enumerate(("images_background", "images_evaluation")):
            as_zip = layout == "zips" or (layout == "mixed" and index == 0)
            if layout == "npz":
                continue
            if as_zip:
                (folder / f"{set_name}.zip").write_bytes(omniglot_zip_bytes(members, set_name))
                continue
            for name, data in members.items():
                if name.startswith(set_name + "/"):
                    (folder / name).parent.mkdir(parents=True, exist_ok=True)
                    (folder / name).write_bytes(data)
        return tmp_path / layout

    build.arrays = arrays
    build.members = members
    build.zip_bytes = lambda set_name: omniglot_zip_bytes(members, set_name)
    return build


# ------------------------------------------------------------------------------ photo datasets (tiny JPEGs)


def write_jpeg(path: Path, seed: int = 0, size: tuple[int, int] = (20, 15)) -> Path:
    """A tiny random RGB JPEG at `path` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=80)
    return path


# CUB: class id -> (folder name, number of images); ids <= 100 are train
CUB_CLASSES = {
    1: ("001.Black_footed_Albatross", 2),
    2: ("002.Laysan_Albatross", 3),
    101: ("101.White_Pelican", 2),
    200: ("200.Common_Yellowthroat", 2),
}


def build_cub(folder: Path) -> None:
    """`folder` as `CUB_200_2011.tgz` extracts to `CUB_200_2011/`: images.txt, image_class_labels.txt,
    classes.txt and images/ (the archive's attributes.txt goes beside the folder)."""
    images, labels, classes = [], [], []
    image_id = 0
    for class_id, (name, count) in CUB_CLASSES.items():
        classes.append(f"{class_id} {name}")
        for k in range(count):
            image_id += 1
            relative = f"{name}/{name.split('.')[1]}_{k:04d}_{image_id}.jpg"
            write_jpeg(folder / "images" / relative, seed=image_id)
            images.append(f"{image_id} {relative}")
            labels.append(f"{image_id} {class_id}")
    (folder / "images.txt").write_text("\n".join(images) + "\n")
    (folder / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (folder / "classes.txt").write_text("\n".join(classes) + "\n")
    (folder.parent / "attributes.txt").write_text("1 has_bill_shape::curved_(up_or_down)\n")


@pytest.fixture
def cub_tree(tmp_path: Path) -> Path:
    """The data root with `CUB_200_2011/` in it, as in the archive."""
    build_cub(tmp_path / "CUB_200_2011")
    return tmp_path


# CARS196: (class id, number of images); ids <= 98 are train
CARS_CLASSES = [(1, 2), (2, 1), (98, 2), (99, 2), (196, 3)]


def build_cars(folder: Path) -> None:
    """`folder` with `cars_annos.mat` (scipy struct array as published, `test` flags mixed) and `car_ims/`, as
    car_ims.tgz extracts beside the separately downloaded mat file."""
    import scipy.io

    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    records = []
    for class_id, count in CARS_CLASSES:
        for _ in range(count):
            relative = f"car_ims/{len(records) + 1:06d}.jpg"
            write_jpeg(folder / relative, seed=len(records))
            box = [np.array([[v]], dtype=np.uint16) for v in (1, 2, 18, 13)]
            records.append(
                (
                    np.array([relative]),
                    *box,
                    np.array([[class_id]], dtype=np.uint8),
                    np.array([[len(records) % 2]], dtype=np.uint8),
                )
            )
    annotations = np.empty((1, len(records)), dtype=[(name, object) for name in fields])
    for i, record in enumerate(records):
        annotations[0, i] = record
    class_names = np.empty((1, 196), dtype=object)
    for i in range(196):
        class_names[0, i] = np.array([f"Make Model {i + 1} 2012"])
    scipy.io.savemat(folder / "cars_annos.mat", {"annotations": annotations, "class_names": class_names})


@pytest.fixture
def cars_tree(tmp_path: Path) -> Path:
    """The data root with `cars196/cars_annos.mat` and `cars196/car_ims/`."""
    build_cars(tmp_path / "cars196")
    return tmp_path


# SOP: (split, class id, super class id, super class folder, number of images)
SOP_CLASSES = [
    ("train", 1, 1, "bicycle_final", 2),
    ("train", 2, 1, "bicycle_final", 2),
    ("train", 3, 2, "cabinet_final", 1),
    ("test", 11319, 1, "bicycle_final", 2),
    ("test", 11320, 3, "chair_final", 3),
]


def build_sop(folder: Path) -> None:
    """`folder` as `Stanford_Online_Products.zip` extracts: Ebay_{train,test,info}.txt with their header
    lines, and the .JPG images in `<category>_final/`."""
    lines = {split: ["image_id class_id super_class_id path"] for split in ("train", "test")}
    for split, class_id, super_id, super_folder, count in SOP_CLASSES:
        for k in range(count):
            relative = f"{super_folder}/{111085122871 + class_id}_{k}.JPG"
            write_jpeg(folder / relative, seed=class_id * 10 + k)
            lines[split].append(f"{len(lines[split])} {class_id} {super_id} {relative}")
    for split, rows in lines.items():
        (folder / f"Ebay_{split}.txt").write_text("\n".join(rows) + "\n")
    (folder / "Ebay_info.txt").write_text("image_id class_id super_class_id path\n")


@pytest.fixture
def sop_tree(tmp_path: Path) -> Path:
    """The data root with `Stanford_Online_Products/` in it."""
    build_sop(tmp_path / "Stanford_Online_Products")
    return tmp_path


# In-Shop: (item id, [statuses of its images])
INSHOP_ITEMS = [
    ("id_00000001", ["train", "train"]),
    ("id_00000002", ["train", "train", "train"]),
    ("id_00000007", ["query", "query", "gallery"]),
    ("id_00000008", ["query", "gallery", "gallery"]),
]


def build_inshop(folder: Path, list_file: str = "list_eval_partition.txt", images: str = "") -> None:
    """`folder/<list_file>` (count line, header, space-padded columns, a tab) and the images it names as
    `img/...` under `folder/<images>`: the benchmark's own folder is `Eval/list_eval_partition.txt` with
    images "Img" (Img/img.zip extracted in place)."""
    rows = []
    for item, statuses in INSHOP_ITEMS:
        for k, status in enumerate(statuses):
            relative = f"img/WOMEN/Dresses/{item}/0{k + 1}_1_front.jpg"
            write_jpeg(folder / images / relative, seed=len(rows))
            gap = " " * (60 - len(relative)) if k % 2 else "\t"
            rows.append(f"{relative}{gap}{item} {status}")
    header = ["image_name item_id evaluation_status"]
    (folder / list_file).parent.mkdir(parents=True, exist_ok=True)
    (folder / list_file).write_text("\n".join([str(len(rows)), *header, *rows]) + "\n")


@pytest.fixture
def inshop_tree(tmp_path: Path) -> Path:
    """The data root with `inshop/list_eval_partition.txt` + `inshop/img/` (the layout before Eval/ was read)."""
    build_inshop(tmp_path / "inshop")
    return tmp_path


# VehicleID: list name -> [(vehicle id, number of images)]
VEHICLEID_LISTS = {
    "train_list": [(1, 2), (2, 3), (5, 1)],
    "test_list_800": [(11, 2), (12, 2)],
    "test_list_1600": [(11, 2), (12, 2), (13, 2)],
    "test_list_2400": [(11, 2), (12, 2), (13, 2), (14, 3)],
}


def build_vehicleid(folder: Path) -> None:
    """`folder` as `VehicleID_V1.0/`: train_test_split/{train_list,test_list_*}.txt (`<image> <vehicle>`),
    image/ and attribute/."""
    (folder / "train_test_split").mkdir(parents=True)
    for list_name, vehicles in VEHICLEID_LISTS.items():
        rows = []
        for vehicle, count in vehicles:
            for k in range(count):
                image = f"{vehicle:04d}{k:03d}"
                if not (folder / "image" / f"{image}.jpg").exists():
                    write_jpeg(folder / "image" / f"{image}.jpg", seed=vehicle * 10 + k)
                rows.append(f"{image} {vehicle}")
        (folder / "train_test_split" / f"{list_name}.txt").write_text("\n".join(rows) + "\n")
    (folder / "attribute").mkdir()
    (folder / "attribute" / "model_attr.txt").write_text("1 0\n")


@pytest.fixture
def vehicleid_tree(tmp_path: Path) -> Path:
    """The data root with `VehicleID_V1.0/` in it."""
    build_vehicleid(tmp_path / "VehicleID_V1.0")
    return tmp_path


@pytest.fixture(scope="session")
def build() -> SimpleNamespace:
    """The builders of each dataset's folder, to lay them out anywhere: `build.cub(folder)`, ..."""
    return SimpleNamespace(cub=build_cub, cars=build_cars, sop=build_sop, inshop=build_inshop,
                           vehicleid=build_vehicleid, write_jpeg=write_jpeg)


@pytest.fixture
def folder_tree(tmp_path: Path) -> Path:
    """`<tmp>/images/<class>/` for six classes (one nested sub-folder, one hidden file, one text file)."""
    for c, name in enumerate(["ant", "bee", "cat", "dog", "eel", "fox"]):
        for k in range(2 + c % 2):
            write_jpeg(tmp_path / "images" / name / f"{k}.jpg", seed=c * 10 + k)
    write_jpeg(tmp_path / "images" / "cat" / "more" / "deep.JPG", seed=99)
    (tmp_path / "images" / "cat" / "._0.jpg").write_bytes(b"resource fork")
    (tmp_path / "images" / "dog" / "notes.txt").write_text("not an image")
    return tmp_path
