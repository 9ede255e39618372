from __future__ import annotations

import io
import urllib.error
import zipfile

import numpy as np
import pytest

from unseen.data import download, omniglot
from unseen.errors import DatasetError


@pytest.fixture(scope="module")
def real_tables(real_data_root, config):
    return omniglot.read(real_data_root, config(image_size=28))


def test_real_npz_gives_the_standard_zero_shot_split(real_tables):
    train, test = real_tables
    assert (len(train), train.num_classes) == (19_280, 964)
    assert (len(test), test.num_classes) == (13_180, 659)
    for table, name in ((train, "train"), (test, "test")):
        assert table.name == name
        assert table.images.shape[1:] == (28, 28) and table.images.dtype == np.uint8
        assert np.array_equal(np.unique(table.labels), np.arange(table.num_classes))
        assert np.all(np.bincount(table.labels) == 20)
        assert table.is_leave_one_out
    assert train.class_names[0] == "Alphabet_of_the_Magi/character01"
    assert "Japanese_(katakana)/character47" in train.class_names
    assert test.class_names[-1] == "ULOG/character26"
    alphabets = [{name.split("/")[0] for name in table.class_names} for table in (train, test)]
    assert (len(alphabets[0]), len(alphabets[1])) == (30, 20) and not alphabets[0] & alphabets[1]
    assert 200 < train.images.mean() < 255  # white paper, dark ink survives the antialiased resize


@pytest.mark.parametrize("layout", ["folders", "zips", "mixed"])
def test_official_layout_gives_the_same_tables_as_the_npz(omniglot_tree, config, layout):
    settings = config(image_size=6, allow_subset=True)
    expected = omniglot.read(omniglot_tree("npz"), settings)
    found = omniglot.read(omniglot_tree(layout), settings)
    for want, got in zip(expected, found, strict=True):
        assert got.class_names == want.class_names
        assert np.array_equal(got.labels, want.labels)
        assert np.array_equal(got.images, want.images)
    train, test = expected
    assert (len(train), train.num_classes, len(test), test.num_classes) == (39, 13, 9, 3)
    assert train.class_names[:3] == ("Alpha/character01", "Alpha/character02", "Zeta_(script)/character01")
    assert train.class_names[-1] == "Zeta_(script)/character11"
    assert train.images.shape == (39, 6, 6)


def test_images_keep_pixels_at_native_size_and_order_by_drawer(omniglot_tree, config):
    arrays = omniglot_tree.arrays
    train, test = omniglot.read(omniglot_tree("folders"), config(image_size=12, allow_subset=True))
    gamma_first = int(np.flatnonzero(~arrays["background"])[0])
    assert np.array_equal(test.images[:3], arrays["images"][gamma_first : gamma_first + 3])
    assert test.class_names[0] == "Gamma/character01"


def test_the_full_count_assertion_fires_without_allow_subset(omniglot_tree, config):
    with pytest.raises(DatasetError, match=r"found 39 train images, the canonical split has 19,280.*allow_"):
        omniglot.read(omniglot_tree("npz"), config())


def test_resize_averages_areas_when_shrinking():
    images = np.array(
        [[[0, 0, 255, 255], [0, 0, 255, 255], [255, 255, 255, 255], [255, 255, 255, 255]]], dtype=np.uint8
    )
    assert omniglot.resize(images, 2).tolist() == [[[0, 255], [255, 255]]]
    assert omniglot.resize(images, 4) is images
    assert omniglot.resize(images, 8).shape == (1, 8, 8)


def _refuse_network(*args, **kwargs):
    raise urllib.error.URLError("no network in tests")


def test_missing_data_offline_says_where_to_put_which_file(tmp_path, config, monkeypatch):
    monkeypatch.setattr(download, "urlopen", _refuse_network)
    with pytest.raises(DatasetError) as error:
        omniglot.read(tmp_path, config(download=True))
    message = str(error.value)
    assert message.startswith(
        f"omniglot: no data under {tmp_path / 'omniglot'}; put omniglot.npz "
        "(or images_background.zip + images_evaluation.zip) there, or set --data-root"
    )
    assert "download of https://raw.githubusercontent.com/brendenlake/omniglot" in message
    assert "\n" not in message
    assert not list((tmp_path / "omniglot").iterdir())  # no partial download left behind


