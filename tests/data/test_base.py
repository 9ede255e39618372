import numpy as np
import pytest

from unseen.data.base import Table, split_validation, table_from_labels
from unseen.errors import DatasetError


def make_table(num_classes=20, per_class=3):
    labels = np.repeat(np.arange(num_classes) * 10, per_class)  # sparse raw ids
    images = np.zeros((len(labels), 4, 4), dtype=np.uint8)
    return table_from_labels(labels, images=images, name="seen")


def test_labels_are_remapped_to_contiguous_ids_with_names():
    table = table_from_labels(["b", "a", "b", "c"], paths=["1", "2", "3", "4"])
    assert table.labels.tolist() == [1, 0, 1, 2]
    assert table.class_names == ("a", "b", "c")
    assert table.is_leave_one_out


def test_select_remaps_and_keeps_roles():
    table = table_from_labels([5, 5, 7, 9], paths=list("abcd"), is_query=np.array([1, 0, 1, 0], bool))
    sub = table.select(np.array([2, 3]))
    assert sub.labels.tolist() == [0, 1]
    assert sub.class_names == ("7", "9")
    assert sub.paths == ("c", "d")
    assert sub.is_query.tolist() == [True, False]
    assert not sub.is_leave_one_out


def test_validation_split_is_class_disjoint_seeded_and_sized():
    table = make_table(num_classes=20)
    train, val = split_validation(table, 0.15, seed=0)
    assert val.num_classes == 3 and train.num_classes == 17
    assert not set(train.class_names) & set(val.class_names)
    assert len(train) + len(val) == len(table)
    again = split_validation(table, 0.15, seed=0)[1]
    assert again.class_names == val.class_names
    assert split_validation(table, 0.15, seed=1)[1].class_names != val.class_names


def test_validation_fraction_zero_gives_an_empty_validation_table():
    train, val = split_validation(make_table(), 0.0, seed=0)
    assert len(val) == 0 and len(train) == 60


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": np.array([0, 1]), "class_names": ("a", "b")}, "exactly one of images or paths"),
        ({"labels": np.array([0, 1]), "class_names": ("a", "b"), "paths": ("x",)}, "1 paths for 2 labels"),
        ({"labels": np.array([0, 2]), "class_names": ("a", "b"), "paths": ("x", "y")}, r"labels must lie in 0\.\.1"),
    ],
)
def test_inconsistent_tables_are_rejected(kwargs, message):
    with pytest.raises(DatasetError, match=message):
        Table(**kwargs)


def test_unreadable_image_names_the_file(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    table = table_from_labels([0], paths=[bad])
    with pytest.raises(DatasetError, match=r"bad\.jpg: cannot read image"):
        table.load_image(0)
