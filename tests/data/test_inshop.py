from __future__ import annotations

import pytest

from unseen.data import inshop
from unseen.errors import DatasetError


def test_train_and_the_query_gallery_test_split(inshop_tree, config):
    train, test = inshop.read(inshop_tree, config("inshop", allow_subset=True))
    assert (len(train), train.class_names) == (5, ("id_00000001", "id_00000002"))
    assert train.is_leave_one_out
    assert (len(test), test.class_names) == (6, ("id_00000007", "id_00000008"))
    assert test.is_query.tolist() == [True, True, False, True, False, False]
    assert test.is_gallery.tolist() == [False, False, True, False, True, True]
    assert not test.is_leave_one_out
    assert test.paths[2] == str(inshop_tree / "inshop" / "img/WOMEN/Dresses/id_00000007/03_1_front.jpg")


def test_the_canonical_counts_are_enforced_without_allow_subset(inshop_tree, config):
    with pytest.raises(DatasetError, match=r"^inshop: found 5 train images, the canonical split has 25,882"):
        inshop.read(inshop_tree, config("inshop"))


def _edit(root, change):
    path = root / "inshop" / "list_eval_partition.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(change(lines)) + "\n")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda lines: lines[1:], r"line 1: expected the number of images$"),
        (
            lambda lines: [lines[0], *lines[2:]],
            r"line 2: expected the header 'image_name item_id evaluation_status'",
        ),
        (
            lambda lines: [*lines[:4], lines[4].replace(" train", " val")],
            r"line 5: expected '<image_name> <item_id> "
            r"train\|query\|gallery'; fix the line",
        ),
        (lambda lines: [*lines[:4], lines[4].rsplit(" ", 1)[0]], r"line 5: expected '<image_name> <item_id>"),
        (lambda lines: lines[:-3], r"line 1 announces 11 images but the file lists 8; .*allow_subset"),
    ],
)
def test_malformed_lists_are_named(inshop_tree, config, change, message):
    _edit(inshop_tree, change)
    with pytest.raises(DatasetError, match=r"^inshop/list_eval_partition.txt: " + message):
        inshop.read(inshop_tree, config("inshop"))


def test_a_missing_image_is_named(inshop_tree, config):
    (inshop_tree / "inshop" / "img/WOMEN/Dresses/id_00000008/01_1_front.jpg").unlink()
    expected = (
        r"^inshop: 1 of 11 images listed in inshop/list_eval_partition.txt "
        r"are missing, e.g. inshop/img/WOMEN/Dresses/id_00000008/01_1_front.jpg"
    )
    with pytest.raises(DatasetError, match=expected):
        inshop.read(inshop_tree, config("inshop"))
    _, test = inshop.read(inshop_tree, config("inshop", allow_subset=True))
    assert (int(test.is_query.sum()), int(test.is_gallery.sum())) == (2, 3)
