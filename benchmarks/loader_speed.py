"""Images per second of the training input pipeline against a bare PIL decode loop, on the same JPEGs.

The pipeline is what training runs for photo datasets (CUB, CARS, SOP, ...): a path Table, `ImageDataset`,
the `imagenet` train transform (JPEG decode, RandomResizedCrop(224), horizontal flip, to tensor,
normalize) and a torch DataLoader with N workers. The reference is a plain loop that only decodes each
JPEG with PIL in one process. Images are generated: 500×375 photo-like JPEGs (the size of a CUB image).

    PYTHONPATH=src python benchmarks/loader_speed.py --images 300 --workers 0 1 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from unseen.data.base import table_from_labels
from unseen.data.dataset import ImageDataset
from unseen.data.transforms import build_transform


def make_jpegs(folder: Path, count: int, seed: int = 0) -> list[str]:
    """`count` 500×375 JPEGs with smooth structure plus noise (compressed like photos, ~30–60 KB)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((500, 375), 3)
        pixels = np.asarray(coarse, dtype=np.int16) + rng.integers(-12, 13, (375, 500, 3))
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths


def bare_pil(paths: list[str]) -> float:
    """Images/s of decoding every JPEG to RGB with PIL, one process."""
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            image.convert("RGB").load()
    return len(paths) / (time.perf_counter() - start)


def pipeline(paths: list[str], workers: int, batch_size: int) -> float:
    """Images/s of one epoch through the training DataLoader (with workers: the second, workers started)."""
    table = table_from_labels(np.arange(len(paths)) % 10, paths=paths, name="train")
    dataset = ImageDataset(table, build_transform("imagenet", 224, train=True))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0)
    if workers:
        sum(len(images) for images, _, _ in loader)  # starts the workers; not timed
    start = time.perf_counter()
    seen = sum(len(images) for images, _, _ in loader)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="number of generated JPEGs")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="unseen-loader-") as folder:
        paths = make_jpegs(Path(folder), args.images)
        size = sum(Path(path).stat().st_size for path in paths) / len(paths) / 1024
        print(f"{len(paths)} generated JPEGs, 500x375, {size:.0f} KB on average; torch threads "
              f"{torch.get_num_threads()}, batch {args.batch_size}")
        reference = bare_pil(paths)
        print(f"bare PIL decode, one process: {reference:8.0f} images/s")
        threads = torch.get_num_threads()
        for workers in args.workers:
            # in-process loading runs the transforms on torch's intra-op threads; also try one thread
            for count in sorted({threads, 1}, reverse=True) if workers == 0 else [threads]:
                torch.set_num_threads(count)
                speed = pipeline(paths, workers, args.batch_size)
                where = f"{workers} workers" if workers else f"in process, {count} torch threads"
                print(f"pipeline (decode + augment), {where}: {speed:8.0f} images/s  "
                      f"= {speed / reference:.2f}x bare PIL")
            torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
