"""Trunks with one surface, whatever their origin: `num_features`, `forward_features` (last feature map),
`forward_intermediates` (one map per stage, timm's signature), `stage_names` and `stage_channels` (one per stage).
Intermediate taps are chosen by stage name or index (`resolve_taps`).

- `convnet`: a small ConvNet for small images (Omniglot at 28–105 px), one conv-BN-ReLU-pool block per width.
- any other name: a `timm` model (`resnet50`, `tf_efficientnet_lite0`, ...). Pretrained weights come from
  the hub when `pretrained=True` and a network is there, or from a local file (`pretrained=/path`) always.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from unseen.errors import ConfigError
from unseen.models.weights import map_foreign_state
from unseen.registry import Registry


class ConvNet(nn.Module):
    """Blocks of conv3×3-BN-ReLU followed by 2×2 max-pooling (none after the last block)."""

    def __init__(self, in_chans: int = 1, channels: Sequence[int] = (32, 64, 128, 256)) -> None:
        super().__init__()
        blocks, width = [], in_chans
        for i, out in enumerate(channels):
            layers: list[nn.Module] = [
                nn.Conv2d(width, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            if i < len(channels) - 1:
                layers.append(nn.MaxPool2d(2))
            blocks.append(nn.Sequential(*layers))
            width = out
        self.blocks = nn.ModuleList(blocks)
        self.num_features = width
        self.stage_names = tuple(f"block{i}" for i in range(len(channels)))
        self.stage_channels = tuple(channels)
        self.pretrained_cfg: dict[str, object] = {}

    def forward_intermediates(
        self, x: torch.Tensor, indices: Sequence[int] | None = None, intermediates_only: bool = True
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The output of each block in `indices` (default: all); with `intermediates_only=False` also the last map,
        as `(last, maps)` (timm's convention). Blocks after the last index needed are not run."""
        wanted = range(len(self.blocks)) if indices is None else indices
        depth = len(self.blocks) if not intermediates_only else max(wanted, default=-1) + 1
        maps = []
        for i, block in enumerate(self.blocks[:depth]):
            x = block(x)
            if i in wanted:
                maps.append(x)
        return maps if intermediates_only else (x, maps)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class TimmTrunk(nn.Module):
    """A timm model without its classifier, exposing the same surface as ConvNet."""

    def __init__(self, name: str, in_chans: int = 3, pretrained: bool | str = False) -> None:
        super().__init__()
        import timm

        if not timm.is_model(name):
            close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
            hint = f"; similar: {', '.join(close)}" if close else ""
            raise ConfigError(f"model.backbone: unknown backbone '{name}' (not 'convnet' nor a timm model){hint}")
        self.model = timm.create_model(name, pretrained=False, num_classes=0, global_pool="", in_chans=in_chans)
        self.num_features = self.model.num_features
        self.pretrained_cfg = dict(getattr(self.model, "pretrained_cfg", {}) or {})
        self.stage_names = tuple(info["module"] for info in self.model.feature_info)
        self.stage_channels = tuple(info["num_chs"] for info in self.model.feature_info)
        if pretrained is True:
            load_hub_weights(self.model, name, in_chans)
        elif isinstance(pretrained, str) and pretrained:
            load_local_weights(self.model, Path(pretrained))

    def forward_intermediates(
        self, x: torch.Tensor, indices: Sequence[int] | None = None, intermediates_only: bool = True
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """As ConvNet's: the maps of the stages in `indices` (default: all), and with `intermediates_only=False`
        `(last, maps)` where `last` is `forward_features`' map (after a final 1×1 head conv, e.g. EfficientNet's)."""
        indices = list(indices) if indices is not None else None
        return self.model.forward_intermediates(x, indices=indices, intermediates_only=intermediates_only)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def _convnet(*, in_chans: int, pretrained: bool | str = False, channels: Sequence[int] = (32, 64, 128, 256)):
    if pretrained:
        raise ConfigError("model.pretrained: the small 'convnet' has no pretrained weights; set it to false")
    return ConvNet(in_chans, channels)


def _timm(name: str):
    """Any other name is a timm model; TimmTrunk says so (with similar names) when timm does not know it."""

    def build(*, in_chans: int, pretrained: bool | str = False, channels: Sequence[int] = ()) -> TimmTrunk:
        return TimmTrunk(name, in_chans=in_chans, pretrained=pretrained)

    return build


BACKBONES: Registry[Callable[..., nn.Module]] = Registry("backbone", key="model.backbone", fallback=_timm)
BACKBONES.register("convnet")(_convnet)


def build_trunk(
    name: str, *, in_chans: int, pretrained: bool | str = False, channels: Sequence[int] = (32, 64, 128, 256)
) -> nn.Module:
    """A registered trunk (`convnet`) or any timm model name."""
    return BACKBONES.get(name)(in_chans=in_chans, pretrained=pretrained, channels=channels)


def resolve_taps(stage_names: Sequence[str], taps: Sequence[str | int]) -> tuple[int, ...]:
    """Stage indices of `taps` (stage names, or indices counted from 0, negative from the end), in stage order."""
    count = len(stage_names)
    known = f"known: {', '.join(stage_names)} (or an index {-count}..{count - 1})"
    indices: list[int] = []
    for tap in taps:
        if isinstance(tap, str) and tap not in stage_names:
            raise ConfigError(f"model.taps: unknown stage '{tap}'; {known}")
        if isinstance(tap, int) and not -count <= tap < count:
            raise ConfigError(f"model.taps: stage index {tap} out of range; {known}")
        index = stage_names.index(tap) if isinstance(tap, str) else tap % count
        if index in indices:
            raise ConfigError(f"model.taps: stage '{stage_names[index]}' is listed twice")
        indices.append(index)
    return tuple(sorted(indices))


def offline() -> bool:
    """True when the environment says not to use the network (HF_HUB_OFFLINE / UNSEEN_OFFLINE)."""
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "UNSEEN_OFFLINE"))


