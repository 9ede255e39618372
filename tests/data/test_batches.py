"""The training batches' sources: the cache choice, and the same images from every source."""

import numpy as np
import pytest
import torch
from PIL import Image

from unseen.data.base import table_from_labels
from unseen.data.batches import GIB, LoaderBatches, TensorBatches, choose_cache, decoded_bytes
from unseen.data.dataset import ImageDataset
from unseen.data.samplers import ClassBalancedBatchSampler
from unseen.data.transforms import build_transform


@pytest.fixture
def photo_table(tmp_path):
    """Ten 30×20 RGB PNG files in five classes."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(10):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return table_from_labels(np.arange(10) // 2, paths=paths, name="train")


def plan_items(table, seed=0):
    return ClassBalancedBatchSampler(table.labels, 2, 2, seed=seed).epoch(0).items()


def test_decoded_bytes_of_uniform_files_is_exact(photo_table):
    assert decoded_bytes(photo_table) == 10 * 30 * 20 * 3


def test_auto_takes_tensors_for_a_deterministic_transform_that_fits(pattern_table):
    table = pattern_table(4, 3, seed=0, name="train")
    plan = choose_cache("auto", table, deterministic=True, tensor_bytes_per_image=576, max_gb=1)
    assert (plan.kind, plan.bytes) == ("tensors", 12 * 576)
    assert choose_cache("auto", table, deterministic=False, tensor_bytes_per_image=576, max_gb=1).kind == "none"
    too_big = choose_cache("auto", table, deterministic=True, tensor_bytes_per_image=576, max_gb=12 * 576 / GIB / 2)
    assert too_big.kind == "none"


def test_auto_decodes_files_when_the_transform_is_random_or_the_tensors_do_not_fit(photo_table):
    assert choose_cache("auto", photo_table, deterministic=False, tensor_bytes_per_image=1, max_gb=1).kind == "decoded"
    limit = 10 * 30 * 20 * 3 / GIB
    assert choose_cache("auto", photo_table, deterministic=True, tensor_bytes_per_image=10**6,
                        max_gb=limit).kind == "decoded"
    assert choose_cache("auto", photo_table, deterministic=False, tensor_bytes_per_image=1,
                        max_gb=limit / 2).kind == "none"


def test_tensors_need_a_deterministic_transform(photo_table):
    with pytest.raises(ValueError, match="data.cache: 'tensors' needs a training transform without randomness"):
        choose_cache("tensors", photo_table, deterministic=False, tensor_bytes_per_image=1, max_gb=1)


def test_tensor_cache_gives_the_loaders_batches(pattern_table):
    table = pattern_table(4, 3, seed=0, name="train")
    transform = build_transform("small", 12, train=False)
    items = plan_items(table)
    cached = list(TensorBatches(table, transform, torch.device("cpu")).batches(items))
    loaded = list(LoaderBatches(table, transform, num_workers=0, pin_memory=False).batches(items))
    assert len(cached) == len(loaded) == len(items)
    for (images, labels, rows), (images2, labels2, rows2), batch in zip(cached, loaded, items, strict=True):
        assert torch.equal(images, images2) and torch.equal(labels, labels2) and torch.equal(rows, rows2)
        assert rows.tolist() == [row for row, _ in batch]
        assert labels.tolist() == table.labels[rows.numpy()].tolist()


@pytest.mark.parametrize("workers", [0, 1])
def test_decoded_files_give_the_same_random_crops_in_any_worker(photo_table, workers):
    transform = build_transform("imagenet", 16, train=True)
    items = plan_items(photo_table)
    plain = list(LoaderBatches(photo_table, transform, num_workers=0, pin_memory=False).batches(items))
    decoded = LoaderBatches(photo_table, transform, num_workers=workers, pin_memory=False, decoded=True)
    for _ in range(2):  # a second epoch through the same (persistent) workers
        for (images, labels, _), (images2, labels2, _) in zip(plain, decoded.batches(items), strict=True):
            assert torch.equal(images, images2) and torch.equal(labels, labels2)


def test_a_seeded_sample_leaves_the_global_generator_alone(photo_table):
    dataset = ImageDataset(photo_table, build_transform("imagenet", 16, train=True))
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    first = dataset[(2, 11)][0]
    assert torch.equal(torch.rand(3), expected)
    assert torch.equal(dataset[(2, 11)][0], first)
    assert not torch.equal(dataset[(2, 12)][0], first)


def test_imagenet_without_jitter_trains_on_the_eval_geometry(photo_table):
    image = photo_table.load_image(0)
    torch.manual_seed(0)
    assert torch.equal(build_transform("imagenet", 16, train=True, jitter=False)(image),
                       build_transform("imagenet", 16, train=False)(image))
