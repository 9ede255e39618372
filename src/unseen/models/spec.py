"""The model spec: everything needed to rebuild a trained network and feed it, without the data it learned from.

It travels in every checkpoint, so `unseen.load` rebuilds the network and its eval transform from the run folder
alone. It is made once at the start of training from the config (`model:` and `data:` sections), the input
channels of the training images, and what the method asks for (`Method.configure_model`: extra heads, slices).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, StrictInt, ValidationError

from unseen.config import Config, describe_validation_error
from unseen.errors import CheckpointError


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    backbone: str
    in_chans: PositiveInt
    embedding_dim: PositiveInt = 128
    channels: tuple[PositiveInt, ...] = (32, 64, 128, 256)
    taps: tuple[str | StrictInt, ...] = ()
    attention: Literal["none", "spatial", "spatial+channel"] = "spatial"
    attention_normalization: Literal["softmax", "sigmoid"] = "softmax"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    freeze_batchnorm: bool = False
    extra_heads: dict[str, PositiveInt] = Field(default_factory=dict, description="name -> dimension, e.g. shared")
    class_slices: PositiveInt = Field(1, description="separately normalized slices of the class embedding (D&C)")
    image_size: PositiveInt = 28
    preset: Literal["small", "imagenet"] = "small"
    mean: tuple[float, ...] | None = Field(None, description="input normalization; null: the preset's default")
    std: tuple[float, ...] | None = None

    @classmethod
    def from_config(cls, config: Config, in_chans: int) -> ModelSpec:
        m, d = config.model, config.data
        return cls(backbone=m.backbone, in_chans=in_chans, embedding_dim=m.embedding_dim, channels=m.channels,
                   taps=m.taps, attention=m.attention, attention_normalization=m.attention_normalization,
                   dropout=m.dropout, freeze_batchnorm=m.freeze_batchnorm, image_size=d.image_size, preset=d.preset)

    @classmethod
    def from_dict(cls, data: Any, source: str) -> ModelSpec:
        """Validate a spec read from a checkpoint; a bad one is a CheckpointError naming `source`."""
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise CheckpointError(f"{source}: model spec: {describe_validation_error(error, cls)}") from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def differences(self, other: ModelSpec) -> list[str]:
        """`key: mine vs theirs` for every field that differs."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{key}: {mine[key]!r} vs {theirs[key]!r}" for key in mine if mine[key] != theirs[key]]
