from __future__ import annotations

import pytest

from unseen.data import sop
from unseen.errors import DatasetError


def test_the_published_train_and_test_files(sop_tree, config):
    train, test = sop.read(sop_tree, config("sop", allow_subset=True))
    assert (len(train), train.class_names) == (5, ("00001", "00002", "00003"))
    assert (len(test), test.class_names) == (5, ("11319", "11320"))
    assert train.paths[0] == str(
        sop_tree / "Stanford_Online_Products" / "bicycle_final" / "111085122872_0.JPG"
    )
    assert test.labels.tolist() == [0, 0, 1, 1, 1] and test.is_leave_one_out


def test_the_canonical_counts_are_enforced_without_allow_subset(sop_tree, config):
    with pytest.raises(DatasetError, match=r"^sop: found 5 train images, the canonical split has 59,551"):
        sop.read(sop_tree, config("sop"))


def test_a_missing_header_is_named(sop_tree, config):
    path = sop_tree / "Stanford_Online_Products" / "Ebay_test.txt"
    path.write_text("\n".join(path.read_text().splitlines()[1:]))
    expected = (
        r"^Stanford_Online_Products/Ebay_test.txt: line 1: expected the header "
        r"'image_id class_id super_class_id path'$"
    )
    with pytest.raises(DatasetError, match=expected):
        sop.read(sop_tree, config("sop", allow_subset=True))


def test_a_wrong_column_count_is_named(sop_tree, config):
    path = sop_tree / "Stanford_Online_Products" / "Ebay_train.txt"
    path.write_text(path.read_text().replace("1 1 1 bicycle_final", "1 1 bicycle_final"))
    expected = (
        r"^Stanford_Online_Products/Ebay_train.txt: line 2: expected "
        r"'<image_id> <class_id> <super_class_id> <path>'; fix the line"
    )
    with pytest.raises(DatasetError, match=expected):
        sop.read(sop_tree, config("sop", allow_subset=True))


def test_a_missing_file_and_a_class_in_both_splits_are_named(sop_tree, config):
    test_list = sop_tree / "Stanford_Online_Products" / "Ebay_test.txt"
    text = test_list.read_text()
    test_list.write_text(text.replace(" 11320 3 ", " 3 3 "))
    with pytest.raises(DatasetError, match=r"^sop: 1 classes are in both train and test \(e.g. '00003'\)"):
        sop.read(sop_tree, config("sop", allow_subset=True))
    test_list.unlink()
    expected = r"^Stanford_Online_Products/Ebay_test.txt: not found under .*" r"Stanford_Online_Products.zip"
    with pytest.raises(DatasetError, match=expected):
        sop.read(sop_tree, config("sop", allow_subset=True))
