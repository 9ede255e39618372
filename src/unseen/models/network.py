"""The embedding network: images -> named outputs.

`features`: the trunk's globally average-pooled last map (B×F); `class`: the class embedding (B×D,
unit norm), the only output used at test time; one more entry per extra head a method asks for
(`shared`: B×D'); `intermediate`: the attention-pooled taps side by side (with taps); `fused`: what the
heads read; `taps`: every stage's map, when asked for.

With intermediate taps (`model.taps`, Al-Kaabi et al. 2021) the heads read the fusion
[pool(tap₁), …, pool(tapₙ), features] (B×(C₁+…+Cₙ+F)), each tap pooled by its own attention
(`models/attention.py`); `features` stays the plain pooled last map. Without taps the heads read `features`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from unseen.models.attention import Attention, AttentionPool, Normalization
from unseen.models.backbones import build_trunk, resolve_taps
from unseen.models.heads import EmbeddingHead
from unseen.models.spec import ModelSpec


class EmbeddingModel(nn.Module):
    def __init__(
        self,
        trunk: nn.Module,
        embedding_dim: int,
        extra_heads: dict[str, int] | None = None,
        dropout: float = 0.0,
        freeze_batchnorm: bool = False,
        class_slices: int = 1,
        taps: Sequence[int] = (),
        attention: Attention = "spatial",
        attention_normalization: Normalization = "softmax",
    ) -> None:
        super().__init__()
        self.trunk = trunk
        self.num_features: int = trunk.num_features
        self.taps = tuple(taps)
        fused = self.num_features + sum(trunk.stage_channels[i] for i in self.taps)
        heads = {"class": EmbeddingHead(fused, embedding_dim, dropout, slices=class_slices)}
        heads |= {name: EmbeddingHead(fused, d, dropout) for name, d in (extra_heads or {}).items()}
        self.heads = nn.ModuleDict(heads)
        self.attention = nn.ModuleList(
            AttentionPool(trunk.stage_channels[i], attention, attention_normalization) for i in self.taps
        )
        self.freeze_batchnorm = freeze_batchnorm

    @property
    def embedding_dim(self) -> int:
        return self.heads["class"].linear.out_features

    @property
    def output_dims(self) -> dict[str, int]:
        """The width of each named output: `features`, `intermediate` (with taps), `fused`, `class` and the extra
        heads."""
        dims = {"features": self.num_features}
        if self.taps:
            dims["intermediate"] = sum(pool.channels for pool in self.attention)
        dims["fused"] = self.heads["class"].linear.in_features
        return dims | {name: head.linear.out_features for name, head in self.heads.items()}

    def forward(self, images: torch.Tensor, taps: bool = False) -> dict[str, torch.Tensor]:
        """Named outputs; `taps=True` adds `taps`, the list of every stage's map (one pass through the trunk)."""
        out: dict[str, torch.Tensor] = {}
        tapped: list[torch.Tensor] = []
        if taps or self.taps:
            last, maps = self.trunk.forward_intermediates(
                images, indices=None if taps else self.taps, intermediates_only=False
            )
            if taps:
                out["taps"] = maps  # type: ignore[assignment]
            tapped = [maps[i] for i in self.taps] if taps else maps
        else:
            last = self.trunk.forward_features(images)
        features = last.mean(dim=(-2, -1))
        out["features"] = features
        pooled = [pool(tap) for pool, tap in zip(self.attention, tapped, strict=True)]
        if pooled:
            out["intermediate"] = torch.cat(pooled, dim=1)
        fused = torch.cat([*pooled, features], dim=1) if pooled else features
        out["fused"] = fused
        for name, head in self.heads.items():
            out[name] = head(fused)
        return out

    def train(self, mode: bool = True) -> EmbeddingModel:
        """With `freeze_batchnorm`, BatchNorm layers keep their running statistics (eval mode) while training;
        their affine parameters still learn (as in the D&C and MIC code)."""
        super().train(mode)
        if mode and self.freeze_batchnorm:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def param_groups(self, lr: float, backbone_lr: float | None, weight_decay: float) -> list[dict]:
        """Trunk, heads and (with taps) the attention pools as separate optimizer groups, each named; the new
        layers (heads, attention) at `lr`, the trunk at `backbone_lr`."""
        groups = [
            {"name": "backbone", "params": list(self.trunk.parameters()), "lr": backbone_lr or lr,
             "weight_decay": weight_decay},
            {"name": "heads", "params": list(self.heads.parameters()), "lr": lr, "weight_decay": weight_decay},
        ]
        attention = list(self.attention.parameters())
        if attention:
            groups.append({"name": "attention", "params": attention, "lr": lr, "weight_decay": weight_decay})
        return groups


def build_model(spec: ModelSpec, pretrained: bool | str = False) -> EmbeddingModel:
    """The network a spec describes; `pretrained` (True: the hub; a path: a local file) loads the trunk's weights."""
    trunk = build_trunk(spec.backbone, in_chans=spec.in_chans, pretrained=pretrained, channels=spec.channels)
    return EmbeddingModel(trunk, spec.embedding_dim, dict(spec.extra_heads), spec.dropout, spec.freeze_batchnorm,
                          spec.class_slices, taps=resolve_taps(trunk.stage_names, spec.taps),
                          attention=spec.attention, attention_normalization=spec.attention_normalization)
