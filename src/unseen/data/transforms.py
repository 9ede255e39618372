"""Image transforms per preset.

- `small`: small grayscale or colour images (Omniglot at 28–105 px). Train: a random affine jitter
  (rotation, translation, scale, shear) whose padding takes the image's own background (the median of
  its border), so characters on white paper are padded with paper. Eval: resize only. Mean/std 0.5.
  The jitter runs either per image in the loader (`BorderFillAffine`, PIL) or on a whole batch on the
  training device (`BatchBorderFillAffine`, `data.augment_on=device`): same parameter ranges, same
  per-sample seeds, so each image gets the same jitter whichever worker or device draws it.
- `imagenet`: the DML standard for natural images. Train: RandomResizedCrop(size) + horizontal flip;
  eval: Resize(size·256/224) + CenterCrop(size); normalized with the backbone's own mean/std.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as F
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Transform = Callable[[Image.Image], torch.Tensor]


class BorderFillAffine(torch.nn.Module):
    """Random affine jitter of a PIL image, padded with the median of its border pixels per channel.

    Works on PIL images (C code; about 5× faster than the tensor path for small images); the five random
    numbers come from torch's generator, so a per-sample seed reproduces the jitter.
    """

    def __init__(self, degrees: float, translate: float, scale: tuple[float, float], shear: float) -> None:
        super().__init__()
        self.degrees, self.translate, self.scale, self.shear = degrees, translate, scale, shear

    def forward(self, image: Image.Image) -> Image.Image:
        pixels = np.asarray(image)
        border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
        median = np.median(border, axis=0)
        fill = int(median) if median.ndim == 0 else tuple(int(v) for v in median)
        angle, shift_x, shift_y, scale, shear = (
            float(v) for v in _jitter_parameters(torch.rand(5).double(), self.degrees, self.translate,
                                                 self.scale, self.shear))
        shift = [round(shift_x * image.width), round(shift_y * image.height)]
        return F.affine(image, angle=angle, translate=shift, scale=scale, shear=[shear, 0.0],
                        interpolation=T.InterpolationMode.BILINEAR, fill=fill)


JITTER = {"degrees": 10.0, "translate": 0.08, "scale": (0.9, 1.1), "shear": 8.0}


def _jitter_parameters(
    u: torch.Tensor, degrees: float, translate: float, scale: tuple[float, float], shear: float
) -> tuple[torch.Tensor, ...]:
    """(angle°, shift x, shift y as fractions of the size, scale, shear x°) from uniform numbers u[..., :5]."""
    low, high = math.log(scale[0]), math.log(scale[1])
    return (degrees * (2 * u[..., 0] - 1), translate * (2 * u[..., 1] - 1), translate * (2 * u[..., 2] - 1),
            torch.exp(low + (high - low) * u[..., 3]), shear * (2 * u[..., 4] - 1))


class BatchBorderFillAffine:
    """`BorderFillAffine` for a whole N×C×H×W batch on its own device (`affine_grid` + bilinear `grid_sample`).

    Sample i's five uniform numbers come from a generator seeded with `seeds[i]`, exactly as the per-image
    path draws them; the fill is the per-channel median of the image's border; shifts are whole pixels. The
    result matches the per-image path up to interpolation rounding. Cost: one batched resampling, so the
    loader only reads and normalizes.
    """

    def __init__(self, degrees: float, translate: float, scale: tuple[float, float], shear: float) -> None:
        self.degrees, self.translate, self.scale, self.shear = degrees, translate, scale, shear

    def __call__(self, images: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        if images.ndim != 4 or len(seeds) != len(images):
            raise ValueError(f"expected N×C×H×W images and N seeds, got {tuple(images.shape)} and {len(seeds)}")
        u = torch.stack([torch.rand(5, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
        angle, shift_x, shift_y, scale, shear = _jitter_parameters(
            u.to(torch.float64), self.degrees, self.translate, self.scale, self.shear)
        theta = _inverse_affine(angle, shift_x, shift_y, scale, shear, images.shape[-1], images.shape[-2])
        x = images.float()
        border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1)
        fill = border.median(dim=-1).values[..., None, None]
        grid = torch.nn.functional.affine_grid(theta.to(x), list(x.shape), align_corners=False)
        moved = torch.nn.functional.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros",
                                                align_corners=False)
        return (moved + fill).to(images.dtype)


def _inverse_affine(
    angle: torch.Tensor, shift_x: torch.Tensor, shift_y: torch.Tensor, scale: torch.Tensor, shear: torch.Tensor,
    width: int, height: int,
) -> torch.Tensor:
    """N×2×3 `affine_grid` matrices: output -> input sampling for `x' = R(angle)·Shear(shear)·scale·x + shift`
    about the image centre (shift as a fraction of the size, rounded to whole pixels), computed in pixel units
    so non-square images rotate without distortion."""
    a, s = torch.deg2rad(angle), -torch.tan(torch.deg2rad(shear))  # torchvision: +shear tilts x left
    cos, sin = torch.cos(a), torch.sin(a)
    # forward linear part A = R · [[1, s], [0, 1]] · scale, as torchvision.transforms.v2.functional.affine
    forward = torch.stack([torch.stack([cos, cos * s - sin], -1), torch.stack([sin, sin * s + cos], -1)], -2)
    forward = forward * scale[:, None, None]
    inverse = torch.linalg.inv(forward)
    half = torch.tensor([width / 2, height / 2], dtype=forward.dtype)
    # normalized -> pixel: p = half * n; shift in pixels: (shift_x * width, shift_y * height)
    linear = inverse * half[None, None, :] / half[None, :, None]
    shift = torch.stack([torch.round(shift_x * width), torch.round(shift_y * height)], -1)  # whole pixels, as PIL
    offset = -(inverse @ shift[..., None])[..., 0] / half
    return torch.cat([linear, offset[..., None]], dim=-1)


def build_batch_augment(preset: str) -> BatchBorderFillAffine:
    """The batch form of `preset`'s training jitter; only `small` has one (imagenet crops need the full image)."""
    if preset != "small":
        raise ValueError(f"data.augment_on=device: only the 'small' preset augments on the device, not {preset!r}")
    return BatchBorderFillAffine(**JITTER)


