"""A Table as a torch Dataset: rows in, (image tensor, label, row) out, with per-sample augmentation seeds."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from unseen.data.base import Table
from unseen.data.transforms import Transform


class ImageDataset(Dataset):
    """`dataset[row]` or `dataset[(row, seed)]`; a seed makes the random transform of that sample reproducible,
    whichever worker process draws it."""

    def __init__(self, table: Table, transform: Transform) -> None:
        self.table = table
        self.transform = transform

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        row, seed = item if isinstance(item, tuple) else (item, None)
        if seed is not None:  # the CPU generator only: torch.manual_seed also queues CUDA seeding (~0.7 ms a call)
            torch.default_generator.manual_seed(seed)
        image = self.transform(self.table.load_image(row))
        return image, int(self.table.labels[row]), row
