"""Omniglot (Lake, Salakhutdinov & Tenenbaum 2015): 1,623 handwritten characters of 50 alphabets, each drawn
by 20 people. Zero-shot split: train on the 964 "background" characters (30 alphabets, 19,280 images), test
on the 659 "evaluation" characters (20 other alphabets, 13,180 images), leave-one-out retrieval.

Reads `root/omniglot/omniglot.npz` (the compact copy), else the official layout in `root/omniglot/`
(`images_background/` and `images_evaluation/`, folders or their zips), downloading the zips when allowed.
Images are held in memory as uint8 (0 = ink), resized once to `config.image_size` with area averaging.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from unseen.data.base import Table, table_from_labels
from unseen.data.download import fetch, offline
from unseen.data.scan import DatasetFiles
from unseen.errors import DatasetError

SETS = {"images_background": "train", "images_evaluation": "test"}
ZIPS = tuple(f"{name}.zip" for name in SETS)
URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/{}.zip"
CANONICAL = {"train": (19_280, 964), "test": (13_180, 659)}  # images, classes
NPZ_ARRAYS = ("images", "char_id", "drawer", "alphabet_id", "background", "alphabet_names")
SOURCE = "put omniglot.npz (or " + " + ".join(ZIPS) + ") in {}"


@dataclass(frozen=True)
class _Part:
    """One set's samples in file order: class names (`Alphabet/characterNN`), file names, images."""

    class_names: np.ndarray
    file_names: np.ndarray
    images: np.ndarray


def read(root: Path, config: Any) -> tuple[Table, Table]:
    """(train: 964 background characters, test: 659 evaluation characters), images in memory."""
    folder = Path(root) / "omniglot"
    files = DatasetFiles("omniglot", Path(root), SOURCE.format(folder), config.allow_subset)
    if (folder / "omniglot.npz").is_file():
        parts = _read_npz(folder / "omniglot.npz", files)
    else:
        sources = _official_sources(folder, config)
        parts = {SETS[name]: _read_official(source, name, files) for name, source in sources.items()}
    tables = []
    for name in ("train", "test"):
        part = parts[name]
        if len(part.images) == 0:
            raise DatasetError(f"omniglot: no {name} images under {folder}")
        order = np.lexsort((part.file_names, part.class_names))
        table = table_from_labels(
            part.class_names[order], images=resize(part.images, config.image_size)[order], name=name,
            group_of=alphabet,
        )
        expected_images, expected_classes = CANONICAL[name]
        files.check_count(f"{name} images", len(table), expected_images)
        files.check_count(f"{name} classes", table.num_classes, expected_classes)
        tables.append(table)
    return tables[0], tables[1]


def alphabet(class_name: str) -> str:
    """The group of an Omniglot class: its alphabet (`Bengali/character07` -> `Bengali`)."""
    return class_name.split("/", 1)[0]


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """N×H×W uint8 images to N×size×size: area averaging (PIL BOX) to shrink, bicubic to enlarge."""
    if images.shape[1:] == (size, size):
        return images
    method = Image.Resampling.BOX if size < max(images.shape[1:]) else Image.Resampling.BICUBIC
    out = np.empty((len(images), size, size), dtype=np.uint8)
    for i, image in enumerate(images):
        out[i] = np.asarray(Image.fromarray(image).resize((size, size), method))
    return out