@pytest.mark.parametrize("variable", ["UNSEEN_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_variables_and_download_false_never_use_the_network(tmp_path, config, monkeypatch, variable):
    monkeypatch.setattr(download, "urlopen", lambda *a, **k: pytest.fail("network used"))
    monkeypatch.setenv(variable, "1")
    with pytest.raises(DatasetError, match=f"omniglot: no data under .*{variable}"):
        omniglot.read(tmp_path, config(download=True))
    monkeypatch.delenv(variable)
    with pytest.raises(DatasetError, match=r"put omniglot.npz .*data.download=false"):
        omniglot.read(tmp_path, config(download=False))


def test_a_missing_half_of_the_official_layout_is_named(omniglot_tree, config):
    root = omniglot_tree("zips")
    (root / "omniglot" / "images_evaluation.zip").unlink()
    with pytest.raises(DatasetError, match=r"has no images_evaluation.zip \(or folder\)"):
        omniglot.read(root, config(allow_subset=True))


class _Response(io.BytesIO):
    def __init__(self, data: bytes, announced: int | None = None) -> None:
        super().__init__(data)
        self.headers = {} if announced is None else {"Content-Length": str(announced)}


def test_download_is_atomic_and_then_read(omniglot_tree, tmp_path, config, monkeypatch):
    urls = []

    def serve(url, timeout):
        urls.append(url)
        data = omniglot_tree.zip_bytes(url.rsplit("/", 1)[1].removesuffix(".zip"))
        return _Response(data, announced=len(data))

    monkeypatch.setattr(download, "urlopen", serve)
    root = tmp_path / "fresh"
    train, test = omniglot.read(root, config(download=True, allow_subset=True, image_size=12))
    assert urls == [omniglot.URL.format("images_background"), omniglot.URL.format("images_evaluation")]
    assert sorted(path.name for path in (root / "omniglot").iterdir()) == [
        "images_background.zip",
        "images_evaluation.zip",
    ]
    assert (len(train), len(test)) == (39, 9)


@pytest.mark.parametrize("problem", ["not a zip", "short"])
def test_a_bad_download_leaves_nothing_behind(tmp_path, config, monkeypatch, omniglot_tree, problem):
    data = omniglot_tree.zip_bytes("images_background")
    response = (
        _Response(b"<html>rate limit</html>") if problem == "not a zip" else _Response(data, len(data) + 9)
    )
    monkeypatch.setattr(download, "urlopen", lambda url, timeout: response)
    with pytest.raises(DatasetError, match="not a zip archive" if problem == "not a zip" else "bytes"):
        omniglot.read(tmp_path, config(download=True))
    assert not list((tmp_path / "omniglot").iterdir())


def test_a_corrupt_png_is_named(omniglot_tree, config):
    root = omniglot_tree("folders")
    bad = root / "omniglot" / "images_evaluation" / "Gamma" / "character02" / "0015_02.png"
    bad.write_bytes(bad.read_bytes()[:30])
    expected = (
        r"omniglot/images_evaluation: images_evaluation/Gamma/character02/0015_02.png: cannot read image"
    )
    with pytest.raises(DatasetError, match=expected):
        omniglot.read(root, config(allow_subset=True))


def test_a_broken_zip_and_an_incomplete_npz_are_named(omniglot_tree, config):
    root = omniglot_tree("zips")
    (root / "omniglot" / "images_background.zip").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(DatasetError, match=r"^omniglot/images_background.zip: cannot read"):
        omniglot.read(root, config(allow_subset=True))
    root = omniglot_tree("npz")
    arrays = dict(np.load(root / "omniglot" / "omniglot.npz"))
    del arrays["drawer"]
    np.savez(root / "omniglot" / "omniglot.npz", **arrays)
    with pytest.raises(DatasetError, match=r"^omniglot/omniglot.npz: no array 'drawer'; expected images, "):
        omniglot.read(root, config(allow_subset=True))


def test_zip_members_outside_the_layout_are_ignored(omniglot_tree, config):
    root = omniglot_tree("zips")
    with zipfile.ZipFile(root / "omniglot" / "images_background.zip", "a") as archive:
        archive.writestr("__MACOSX/images_background/._x.png", b"junk")
        archive.writestr("images_background/README.txt", b"text")
    train, _ = omniglot.read(root, config(allow_subset=True))
    assert len(train) == 39
