from __future__ import annotations

import numpy as np
import pytest

from unseen.data import folder
from unseen.errors import DatasetError


def test_one_folder_split_by_class_with_a_seeded_fraction(folder_tree, config):
    settings = config("folder", options={"dir": "images", "test_fraction": 0.5, "seed": 3})
    train, test = folder.read(folder_tree, settings)
    assert (train.num_classes, test.num_classes) == (3, 3)
    assert not set(train.class_names) & set(test.class_names)
    assert len(train) + len(test) == 16  # 15 images + cat/more/deep.JPG; hidden and text files ignored
    again, _ = folder.read(folder_tree, settings)
    assert again.class_names == train.class_names
    other = {
        folder.read(folder_tree, config("folder", options={"dir": "images", "seed": s}))[0].class_names
        for s in range(8)
    }
    assert len(other) > 1
    cat = [t for t in (train, test) if "cat" in t.class_names][0]
    assert any(path.endswith("cat/more/deep.JPG") for path in cat.paths)


def test_the_data_root_itself_is_the_default_folder(folder_tree, config):
    train, test = folder.read(folder_tree / "images", config("folder"))
    assert train.num_classes + test.num_classes == 6


def test_train_dir_and_test_dir(folder_tree, config):
    (folder_tree / "unseen").mkdir()
    for name in ("eel", "fox"):
        (folder_tree / "images" / name).rename(folder_tree / "unseen" / name)
    train, test = folder.read(
        folder_tree, config("folder", options={"train_dir": "images", "test_dir": "unseen"})
    )
    assert train.class_names == ("ant", "bee", "cat", "dog") and test.class_names == ("eel", "fox")
    assert test.is_leave_one_out


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"train_dir": "images"}, "give train_dir and test_dir"),
        ({"train_dir": "images", "test_dir": "images", "seed": 1}, "give train_dir and test_dir"),
        (
            {"train_dir": "images", "test_dir": "images"},
            r"6 classes are in both train and test \(e.g. 'ant'\)",
        ),
        ({"dir": "images", "test_fraction": 0.01}, "test_fraction=0.01 of 6 classes gives 0 test classes"),
        ({"dir": "images", "test_fraction": "half"}, "expected test_fraction in"),
        ({"dir": "nowhere"}, "nowhere: not a folder"),
        ({"folder": "images"}, "unknown option 'folder' for folder; known: dir, seed, test_dir"),
    ],
)
def test_bad_options_are_named(folder_tree, config, options, message):
    with pytest.raises(DatasetError, match=message):
        folder.read(folder_tree, config("folder", options=options))


def test_an_empty_class_folder_is_named(folder_tree, config):
    (folder_tree / "images" / "gnu").mkdir()
    with pytest.raises(DatasetError, match=r"^images/gnu: no images \(.jpg .jpeg"):
        folder.read(folder_tree, config("folder", options={"dir": "images"}))


def _manifest(root, text, name="manifest.csv"):
    (root / name).write_text(text)
    return root


def test_a_manifest_with_split_and_query_gallery_columns(folder_tree, config):
    root = _manifest(
        folder_tree,
        "path,label,split,is_query,is_gallery\n"
        "images/ant/0.jpg,ant,train,,\n"
        "images/ant/1.jpg,ant,train,,\n"
        "images/bee/0.jpg,bee,train,1,1\n"
        "\n"
        "images/cat/0.jpg,7,test,1,0\n"
        "images/cat/1.jpg,7,TEST,yes,no\n"
        "images/dog/0.jpg,10,test,0,1\n"
        "images/dog/1.jpg,10,test,false,true\n"
        "images/cat/more/deep.JPG,10,test,,\n",
    )
    train, test = folder.read(root, config("csv"))
    assert train.class_names == ("ant", "bee") and train.is_leave_one_out
    assert test.class_names == ("10", "7")
    assert test.labels.tolist() == [1, 1, 0, 0, 0]
    assert test.is_query.tolist() == [True, True, False, False, True]
    assert test.is_gallery.tolist() == [False, False, True, True, True]
    assert test.paths[0] == str(root / "images" / "cat" / "0.jpg")


def test_a_manifest_without_split_is_split_by_class_in_any_column_order(folder_tree, config):
    rows = [f"{name},images/{name}/0.jpg" for name in ("ant", "bee", "cat", "dog", "eel", "fox")]
    root = _manifest(folder_tree, "label,path\n" + "\n".join(rows), "m.csv")
    train, test = folder.read(root, config("folder", options={"manifest": "m.csv", "test_fraction": 1 / 3}))
    assert (train.num_classes, test.num_classes) == (4, 2)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "file,label\na.jpg,x\n",
            r"line 1: expected the header 'path,label\[,split,is_query,is_gallery\]', got "
            r"'file,label'",
        ),
        (
            "path,label,split\nimages/ant/0.jpg,ant\n",
            r"line 2: expected 3 columns \(path,label,split\), got 2",
        ),
        ("path,label,split\nimages/ant/0.jpg,ant,val\n", "line 2: split must be train or test, got 'val'"),
        ("path,label,split,is_query\nimages/ant/0.jpg,ant,test,maybe\n", "line 2: is_query must be 1/0"),
        ("path,label\nimages/ant/0.jpg,\n", "line 2: expected a path and a label"),
        ("path,label\n", "no rows after the header"),
    ],
)
def test_manifest_errors_are_named(folder_tree, config, text, message):
    root = _manifest(folder_tree, text)
    with pytest.raises(DatasetError, match=r"^manifest.csv: " + message):
        folder.read(root, config("csv"))


def test_manifest_missing_images_and_missing_manifest(folder_tree, config):
    root = _manifest(
        folder_tree,
        "path,label,split\nimages/ant/0.jpg,ant,train\nimages/ant/9.jpg,ant,train\n"
        "images/bee/0.jpg,bee,test\n",
    )
    expected = r"^csv: 1 of 3 images listed in manifest.csv are missing, " r"e.g. images/ant/9.jpg"
    with pytest.raises(DatasetError, match=expected):
        folder.read(root, config("csv"))
    train, _ = folder.read(root, config("csv", allow_subset=True))
    assert len(train) == 1
    with pytest.raises(DatasetError, match=r"^other.csv: not found under"):
        folder.read(root, config("csv", options={"manifest": "other.csv"}))


def test_split_by_class_is_seeded_and_class_disjoint():
    names = np.repeat([f"c{i}" for i in range(10)], 3)
    first = folder.split_by_class(names, {"test_fraction": 0.3, "seed": 1})
    assert np.array_equal(first, folder.split_by_class(names, {"test_fraction": 0.3, "seed": 1}))
    assert len(set(names[~first])) == 3 and not set(names[first]) & set(names[~first])


def test_manifest_rows_can_be_skipped_like_list_lines(folder_tree, config):
    rows = [f"images/{name}/0.jpg,{name}" for name in ("ant", "bee", "cat", "dog", "eel", "fox")] * 20
    root = _manifest(folder_tree, "path,label\n" + "\n".join(rows[:50] + ["images/ant/1.jpg"] + rows[50:]) + "\n")
    with pytest.raises(DatasetError, match=r"^manifest.csv: line 52: expected 2 columns \(path,label\), got 1; fix"):
        folder.read(root, config("csv"))
    train, test = folder.read(root, config("csv", on_bad_row="skip"))
    assert len(train) + len(test) == 120