def _read_npz(path: Path, files: DatasetFiles) -> dict[str, _Part]:
    """The compact copy: the arrays listed in NPZ_ARRAYS (docs/datasets.md describes them)."""
    shown = files.show(path)
    try:
        with np.load(path) as data:
            absent = [name for name in NPZ_ARRAYS if name not in data.files]
            if absent:
                raise DatasetError(f"{shown}: no array '{absent[0]}'; expected {', '.join(NPZ_ARRAYS)}")
            arrays = {name: data[name] for name in NPZ_ARRAYS}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise DatasetError(f"{shown}: cannot read ({error})") from None
    images, alphabet_names = arrays["images"], arrays["alphabet_names"].astype(str)
    columns = ("char_id", "drawer", "alphabet_id", "background")
    lengths = {len(arrays[name]) for name in columns} | {len(images)}
    if images.ndim != 3 or images.dtype != np.uint8 or len(lengths) != 1:
        raise DatasetError(f"{shown}: expected images N×H×W uint8 and {', '.join(columns)} of length N")
    char_id, drawer, alphabet_id = (arrays[name].astype(np.int64) for name in columns[:3])
    background = arrays["background"].astype(bool)
    # characterNN numbers the characters of an alphabet in id order, as the official folders do
    first = np.full(len(alphabet_names), np.iinfo(np.int64).max)
    np.minimum.at(first, alphabet_id, char_id)
    number = char_id - first[alphabet_id] + 1
    class_names = np.array(
        [f"{alphabet_names[a]}/character{c:02d}" for a, c in zip(alphabet_id, number, strict=True)]
    )
    file_names = np.array([f"{c + 1:04d}_{d + 1:02d}.png" for c, d in zip(char_id, drawer, strict=True)])
    return {
        SETS[name]: _Part(class_names[rows], file_names[rows], images[rows])
        for name, rows in (("images_background", background), ("images_evaluation", ~background))
    }


def _official_sources(folder: Path, config: Any) -> dict[str, Path]:
    """For each set its folder or zip under `folder`; missing zips are downloaded when allowed."""
    sources, missing = {}, []
    for name in SETS:
        if (folder / name).is_dir():
            sources[name] = folder / name
        elif (folder / f"{name}.zip").is_file():
            sources[name] = folder / f"{name}.zip"
        else:
            missing.append(name)
    if not missing:
        return sources
    if len(missing) == len(SETS):
        hint = f"omniglot: no data under {folder}; put omniglot.npz (or {' + '.join(ZIPS)}) there"
    else:
        hint = f"omniglot: {folder} has no {missing[0]}.zip (or folder); put it there, or omniglot.npz"
    hint += ", or set --data-root / UNSEEN_DATA"
    if not config.download:
        raise DatasetError(f"{hint} (downloads are off: data.download=false)")
    if offline():
        raise DatasetError(f"{hint} (downloads are off: UNSEEN_OFFLINE / HF_HUB_OFFLINE is set)")
    for name in missing:
        try:
            sources[name] = fetch(URL.format(name), folder / f"{name}.zip")
        except DatasetError as error:
            raise DatasetError(f"{hint} ({error})") from None
    return sources


def _read_official(source: Path, set_name: str, files: DatasetFiles) -> _Part:
    """`<set>/<alphabet>/<characterNN>/<id>_<drawer>.png` from a folder or a zip, as 0 = ink uint8 arrays."""
    shown = files.show(source)
    pattern = re.compile(rf"^{set_name}/([^/]+/character\d+)/(\d+_\d+\.png)$")
    class_names, file_names, images = [], [], []
    for member, data in _members(source, shown):
        match = pattern.match(member)
        if match is None:
            continue
        try:
            with Image.open(io.BytesIO(data)) as image:
                pixels = np.asarray(image.convert("L"))
        except (OSError, ValueError) as error:
            raise DatasetError(f"{shown}: {member}: cannot read image ({error})") from None
        if images and pixels.shape != images[0].shape:
            raise DatasetError(f"{shown}: {member}: {pixels.shape} pixels, the others {images[0].shape}")
        class_names.append(match.group(1))
        file_names.append(match.group(2))
        images.append(pixels)
    if not images:
        expected = f"{set_name}/<alphabet>/characterNN/<id>_<drawer>.png"
        raise DatasetError(f"{shown}: no images; expected {expected}")
    return _Part(np.array(class_names), np.array(file_names), np.stack(images))


def _members(source: Path, shown: str) -> Iterator[tuple[str, bytes]]:
    """(path inside the set's parent folder or the zip, file bytes) of every .png, in name order."""
    if source.is_dir():
        for path in sorted(source.glob("*/*/*.png")):
            yield path.relative_to(source.parent).as_posix(), path.read_bytes()
        return
    try:
        with zipfile.ZipFile(source) as archive:
            for member in sorted(name for name in archive.namelist() if name.endswith(".png")):
                yield member, archive.read(member)
    except (OSError, zipfile.BadZipFile) as error:
        raise DatasetError(f"{shown}: cannot read ({error})") from None
