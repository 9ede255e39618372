from __future__ import annotations

import pytest

from unseen.config import DataConfig
from unseen.data import build_splits
from unseen.errors import DatasetError


@pytest.fixture
def dirty_cub(tmp_path, build, monkeypatch):
    """CUB with 200 more listed images that are not there (left out under allow_subset), then a malformed line
    (line 210) and an image without a class (line 211): 2 bad rows of 211, under the 1% limit."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "CUB_200_2011"
    build.cub(folder)
    absent = range(10, 210)
    with open(folder / "images.txt", "a") as images:
        images.writelines(f"{i} 001.Black_footed_Albatross/absent_{i}.jpg\n" for i in absent)
        images.write("210 002.Laysan_Albatross/a.jpg extra\n211 002.Laysan_Albatross/b.jpg\n")
    with open(folder / "image_class_labels.txt", "a") as labels:
        labels.writelines(f"{i} 1\n" for i in absent)
    return tmp_path


def test_skipped_rows_are_reported_in_the_split_summary(dirty_cub):
    config = DataConfig(name="cub", root=str(dirty_cub), allow_subset=True, on_bad_row="skip", val_fraction=0.0)
    splits = build_splits(config)
    assert (len(splits.train), len(splits.test)) == (5, 4)
    assert splits.bad_rows == [
        {
            "file": "CUB_200_2011/images.txt",
            "policy": "skip",
            "rows": 211,
            "skipped": 2,
            "bad": [
                {"line": 210, "reason": "expected '<id> <path>'"},
                {"line": 211, "reason": "image 211 has no class in CUB_200_2011/image_class_labels.txt"},
            ],
        }
    ]
    summary = splits.describe()
    assert (summary["bad_rows_skipped"], summary["bad_images_skipped"]) == (2, 0)
    assert summary["bad_rows"] == [{"file": "CUB_200_2011/images.txt", "skipped": 2, "lines": [210, 211]}]


def test_bad_rows_fail_by_default(dirty_cub):
    with pytest.raises(DatasetError, match=r"^CUB_200_2011/images.txt: line 210: expected '<id> <path>'; fix"):
        build_splits(DataConfig(name="cub", root=str(dirty_cub), allow_subset=True, val_fraction=0.0))


def test_clean_data_reports_no_bad_rows(tmp_path, build, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    build.sop(tmp_path / "Stanford_Online_Products")
    splits = build_splits(DataConfig(name="sop", root=str(tmp_path), allow_subset=True, on_bad_row="skip",
                                     val_fraction=0.0))
    assert splits.bad_rows == [] and splits.describe()["bad_rows"] == []
