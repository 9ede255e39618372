import numpy as np
import torch

from unseen.evaluation.protocols import leave_one_out, query_gallery, vehicleid_splits


def test_leave_one_out_queries_every_row_against_the_others():
    split = leave_one_out(4)
    assert split.query.tolist() == split.gallery.tolist() == split.self_index.tolist() == [0, 1, 2, 3]


def test_query_gallery_maps_shared_rows_to_their_gallery_position():
    query = torch.tensor([True, True, False, False, True])
    gallery = torch.tensor([False, True, True, True, True])
    split = query_gallery(query, gallery)
    assert split.query.tolist() == [0, 1, 4]
    assert split.gallery.tolist() == [1, 2, 3, 4]
    assert split.self_index.tolist() == [-1, 0, 3]


def test_vehicleid_draws_one_gallery_image_per_identity():
    labels = np.array([5, 5, 5, 7, 7, 9, 2, 2, 2, 2])
    splits = vehicleid_splits(labels, repeats=6, seed=1)
    assert len(splits) == 6
    for split in splits:
        assert sorted(labels[split.gallery.numpy()].tolist()) == [2, 5, 7, 9]
        rows = sorted(split.query.tolist() + split.gallery.tolist())
        assert rows == list(range(10))
        assert (split.self_index == -1).all()
    assert len({tuple(s.gallery.tolist()) for s in splits}) > 1  # draws differ
    again = vehicleid_splits(labels, repeats=6, seed=1)
    assert [s.gallery.tolist() for s in splits] == [s.gallery.tolist() for s in again]