def build_transform(
    preset: str,
    image_size: int,
    *,
    train: bool,
    jitter: bool = True,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    channels: int | None = None,
) -> Transform:
    """The transform of `preset` for training or evaluation; mean/std default to the preset's.

    `jitter=False` leaves the randomness out of the training transform: the small preset's affine (which may then
    run on the batch, `build_batch_augment`), the imagenet crop and flip (the eval resize and centre crop instead).
    `channels` (1 or 3) converts every image to grayscale or RGB first, so that a
    folder mixing both feeds the network its channel count; the imagenet preset always converts to RGB."""
    if preset == "small":
        steps: list[torch.nn.Module] = [_ImageMode(channels)] if channels else []
        steps.append(T.Resize((image_size, image_size), antialias=True))
        if train and jitter:
            steps.append(BorderFillAffine(**JITTER))
        mean, std = mean or (0.5,), std or (0.5,)
        steps += [T.ToImage(), T.ToDtype(torch.float32, scale=True), _Normalize(mean, std)]
        return T.Compose(steps)
    if preset == "imagenet":
        mean, std = mean or IMAGENET_MEAN, std or IMAGENET_STD
        if train and jitter:
            geometry = [T.RandomResizedCrop(image_size, antialias=True), T.RandomHorizontalFlip()]
        else:
            geometry = [T.Resize(round(image_size * 256 / 224), antialias=True), T.CenterCrop(image_size)]
        return T.Compose(
            [_ImageMode(3), T.ToImage(), *geometry, T.ToDtype(torch.float32, scale=True), _Normalize(mean, std)]
        )
    raise ValueError(f"data.preset: expected 'small' or 'imagenet', got {preset!r}")


class _ImageMode(torch.nn.Module):
    """A PIL image in mode L (1 channel) or RGB (3 channels); tensors pass unchanged."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise ValueError(f"channels: expected 1 or 3, got {channels}")
        self.mode = "L" if channels == 1 else "RGB"

    def forward(self, image: Image.Image) -> Image.Image:
        if isinstance(image, Image.Image) and image.mode != self.mode:
            return image.convert(self.mode)
        return image


class _Normalize(torch.nn.Module):
    """Normalize with one mean/std for every channel when a single value is given (grayscale or colour)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if len(self.mean) not in (1, image.shape[0]):
            raise ValueError(f"normalization has {len(self.mean)} channels, image has {image.shape[0]}")
        return (image - self.mean) / self.std