def load_hub_weights(model: nn.Module, name: str, in_chans: int) -> None:
    """Download the default pretrained weights of `name` through timm; offline, fail with the local-file option."""
    import timm

    hint = (
        f"model.pretrained: cannot download weights for '{name}' (offline); fetch them on a connected machine "
        f"and pass the file: model.pretrained=/path/to/{name}.safetensors"
    )
    if offline():
        raise ConfigError(hint)
    try:
        source = timm.create_model(name, pretrained=True, num_classes=0, global_pool="", in_chans=in_chans)
    except Exception as error:  # hub, HTTP and file-system errors differ by version; all mean "no weights"
        raise ConfigError(f"{hint} [{type(error).__name__}]") from None
    model.load_state_dict(source.state_dict())


def load_local_weights(model: nn.Module, path: Path) -> None:
    """Load a state dict from .safetensors / .pth / .pt / .bin; classifier keys are ignored, other mismatches fail."""
    if not path.is_file():
        raise ConfigError(f"model.pretrained: no weights file at {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt files raise many types (pickle, zip, safetensors)
        raise ConfigError(f"model.pretrained: {path}: not a readable weights file ({type(error).__name__})") from None
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ConfigError(f"model.pretrained: {path}: expected a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = map_foreign_state(state, model, path)
    own = model.state_dict()
    state = {k: v for k, v in state.items() if k in own or not _is_classifier_key(k)}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong_shape:
        problems = [("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)]
        detail = "; ".join(f"{n} {len(ks)} (e.g. {ks[0]})" for n, ks in problems if ks)
        raise ConfigError(f"model.pretrained: {path}: keys do not match the backbone: {detail}")
    model.load_state_dict(state)


def _is_classifier_key(key: str) -> bool:
    return key.split(".")[0] in ("fc", "classifier", "head", "last_linear")
