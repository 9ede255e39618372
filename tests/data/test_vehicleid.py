from __future__ import annotations

import pytest

from unseen.data import vehicleid
from unseen.errors import DatasetError


@pytest.mark.parametrize(
    ("test_list", "vehicles", "images"), [(None, 4, 9), ("test_list_800", 2, 4), ("test_list_1600.txt", 3, 6)]
)
def test_train_list_and_the_chosen_test_list(vehicleid_tree, config, test_list, vehicles, images):
    options = {} if test_list is None else {"test_list": test_list}
    train, test = vehicleid.read(vehicleid_tree, config("vehicleid", allow_subset=True, options=options))
    assert (len(train), train.class_names) == (6, ("00001", "00002", "00005"))
    assert (len(test), test.num_classes) == (images, vehicles)
    assert test.is_leave_one_out
    assert train.paths[0] == str(vehicleid_tree / "VehicleID_V1.0" / "image" / "0001000.jpg")


def test_vehicle_counts_are_enforced_without_allow_subset(vehicleid_tree, config):
    with pytest.raises(
        DatasetError, match=r"^vehicleid: found 3 train classes, the canonical split has 13,164"
    ):
        vehicleid.read(vehicleid_tree, config("vehicleid"))


def test_a_bad_test_list_option_is_refused(vehicleid_tree, config):
    expected = (
        r"^data.options.test_list: expected test_list_800, test_list_1600 or " r"test_list_2400, got 'large'"
    )
    with pytest.raises(DatasetError, match=expected):
        vehicleid.read(vehicleid_tree, config("vehicleid", options={"test_list": "large"}))
    with pytest.raises(DatasetError, match=r"^VehicleID_V1.0/train_test_split/test_list_3200.txt: not found"):
        vehicleid.read(vehicleid_tree, config("vehicleid", options={"test_list": "test_list_3200"}))


def test_a_wrong_column_count_is_named(vehicleid_tree, config):
    path = vehicleid_tree / "VehicleID_V1.0" / "train_test_split" / "train_list.txt"
    path.write_text(path.read_text().replace("0002001 2", "0002001 2 blue"))
    expected = (
        r"^VehicleID_V1.0/train_test_split/train_list.txt: line 4: expected '<image_name> <vehicle_id>'; fix the line"
    )
    with pytest.raises(DatasetError, match=expected):
        vehicleid.read(vehicleid_tree, config("vehicleid", allow_subset=True))


def test_a_missing_image_is_named(vehicleid_tree, config):
    (vehicleid_tree / "VehicleID_V1.0" / "image" / "0014002.jpg").unlink()
    expected = (
        r"^vehicleid: 1 of 15 images listed in .* are missing, " r"e.g. VehicleID_V1.0/image/0014002.jpg"
    )
    with pytest.raises(DatasetError, match=expected):
        vehicleid.read(vehicleid_tree, config("vehicleid"))
