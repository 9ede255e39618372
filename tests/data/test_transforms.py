import numpy as np
import pytest
import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as F
from PIL import Image

from unseen.data.transforms import JITTER, BatchBorderFillAffine, BorderFillAffine, _inverse_affine, build_transform


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


def blob(height=28, width=28):
    """A smooth grey image with one dark bar: interpolation differences stay small, geometry errors do not."""
    y, x = np.mgrid[0:height, 0:width]
    image = 200 - 150 * np.exp(-((x - 0.4 * width) ** 2 + (y - 0.55 * height) ** 2) / 30)
    image[5:8, 3:width - 3] = 20
    return image.astype(np.uint8)


def batch_of(image):
    return torch.from_numpy(image).float()[None, None]


def test_batch_jitter_matches_the_per_image_jitter_for_the_same_seeds():
    image = blob()
    seeds = [0, 1, 2, 3, 11, 12345]
    batch = BatchBorderFillAffine(**JITTER)(batch_of(image).repeat(len(seeds), 1, 1, 1), seeds)
    for i, seed in enumerate(seeds):
        torch.manual_seed(seed)
        reference = np.asarray(BorderFillAffine(**JITTER)(Image.fromarray(image))).astype(float)
        moved = np.abs(reference - image).mean()
        difference = np.abs(reference - batch[i, 0].numpy()).mean()
        assert moved > 5 and difference < 0.5, (seed, moved, difference)  # bilinear rounding only


def theta(angle, shift_x, shift_y, scale, shear, width, height):
    values = (torch.tensor([v], dtype=torch.float64) for v in (angle, shift_x, shift_y, scale, shear))
    return _inverse_affine(*values, width, height)


def test_zero_jitter_is_the_identity_matrix():
    assert torch.equal(theta(0, 0, 0, 1, 0, 28, 28), torch.tensor([[[1.0, 0, 0], [0, 1, 0]]], dtype=torch.float64))


@pytest.mark.parametrize("height,width", [(28, 28), (24, 36)])
@pytest.mark.parametrize("params", [(10, 0, 0, 1, 0), (0, 0.1, -0.1, 1, 0), (0, 0, 0, 1.1, 0), (0, 0, 0, 1, 8),
                                    (-7, -0.07, 0.05, 0.92, -8)])
def test_each_jitter_parameter_follows_torchvision_affine(params, height, width):
    image = blob(height, width)
    angle, shift_x, shift_y, scale, shear = params
    reference = F.affine(Image.fromarray(image), angle=angle, scale=scale, shear=[shear, 0.0],
                         translate=[round(shift_x * width), round(shift_y * height)],
                         interpolation=T.InterpolationMode.BILINEAR, fill=200)
    grid = torch.nn.functional.affine_grid(theta(*params, width, height).float(), [1, 1, height, width],
                                           align_corners=False)
    ours = torch.nn.functional.grid_sample(batch_of(image) - 200, grid, align_corners=False)[0, 0] + 200
    assert np.abs(np.asarray(reference).astype(float) - ours.numpy()).mean() < 0.5


def test_batch_jitter_pads_with_each_images_own_border_and_keeps_dtype_and_shape():
    paper, ink = torch.full((1, 1, 16, 16), 0.8), torch.full((1, 1, 16, 16), -0.6)
    out = BatchBorderFillAffine(**JITTER)(torch.cat([paper, ink]), [5, 6])
    assert out.shape == (2, 1, 16, 16) and out.dtype == torch.float32
    assert torch.allclose(out[0], paper[0]) and torch.allclose(out[1], ink[0])


def test_batch_jitter_needs_one_seed_per_image():
    with pytest.raises(ValueError, match="N seeds"):
        BatchBorderFillAffine(**JITTER)(torch.zeros(3, 1, 8, 8), [1, 2])


def test_training_transform_without_jitter_is_the_eval_transform():
    image = character()
    assert torch.equal(build_transform("small", 28, train=True, jitter=False)(image),
                       build_transform("small", 28, train=False)(image))
