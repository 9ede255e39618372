"""Checkpoints: written atomically (`files.atomic_write`), read with `weights_only=True` so that a checkpoint can
never run code. A crash mid-write leaves the previous checkpoint intact.

Every checkpoint is a run artifact: beside the weights it holds the model spec, the training class names, the
resolved config and the commit, so it can be used without the run's data (`unseen.load`). `last.pt` adds the
training state (method, optimizer, scheduler, RNG) that `unseen train --resume` continues from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from unseen.errors import CheckpointError
from unseen.files import atomic_write

CHECKPOINT_FORMAT = "unseen-checkpoint/2"
REQUIRED_KEYS = ("format", "model_spec", "model", "config")


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write `state` (tensors and plain data only) to `path` atomically."""
    with atomic_write(path) as file:
        torch.save(state, file)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`; anything else is one CheckpointError line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint there")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, foreign pickle, code objects: all mean "unreadable"
        reason = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
        raise CheckpointError(f"{path}: not a readable unseen checkpoint (truncated or foreign: {reason})") from None
    if not isinstance(state, dict) or any(key not in state for key in REQUIRED_KEYS):
        raise CheckpointError(f"{path}: not an unseen checkpoint (expected the keys {', '.join(REQUIRED_KEYS)})")
    if state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {state['format']!r}, this version of unseen reads "
                              f"{CHECKPOINT_FORMAT!r}")
    return state
