import numpy as np
import pytest

from unseen.data.samplers import ClassBalancedBatchSampler
from unseen.errors import ConfigError


def labels_with_counts(counts):
    return np.repeat(np.arange(len(counts)), counts)


def test_every_class_once_per_epoch_as_p_distinct_classes_of_k():
    labels = labels_with_counts([6] * 10)
    sampler = ClassBalancedBatchSampler(labels, classes_per_batch=4, samples_per_class=3, seed=1)
    plan = sampler.epoch(0)
    assert len(plan) == len(sampler) == 3  # ceil(10 / 4)
    seen = set()
    for rows in plan.indices:
        classes, counts = np.unique(labels[rows], return_counts=True)
        assert len(classes) == 4 and set(counts) == {3}
        for c in classes:  # K distinct images per class when the class has K or more
            assert len(set(rows[labels[rows] == c])) == 3
        seen |= set(classes.tolist())
    assert seen == set(range(10))
    # the first two batches hold 8 distinct classes; the last tops up the 2 left with 2 others
    assert len(set(labels[np.concatenate(plan.indices[:2])])) == 8


def test_deterministic_per_seed_and_epoch():
    labels = labels_with_counts([5] * 12)
    a = ClassBalancedBatchSampler(labels, 4, 2, seed=3)
    b = ClassBalancedBatchSampler(labels, 4, 2, seed=3)
    for epoch in (0, 1, 7):
        pa, pb = a.epoch(epoch), b.epoch(epoch)
        assert all(np.array_equal(x, y) for x, y in zip(pa.indices, pb.indices, strict=True))
        assert all(np.array_equal(x, y) for x, y in zip(pa.seeds, pb.seeds, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a.epoch(0).indices, a.epoch(1).indices, strict=True))
    other = ClassBalancedBatchSampler(labels, 4, 2, seed=4).epoch(0)
    assert not all(np.array_equal(x, y) for x, y in zip(a.epoch(0).indices, other.indices, strict=True))


def test_small_classes_repeat_keeps_all_distinct_images_then_repeats():
    labels = labels_with_counts([2, 4, 4, 1])
    sampler = ClassBalancedBatchSampler(labels, 3, 4, seed=0, small_classes="repeat")
    assert sampler.excluded == [3]  # a single image cannot form a positive pair
    for rows in sampler.epoch(0).indices:
        small = rows[labels[rows] == 0]
        assert len(small) == 4 and set(small.tolist()) == {0, 1}
        assert 3 not in labels[rows]


def test_small_classes_drop():
    labels = labels_with_counts([2, 4, 4, 4, 1])
    sampler = ClassBalancedBatchSampler(labels, 3, 4, seed=0, small_classes="drop")
    assert sampler.excluded == [0, 4]
    assert all(0 not in labels[rows] for rows in sampler.epoch(0).indices)


def test_too_few_classes_is_a_config_error():
    with pytest.raises(ConfigError, match=r"sampler\.classes_per_batch=8, but only 3 classes"):
        ClassBalancedBatchSampler(labels_with_counts([4, 4, 4]), 8, 2)


def test_items_pair_rows_with_seeds_and_skip_done_batches():
    sampler = ClassBalancedBatchSampler(labels_with_counts([4] * 6), 2, 2, seed=0)
    plan = sampler.epoch(0)
    items = plan.items(start=1)
    assert len(items) == len(plan) - 1
    assert [row for row, _ in items[0]] == plan.indices[1].tolist()
    assert [seed for _, seed in items[0]] == plan.seeds[1].tolist()


def test_shards_of_a_plan_are_contiguous_parts_whose_union_is_the_plan():
    plan = ClassBalancedBatchSampler(labels_with_counts([4] * 9), classes_per_batch=3, samples_per_class=3, seed=2,
                                     ).epoch(0)
    for world_size in (1, 2, 3, 4):  # 9 images per batch: parts of 9; 5 + 4; 3 × 3; 3 + 2 + 2 + 2
        parts = [plan.shard(rank, world_size) for rank in range(world_size)]
        for b in range(len(plan)):
            np.testing.assert_array_equal(np.concatenate([p.indices[b] for p in parts]), plan.indices[b])
            np.testing.assert_array_equal(np.concatenate([p.seeds[b] for p in parts]), plan.seeds[b])
            assert max(len(p.indices[b]) for p in parts) - min(len(p.indices[b]) for p in parts) <= 1
        assert all(p.streams == plan.streams and len(p) == len(plan) for p in parts)
