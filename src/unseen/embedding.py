"""Embed a table with a model: batches through the eval transform, one named output, as a float32 array.

Outputs are the embedder's (`class`, `features`, extra heads) or `tap:I`: the I-th intermediate feature
map, average-pooled to a 4×4 grid and flattened (the early-layer clustering features of MIC).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from unseen.data.base import Table
from unseen.data.dataset import ImageDataset
from unseen.data.transforms import Transform


@torch.no_grad()
def embed_table(
    model: torch.nn.Module,
    table: Table,
    transform: Transform,
    *,
    output: str = "class",
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    progress: bool = False,
    description: str = "embed",
) -> np.ndarray:
    """N×D embeddings (`output`: `class`, `features`, or any extra head) in table order; model left as it was."""
    was_training = model.training
    model.eval()
    loader = DataLoader(ImageDataset(table, transform), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers)
    chunks = []
    try:
        for images, _, _ in tqdm(loader, desc=description, disable=not progress, leave=False):
            chunks.append(_output(model, images.to(device), output).float().cpu())
    finally:
        model.train(was_training)
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(chunks).numpy()


TAP_GRID = 4


def _output(model: torch.nn.Module, images: torch.Tensor, output: str) -> torch.Tensor:
    if not output.startswith("tap:"):
        return model(images)[output]
    maps = model(images, taps=True)["taps"]
    index = int(output.removeprefix("tap:"))
    if not 0 <= index < len(maps):
        from unseen.errors import ConfigError

        raise ConfigError(f"tap:{index}: the backbone has {len(maps)} intermediate maps (0 to {len(maps) - 1})")
    return F.adaptive_avg_pool2d(maps[index], TAP_GRID).flatten(1)
