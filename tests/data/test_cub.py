from __future__ import annotations

import numpy as np
import pytest

from unseen.data import cub
from unseen.errors import DatasetError


def test_species_1_to_100_train_and_101_to_200_test(cub_tree, config):
    train, test = cub.read(cub_tree, config("cub", allow_subset=True))
    assert (train.name, len(train), train.class_names) == (
        "train",
        5,
        ("001.Black_footed_Albatross", "002.Laysan_Albatross"),
    )
    assert (test.name, len(test), test.class_names) == (
        "test",
        4,
        ("101.White_Pelican", "200.Common_Yellowthroat"),
    )
    assert train.labels.tolist() == [0, 0, 1, 1, 1] and test.labels.tolist() == [0, 0, 1, 1]
    assert test.is_leave_one_out and train.images is None
    assert train.paths[0] == str(
        cub_tree / "CUB_200_2011/images/001.Black_footed_Albatross/Black_footed_Albatross_0000_1.jpg"
    )
    assert train.load_image(0).size == (20, 15)


def test_the_canonical_counts_are_enforced_without_allow_subset(cub_tree, config):
    expected = (
        r"^cub: found 5 train images, the canonical split has 5,864; .*"
        r"CUB_200_2011.tgz .*data.allow_subset=true"
    )
    with pytest.raises(DatasetError, match=expected):
        cub.read(cub_tree, config("cub"))


def test_a_missing_list_file_says_where_to_get_it(cub_tree, config):
    (cub_tree / "CUB_200_2011" / "image_class_labels.txt").unlink()
    expected = r"^CUB_200_2011/image_class_labels.txt: not found under .*; get CUB_200_2011.tgz"
    with pytest.raises(DatasetError, match=expected):
        cub.read(cub_tree, config("cub", allow_subset=True))


@pytest.mark.parametrize("line", ["3", "3 a.jpg extra", "x 002.Laysan_Albatross/a.jpg"])
def test_a_malformed_line_is_named(cub_tree, config, line):
    path = cub_tree / "CUB_200_2011" / "images.txt"
    lines = path.read_text().splitlines()
    lines[2] = line
    path.write_text("\n".join(lines))
    expected = r"^CUB_200_2011/images.txt: line 3: expected '<id> <path>'; fix the line, or set data.on_bad_row=skip"
    with pytest.raises(DatasetError, match=expected):
        cub.read(cub_tree, config("cub", allow_subset=True))


def test_an_image_without_a_class_is_named(cub_tree, config):
    path = cub_tree / "CUB_200_2011" / "image_class_labels.txt"
    path.write_text("\n".join(path.read_text().splitlines()[:-1]))
    expected = r"^CUB_200_2011/images.txt: line 9: image 9 has no class in CUB_200_2011/image_class_labels.txt; fix"
    with pytest.raises(DatasetError, match=expected):
        cub.read(cub_tree, config("cub", allow_subset=True))


def test_missing_images_fail_unless_a_subset_is_intended(cub_tree, config):
    missing = cub_tree / "CUB_200_2011/images/101.White_Pelican/White_Pelican_0001_7.jpg"
    missing.unlink()
    expected = (
        r"^cub: 1 of 9 images listed in CUB_200_2011/images.txt are missing, "
        r"e.g. CUB_200_2011/images/101.White_Pelican/White_Pelican_0001_7.jpg"
    )
    with pytest.raises(DatasetError, match=expected):
        cub.read(cub_tree, config("cub"))
    _, test = cub.read(cub_tree, config("cub", allow_subset=True))
    assert len(test) == 3 and str(missing) not in test.paths
    assert np.bincount(test.labels).tolist() == [1, 2]


def test_no_images_folder_is_named(cub_tree, config):
    import shutil

    shutil.rmtree(cub_tree / "CUB_200_2011" / "images")
    with pytest.raises(DatasetError, match="^CUB_200_2011/images: not found under"):
        cub.read(cub_tree, config("cub", allow_subset=True))


def test_unknown_options_are_refused(cub_tree, config):
    with pytest.raises(DatasetError, match="data.options: unknown option 'test_list' for cub; known: none"):
        cub.read(cub_tree, config("cub", options={"test_list": "x"}))
