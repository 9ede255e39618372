"""The training batches of a batch plan: gathered from an in-memory cache, or loaded by a DataLoader.

A plan batch is a list of (row, seed) pairs (`BatchPlan.items`). Three ways to turn it into tensors, chosen by
`data.cache`:

- `tensors`: the training transform has no randomness (the jitter runs on the batch on the device, or there is
  none), so every training image is transformed once into one N×C×H×W tensor, on the training device when it is a
  GPU; a batch is an index into it. No per-sample Python work, nothing that grows with the dataset.
- `decoded`: the image files are decoded once into memory (before any worker starts, so forked workers share
  them); the per-image transform still runs per sample, in the loader.
- `none`: every sample is read and decoded when its batch is loaded.

The loader ways use one DataLoader for the whole run, its workers persistent across epochs, with page-locked
memory on CUDA. All three give the same images: the per-sample seed fixes each image's randomness, and no path
moves torch's global generator.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from unseen.data.base import Table
from unseen.data.dataset import ImageDataset
from unseen.data.transforms import Transform

GIB = 1024**3
SIZE_SAMPLE = 64  # files whose headers estimate a path table's decoded size

Items = Sequence[Sequence[tuple[int, int]]]
Loaded = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class CachePlan:
    """The cache chosen for a table, with the bytes it takes and why (for the run's log)."""

    kind: str
    bytes: int
    reason: str

    def describe(self) -> str:
        return f"{self.kind} ({self.reason})"


def choose_cache(setting: str, table: Table, *, deterministic: bool, tensor_bytes_per_image: int,
                 max_gb: float) -> CachePlan:
    """The cache `data.cache: setting` gives `table`; `auto` takes tensors when the transform is deterministic and
    they fit in `max_gb`, else decoded images when the table's images are files and fit, else none."""
    tensor_bytes = tensor_bytes_per_image * len(table)
    limit = max_gb * GIB
    if setting == "tensors":
        if not deterministic:
            raise ValueError("data.cache: 'tensors' needs a training transform without randomness (the small "
                             "preset's jitter on the device, or data.jitter: false); use 'decoded', 'auto' or 'none'")
        return CachePlan("tensors", tensor_bytes, "asked for")
    if setting == "none":
        return CachePlan("none", 0, "asked for")
    decoded = 0 if table.paths is None else decoded_bytes(table)
    if setting == "decoded":
        return CachePlan("decoded", decoded, "asked for")
    if deterministic and tensor_bytes <= limit:
        return CachePlan("tensors", tensor_bytes, f"deterministic transform, {tensor_bytes / GIB:.2f} GiB")
    if table.paths is not None and decoded <= limit:
        return CachePlan("decoded", decoded, f"{decoded / GIB:.2f} GiB of decoded files")
    if table.paths is None:
        return CachePlan("none", 0, "images already in memory")
    return CachePlan("none", 0, f"{decoded / GIB:.2f} GiB decoded is over data.cache_max_gb ({max_gb:g})")


def decoded_bytes(table: Table) -> int:
    """The estimated bytes of a path table's images once decoded, from the headers of up to 64 evenly spread files
    (a file that cannot be opened counts as the average)."""
    count = len(table)
    if count == 0 or table.paths is None:
        return 0
    picked = np.unique(np.linspace(0, count - 1, min(count, SIZE_SAMPLE)).round().astype(int))
    sizes = []
    for index in picked:
        try:
            with Image.open(table.paths[index]) as image:
                sizes.append(image.width * image.height * (1 if image.mode == "L" else 3))
        except (OSError, ValueError):
            continue
    return int(np.mean(sizes) * count) if sizes else 0


class TensorBatches:
    """Every image of `table` through `transform` once, as one tensor on `device`; batches are gathered by index."""

    def __init__(self, table: Table, transform: Transform, device: torch.device, *, pin_memory: bool = False,
                 chunk: int = 512) -> None:
        dataset = ImageDataset(table, transform)
        parts = [torch.stack([dataset[row][0] for row in range(start, min(start + chunk, len(table)))])
                 for start in range(0, len(table), chunk)]
        images = torch.cat(parts) if parts else torch.zeros(0)
        self.images = images.to(device) if device.type != "cpu" else images
        self.labels = torch.as_tensor(table.labels, dtype=torch.long).to(self.images.device)
        if pin_memory and self.images.device.type == "cpu":
            self.images = self.images.pin_memory()

    def batches(self, items: Items) -> Iterator[Loaded]:
        for batch in items:
            rows = torch.tensor([row for row, _ in batch], dtype=torch.long)
            index = rows.to(self.images.device)
            yield self.images.index_select(0, index), self.labels.index_select(0, index), rows


class _PlanSampler:
    """A DataLoader batch sampler whose batches are swapped per epoch, so the loader and its workers live for the
    whole run."""

    def __init__(self) -> None:
        self.items: Items = []

    def __iter__(self) -> Iterator[Sequence[tuple[int, int]]]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


class LoaderBatches:
    """Batches through one DataLoader with persistent workers; `decoded` holds the table's decoded images."""

    def __init__(self, table: Table, transform: Transform, *, num_workers: int, pin_memory: bool,
                 decoded: bool = False) -> None:
        images = [table.load_image(row) for row in range(len(table))] if decoded else None
        self.sampler = _PlanSampler()
        self.loader = DataLoader(ImageDataset(table, transform, images=images), batch_sampler=self.sampler,
                                 num_workers=num_workers, pin_memory=pin_memory,
                                 persistent_workers=num_workers > 0)

    def batches(self, items: Items) -> Iterator[Loaded]:
        self.sampler.items = items
        rng_state = torch.get_rng_state()
        batches = iter(self.loader)  # a DataLoader draws its base seed from the global RNG: keep the stream as it was
        torch.set_rng_state(rng_state)
        return batches


TrainBatches = TensorBatches | LoaderBatches
