from __future__ import annotations

import shutil

import numpy as np
import pytest

from unseen.data import cars
from unseen.errors import DatasetError


def test_the_split_is_by_class_not_by_the_mat_test_flag(cars_tree, config):
    train, test = cars.read(cars_tree, config("cars", allow_subset=True))
    assert train.class_names == ("001.Make Model 1 2012", "002.Make Model 2 2012", "098.Make Model 98 2012")
    assert test.class_names == ("099.Make Model 99 2012", "196.Make Model 196 2012")
    assert (len(train), len(test)) == (5, 5)
    assert train.paths[0] == str(cars_tree / "cars196" / "car_ims" / "000001.jpg")
    assert test.is_leave_one_out and np.bincount(test.labels).tolist() == [2, 3]


def test_the_canonical_counts_are_enforced_without_allow_subset(cars_tree, config):
    with pytest.raises(DatasetError, match=r"^cars: found 5 train images, the canonical split has 8,054"):
        cars.read(cars_tree, config("cars"))


def test_the_class_folder_layout(cars_tree, config):
    folder = cars_tree / "cars196"
    train_mat, test_mat = cars.read(cars_tree, config("cars", allow_subset=True))
    for table in (train_mat, test_mat):
        for path, label in zip(table.paths, table.labels, strict=True):
            target = folder / "images" / table.class_names[label] / path.rsplit("/", 1)[1]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    (folder / "cars_annos.mat").unlink()
    train, test = cars.read(cars_tree, config("cars", allow_subset=True))
    assert train.class_names == train_mat.class_names and test.class_names == test_mat.class_names
    assert np.array_equal(test.labels, test_mat.labels)


def test_class_folders_without_numbers_are_numbered_in_sorted_order(tmp_path, config, cars_tree):
    image = cars_tree / "cars196" / "car_ims" / "000001.jpg"
    root = tmp_path / "by_name"
    for k in range(196):
        (root / "cars196" / "images" / f"Model {k:03d}").mkdir(parents=True)
        shutil.copy(image, root / "cars196" / "images" / f"Model {k:03d}" / "a.jpg")
    train, test = cars.read(root, config("cars", allow_subset=True))
    assert (train.class_names[-1], test.class_names[0]) == ("Model 097", "Model 098")


def test_no_data_says_what_to_put_where(tmp_path, config):
    expected = (
        r"^cars: no dataset files under .*; looked for cars_annos.mat \+ car_ims/ in cars196/ or the root itself "
        r"\(car_ims.tgz extracted beside cars_annos.mat\); images/ in cars196/ \(one folder of images per class\); "
        r"get car_ims.tgz and cars_annos.mat"
    )
    with pytest.raises(DatasetError, match=expected):
        cars.read(tmp_path, config("cars"))


def test_a_broken_annotation_file_is_named(cars_tree, config):
    import scipy.io

    (cars_tree / "cars196" / "cars_annos.mat").write_bytes(b"not a mat file")
    with pytest.raises(DatasetError, match=r"^cars196/cars_annos.mat: cannot read"):
        cars.read(cars_tree, config("cars", allow_subset=True))
    scipy.io.savemat(cars_tree / "cars196" / "cars_annos.mat", {"annotations": np.zeros(3)})
    expected = (
        r"^cars196/cars_annos.mat: expected a struct array 'annotations' with "
        r"fields relative_im_path, class"
    )
    with pytest.raises(DatasetError, match=expected):
        cars.read(cars_tree, config("cars", allow_subset=True))


def test_missing_images_are_named(cars_tree, config):
    (cars_tree / "cars196" / "car_ims" / "000004.jpg").unlink()
    expected = (
        r"^cars: 1 of 10 images listed in cars196/cars_annos.mat are missing, "
        r"e.g. cars196/car_ims/000004.jpg"
    )
    with pytest.raises(DatasetError, match=expected):
        cars.read(cars_tree, config("cars"))
