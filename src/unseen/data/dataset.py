"""A Table as a torch Dataset: rows in, (image tensor, label, row) out, with per-sample augmentation seeds."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

from unseen.data.base import Table
from unseen.data.transforms import Transform


class ImageDataset(Dataset):
    """`dataset[row]` or `dataset[(row, seed)]`; a seed makes the random transform of that sample reproducible,
    whichever worker process draws it, and leaves torch's global generator as it was. `images`: the table's images
    already decoded (one per row), instead of reading them."""

    def __init__(self, table: Table, transform: Transform, images: Sequence[Image.Image] | None = None) -> None:
        if images is not None and len(images) != len(table):
            raise ValueError(f"{len(images)} decoded images for a table of {len(table)} rows")
        self.table = table
        self.transform = transform
        self.images = images

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        row, seed = item if isinstance(item, tuple) else (item, None)
        image = self.table.load_image(row) if self.images is None else self.images[row]
        if seed is None:
            return self.transform(image), int(self.table.labels[row]), row
        state = torch.get_rng_state()
        try:  # the CPU generator only: torch.manual_seed also queues CUDA seeding (~0.7 ms a call)
            torch.default_generator.manual_seed(seed)
            return self.transform(image), int(self.table.labels[row]), row
        finally:
            torch.set_rng_state(state)
