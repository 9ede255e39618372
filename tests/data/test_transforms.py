import numpy as np
import pytest
import torch
from PIL import Image

from unseen.data.transforms import build_transform


def character(size=32):
    image = np.full((size, size), 255, dtype=np.uint8)  # white paper
    image[10:20, 14:17] = 0  # a black stroke
    return Image.fromarray(image)


def test_small_eval_resizes_and_normalizes_to_minus_one_one():
    out = build_transform("small", 28, train=False)(character())
    assert out.shape == (1, 28, 28) and out.dtype == torch.float32
    assert out.max().item() == pytest.approx(1.0) and out.min().item() < 0


def test_small_train_jitter_pads_with_the_background_and_is_seeded():
    transform = build_transform("small", 28, train=True)
    torch.manual_seed(3)
    a = transform(character())
    torch.manual_seed(3)
    b = transform(character())
    assert torch.equal(a, b)
    # the padded corners are paper (1.0 after normalization), never black
    assert a[0, 0, 0].item() == pytest.approx(1.0) and a[0, -1, -1].item() == pytest.approx(1.0)
    torch.manual_seed(4)
    assert not torch.equal(a, transform(character()))


def test_imagenet_preset_sizes_and_backbone_normalization():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (375, 500, 3), dtype=np.uint8))
    train = build_transform("imagenet", 224, train=True, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))(image)
    test = build_transform("imagenet", 224, train=False)(image)
    assert train.shape == test.shape == (3, 224, 224)
    assert train.min().item() >= -2.0 - 1e-6 and train.max().item() <= 2.0 + 1e-6


def test_unknown_preset():
    with pytest.raises(ValueError, match="data.preset"):
        build_transform("huge", 28, train=False)
