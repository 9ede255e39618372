from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from unseen.data import cars, cub, folder, inshop, scan, sop, vehicleid
from unseen.data.base import table_from_labels
from unseen.errors import DatasetError


@pytest.fixture
def images(tmp_path):
    """One file per kind of problem, and two good ones."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    jpeg, png = io.BytesIO(), io.BytesIO()
    Image.fromarray(pixels).save(jpeg, format="JPEG")
    Image.fromarray(pixels).save(png, format="PNG")
    files = {
        "good.jpg": jpeg.getvalue(),
        "good.png": png.getvalue(),
        "trailing.jpg": jpeg.getvalue() + b"camera maker notes",
        "truncated.jpg": jpeg.getvalue()[: len(jpeg.getvalue()) // 2],
        "truncated.png": png.getvalue()[: len(png.getvalue()) // 2],
        "garbage.jpg": b"<html>404 not found</html>",
        "empty.jpg": b"",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("good.jpg", None),
        ("good.png", None),
        ("trailing.jpg", None),
        ("truncated.jpg", "truncated"),
        ("truncated.png", "truncated"),
        ("garbage.jpg", "not an image"),
        ("empty.jpg", "empty file"),
        ("absent.jpg", "missing"),
    ],
)
def test_check_image_finds_each_problem(images, name, reason):
    found = scan.check_image(str(images / name))
    assert found == reason if reason is None else found.startswith(reason)


def test_scan_caches_good_files_by_size_and_mtime(images, tmp_path, monkeypatch):
    paths = [str(images / name) for name in ("good.jpg", "good.png", "garbage.jpg", "absent.jpg")]
    cache = tmp_path / "cache"
    bad = scan.scan_images(paths, cache_dir=cache)
    assert [(os.path.basename(b.path), b.reason) for b in bad] == [
        ("garbage.jpg", "not an image"),
        ("absent.jpg", "missing"),
    ]
    cache_files = list((cache / "image-scan").iterdir())
    assert len(cache_files) == 1 and len(json.loads(cache_files[0].read_text())["files"]) == 2
    checked = []
    original = scan.check_image
    monkeypatch.setattr(
        scan, "check_image", lambda path: checked.append(os.path.basename(path)) or original(path)
    )
    assert len(scan.scan_images(paths, cache_dir=cache)) == 2
    assert checked == ["garbage.jpg"]  # good files come from the cache, bad ones are checked again
    os.utime(paths[0], ns=(0, 10**9))
    scan.scan_images(paths, cache_dir=cache)
    assert checked == ["garbage.jpg", "good.jpg", "garbage.jpg"]


def test_fail_lists_the_bad_files_and_skip_reports_them(images, tmp_path):
    names = ["good.jpg", "truncated.jpg", "good.png", "garbage.jpg"]
    table = table_from_labels(["a", "a", "b", "c"], paths=[str(images / n) for n in names], name="train")
    with pytest.raises(DatasetError) as error:
        scan.apply_bad_image_policy(table, "fail", cache_dir=tmp_path)
    message = str(error.value)
    assert message.startswith(
        f"2 of 4 images of the train table cannot be used: {images / 'truncated.jpg'} "
        f"(truncated); {images / 'garbage.jpg'} (not an image); fix or remove them, or set "
        "data.on_bad_image=skip"
    )
    kept, report = scan.apply_bad_image_policy(table, "skip", cache_dir=tmp_path)
    assert kept.paths == (str(images / "good.jpg"), str(images / "good.png"))
    assert kept.class_names == ("a", "b") and kept.name == "train"
    assert (report.checked, report.skipped) == (4, 2)
    assert report.to_dict()["bad"][0] == {"path": str(images / "truncated.jpg"), "reason": "truncated"}


def test_long_lists_are_shortened_and_policies_checked(images, tmp_path):
    table = table_from_labels(list(range(12)), paths=[str(images / f"absent{i}.jpg") for i in range(12)])
    with pytest.raises(DatasetError, match=r"\(missing\); and 2 more; fix or remove"):
        scan.apply_bad_image_policy(table, "fail", cache_dir=tmp_path)
    with pytest.raises(DatasetError, match="data.on_bad_image: expected 'fail' or 'skip', got 'ignore'"):
        scan.apply_bad_image_policy(table, "ignore", cache_dir=tmp_path)


def test_in_memory_tables_have_nothing_to_scan():
    table = table_from_labels([0, 1], images=np.zeros((2, 4, 4), dtype=np.uint8), name="train")
    same, report = scan.apply_bad_image_policy(table, "fail")
    assert same is table and report.to_dict() == {
        "table": "train",
        "policy": "fail",
        "checked": 0,
        "skipped": 0,
        "bad": [],
    }


READERS = {
    "cub_tree": ("cub", cub),
    "cars_tree": ("cars", cars),
    "sop_tree": ("sop", sop),
    "inshop_tree": ("inshop", inshop),
    "vehicleid_tree": ("vehicleid", vehicleid),
    "folder_tree": ("folder", folder),
}


@pytest.mark.parametrize("tree", sorted(READERS))
def test_every_path_reader_with_a_corrupt_jpeg(request, config, tmp_path, tree):
    """Every path reader: zero-shot tables, and a corrupt image caught before training (fail) or left out."""
    name, reader = READERS[tree]
    root = request.getfixturevalue(tree)
    options = {"dir": "images"} if name == "folder" else {}
    train, test = reader.read(root, config(name, allow_subset=True, options=options))
    assert (train.name, test.name) == ("train", "test")
    assert not set(train.class_names) & set(test.class_names)
    for table in (train, test):
        assert np.array_equal(np.unique(table.labels), np.arange(table.num_classes))
    corrupt = test.paths[-1]
    with open(corrupt, "r+b") as handle:
        handle.truncate(os.path.getsize(corrupt) // 2)
    with pytest.raises(
        DatasetError,
        match=f"1 of {len(test)} images of the test table cannot be used: {corrupt} \\(truncated\\)",
    ):
        scan.apply_bad_image_policy(test, "fail", cache_dir=tmp_path / "cache")
    kept, report = scan.apply_bad_image_policy(test, "skip", cache_dir=tmp_path / "cache")
    assert len(kept) == len(test) - 1 and report.skipped == 1


# ------------------------------------------------------------------------------ bad rows (data.on_bad_row)


def _list_file(root, lines: list[bytes], name="list.txt"):
    (root / name).write_bytes(b"\n".join(lines) + b"\n")
    return name


def _rows(count: int, start: int = 1) -> list[bytes]:
    return [f"{i} images/{i}.jpg".encode() for i in range(start, start + count)]


def test_skip_leaves_bad_rows_out_and_records_them(tmp_path):
    lines = _rows(150) + [b"151 too many fields", b"\xff\xfe 2.jpg"] + _rows(48, start=152)
    name = _list_file(tmp_path, lines)
    files = scan.DatasetFiles("toy", tmp_path, "get toy.zip", on_bad_row="skip")
    with scan.recording_bad_rows() as reports:
        rows = files.read_rows(name, expected="<id> <path>", types=(int, str))
    assert len(rows) == 198 and rows[150] == (152, "images/152.jpg")
    assert [report.to_dict() for report in reports] == [
        {
            "file": "list.txt",
            "policy": "skip",
            "rows": 200,
            "skipped": 2,
            "bad": [{"line": 151, "reason": "expected '<id> <path>'"}, {"line": 152, "reason": "not UTF-8 text"}],
        }
    ]
    files.read_rows(name, expected="<id> <path>", types=(int, str))  # outside the block: nothing recorded
    assert len(reports) == 1
    with pytest.raises(DatasetError) as error:
        scan.DatasetFiles("toy", tmp_path, "get toy.zip").read_rows(name, expected="<id> <path>", types=(int, str))
    assert str(error.value) == (
        "list.txt: line 151: expected '<id> <path>'; fix the line, or set data.on_bad_row=skip to leave such lines out"
    )


def test_more_than_one_percent_of_bad_rows_fails_even_with_skip(tmp_path):
    files = scan.DatasetFiles("toy", tmp_path, "get toy.zip", on_bad_row="skip")
    at_limit = _list_file(tmp_path, _rows(198) + [b"x"] * 2, "two.txt")  # 2 of 200: 1%, allowed
    assert len(files.read_rows(at_limit, expected="<id> <path>", types=(int, str))) == 198
    over = _list_file(tmp_path, [b"x y"] + _rows(197) + [b"x"] * 2, "three.txt")  # 3 of 200
    with pytest.raises(DatasetError) as error:
        files.read_rows(over, expected="<id> <path>", types=(int, str))
    assert str(error.value) == (
        "three.txt: 3 of 200 rows are malformed (more than 1%; e.g. line 1: expected '<id> <path>'); "
        "the file is damaged or not the official one: get toy.zip"
    )


def test_lines_are_numbered_as_editors_number_them(tmp_path):
    """Only \\n ends a line: form feeds, \\x85 or \\u2028 inside a line, a BOM, CRLF endings do not shift numbers."""
    lines = ["\ufeff1 a.jpg", "2 b\x0cc.jpg", "3 c\x85.jpg", "4 d\u2028.jpg", "5 e.jpg", "six f.jpg"]
    name = _list_file(tmp_path, [line.encode() + b"\r" for line in lines])
    files = scan.DatasetFiles("toy", tmp_path, "get toy.zip", on_bad_row="skip")
    with pytest.raises(DatasetError, match=r"^list.txt: 4 of 6 rows are malformed \(more than 1%; e.g. line 2: "):
        files.read_rows(name, expected="<id> <path>", types=(int, str))
    with scan.recording_bad_rows() as reports, pytest.raises(DatasetError):
        files.read_rows(name, expected="<id> <path>", types=(int, str))
    assert reports == []  # a file that fails records nothing
    with pytest.raises(DatasetError, match=r"^list.txt: line 6: expected '<id> <path>'"):
        scan.DatasetFiles("toy", tmp_path, "").read_rows(
            _list_file(tmp_path, [b"\xef\xbb\xbf1 a.jpg", b"2 b.jpg\r", b"", b"3 c.jpg", b"  ", b"six f.jpg"]),
            expected="<id> <path>", types=(int, str),
        )


def test_the_count_line_counts_skipped_rows_and_the_policy_is_checked(tmp_path):
    name = _list_file(tmp_path, [b"201", b"id path"] + _rows(200) + [b"201"])
    files = scan.DatasetFiles("toy", tmp_path, "", on_bad_row="skip")
    rows = files.read_rows(name, expected="<id> <path>", types=(int, str), header="id path", count_line=True)
    assert len(rows) == 200
    with pytest.raises(DatasetError, match=r"^list.txt: line 1: expected the number of images$"):
        files.read_rows(_list_file(tmp_path, [b"\xc2\xb2"] + _rows(3)), expected="", types=(int, str), count_line=True)
    with pytest.raises(DatasetError, match="^data.on_bad_row: expected 'fail' or 'skip', got 'ignore'$"):
        scan.DatasetFiles("toy", tmp_path, "", on_bad_row="ignore")


def test_a_row_check_reports_rows_that_parse_but_cannot_be_used(tmp_path):
    name = _list_file(tmp_path, _rows(3))
    files = scan.DatasetFiles("toy", tmp_path, "")
    with pytest.raises(DatasetError, match=r"^list.txt: line 2: id 2 is unknown; fix the line"):
        files.read_rows(
            name, expected="", types=(int, str), check=lambda row: f"id {row[0]} is unknown" if row[0] == 2 else None
        )


def test_a_listed_path_with_a_nul_byte_is_missing_not_a_crash(tmp_path):
    """os.listdir raises ValueError (not OSError) for a NUL in the folder name; such a file cannot exist."""
    paths = [f"{tmp_path}/a\x00b/c.jpg", f"{tmp_path}/d\x00.jpg"]
    assert scan.find_missing(paths) == paths
