"""Images per second of the small preset's training input: the jitter per image in the loader vs on the batch.

What a 28 px Omniglot run feeds its model every step: 128 in-memory uint8 images with per-sample seeds,
through `ImageDataset` and a DataLoader batch sampler. Two ways to jitter them:
- per image (`data.augment_on=loader`): `BorderFillAffine` on each PIL image in the loader;
- on the batch (`data.augment_on=device`, the small preset's default): the loader only converts and
  normalizes, then `BatchBorderFillAffine` resamples the whole batch at once (here on the CPU; on a GPU it
  runs on the training device).
The reference is the loader without any jitter (what the batch path has to read anyway). Images are
generated strokes on paper; the numbers are printed as ratios against the per-image path.

    PYTHONPATH=src python benchmarks/jitter_speed.py --batches 40
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from unseen.data.base import table_from_labels
from unseen.data.dataset import ImageDataset
from unseen.data.transforms import JITTER, BatchBorderFillAffine, build_transform


def strokes(count: int, size: int, seed: int = 0) -> np.ndarray:
    """`count` size×size uint8 images: white paper with three random dark strokes each."""
    rng = np.random.default_rng(seed)
    images = np.full((count, size, size), 255, dtype=np.uint8)
    for image in images:
        for _ in range(3):
            y, x = rng.integers(2, size - 6, 2)
            if rng.random() < 0.5:
                image[y : y + 2, x : x + rng.integers(4, size - x)] = 0
            else:
                image[y : y + rng.integers(4, size - y), x : x + 2] = 0
    return images


def plan(count: int, batches: int, batch_size: int, seed: int = 0) -> list[list[tuple[int, int]]]:
    rng = np.random.default_rng(seed)
    return [list(zip(rng.integers(0, count, batch_size).tolist(), rng.integers(0, 2**31, batch_size).tolist(),
                     strict=True)) for _ in range(batches)]


def images_per_s(dataset: ImageDataset, items: list[list[tuple[int, int]]], batch_jitter=None) -> float:
    start = time.perf_counter()
    seen = 0
    for batch, (images, _, _) in zip(items, DataLoader(dataset, batch_sampler=items), strict=True):
        if batch_jitter is not None:
            images = batch_jitter(images, [seed for _, seed in batch])
        seen += len(images)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = table_from_labels(np.arange(2000) % 100, images=strokes(2000, args.size), name="train")
    items = plan(len(table), args.batches, args.batch_size)
    plain = ImageDataset(table, build_transform("small", args.size, train=True, jitter=False))
    per_image = ImageDataset(table, build_transform("small", args.size, train=True))
    batch_jitter = BatchBorderFillAffine(**JITTER)
    images_per_s(plain, items[:2])  # warm-up
    reference = images_per_s(per_image, items)
    batched = images_per_s(plain, items, batch_jitter)
    floor = images_per_s(plain, items)
    print(f"{args.batches} batches of {args.batch_size} images, {args.size} px, torch threads {args.threads}")
    print(f"jitter per image in the loader: {reference:8.0f} images/s  = 1.00x")
    print(f"jitter on the batch (CPU):      {batched:8.0f} images/s  = {batched / reference:.2f}x")
    print(f"loader without jitter (floor):  {floor:8.0f} images/s  = {floor / reference:.2f}x")


if __name__ == "__main__":
    main()
