"""The embedder: images -> named outputs.

`features`: the trunk's globally average-pooled last map (B×F); `class`: the class embedding (B×D,
unit norm), the only output used at test time; one more entry per extra head a method asks for
(`shared`: B×D'); `taps`: the intermediate maps, when asked for.
"""

from __future__ import annotations

import torch
from torch import nn

from unseen.config import ModelConfig
from unseen.models.backbones import build_trunk
from unseen.models.heads import EmbeddingHead


class Embedder(nn.Module):
    def __init__(
        self,
        trunk: nn.Module,
        embedding_dim: int,
        extra_heads: dict[str, int] | None = None,
        dropout: float = 0.0,
        freeze_batchnorm: bool = False,
        class_slices: int = 1,
    ) -> None:
        super().__init__()
        self.trunk = trunk
        self.num_features: int = trunk.num_features
        heads = {"class": EmbeddingHead(self.num_features, embedding_dim, dropout, slices=class_slices)}
        heads |= {name: EmbeddingHead(self.num_features, d, dropout) for name, d in (extra_heads or {}).items()}
        self.heads = nn.ModuleDict(heads)
        self.freeze_batchnorm = freeze_batchnorm

    @property
    def embedding_dim(self) -> int:
        return self.heads["class"].linear.out_features

    def forward(self, images: torch.Tensor, taps: bool = False) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if taps:
            maps = self.trunk.forward_intermediates(images)
            out["taps"] = maps  # type: ignore[assignment]
            last = maps[-1]
        else:
            last = self.trunk.forward_features(images)
        features = last.mean(dim=(-2, -1))
        out["features"] = features
        for name, head in self.heads.items():
            out[name] = head(features)
        return out

    def train(self, mode: bool = True) -> Embedder:
        """With `freeze_batchnorm`, BatchNorm layers keep their running statistics (eval mode) while training;
        their affine parameters still learn (as in the D&C and MIC code)."""
        super().train(mode)
        if mode and self.freeze_batchnorm:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def param_groups(self, lr: float, backbone_lr: float | None, weight_decay: float) -> list[dict]:
        """Trunk and heads as separate optimizer groups, each named."""
        return [
            {"name": "backbone", "params": list(self.trunk.parameters()), "lr": backbone_lr or lr,
             "weight_decay": weight_decay},
            {"name": "heads", "params": list(self.heads.parameters()), "lr": lr, "weight_decay": weight_decay},
        ]


def build_embedder(
    config: ModelConfig, *, in_chans: int, extra_heads: dict[str, int] | None = None, class_slices: int = 1
) -> Embedder:
    trunk = build_trunk(config.backbone, in_chans=in_chans, pretrained=config.pretrained, channels=config.channels)
    return Embedder(trunk, config.embedding_dim, extra_heads, config.dropout, config.freeze_batchnorm, class_slices)
