"""ECAML — Energy Confused Adversarial Metric Learning (Chen & Deng, AAAI 2019), as the authors' code does it.

total = L_base(normalize(W f + b)) + confusion_weight · log E + R(W), where E is the mean ½‖z_i − z_j‖² over
random different-class pairs of z = W · f.detach() + b (the metric layer on detached trunk features, not
normalized) and R is the row-norm penalty on W. The confusion pulls classes together in the metric layer only,
so the backbone must find further cues that keep them apart; those transfer to unseen classes.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import nn

from unseen.config import Config, Section
from unseen.errors import ConfigError
from unseen.losses.energy_confusion import confusion_energy, different_class_pairs, row_norm_penalty
from unseen.methods.base import Batch, LossOutput, Method
from unseen.models.embedder import Embedder


class ECAML(Method):
    name = "ecaml"

    class Params(Section):
        confusion_weight: float = Field(0.13, ge=0, description="λ of the confusion term (Caffe loss_weight)")
        row_norm_weight: float = Field(0.5, ge=0, description="λ_w of the row-norm penalty on W (Caffe lamda)")
        pairs_per_anchor: PositiveInt | None = Field(
            10, description="different-class partners drawn per anchor (Caffe random_num); null: all of them"
        )
        detach_features: bool = Field(
            True, description="true: the confusion reaches only W and b (code); false: also the backbone"
        )
        log_energy: bool = Field(True, description="true: confusion term log E (code); false: E itself")

    def __init__(self, config: Config, *, num_classes: int, embedding_dim: int) -> None:
        super().__init__(config, num_classes=num_classes, embedding_dim=embedding_dim)
        self._metric_layer: nn.Linear | None = None

    def attach(self, model: Embedder) -> None:
        """Keep a reference to the embedder's metric layer W, b (its `class` head); the embedder owns and
        optimizes it, so it is not registered as a submodule here (no duplicate parameters or checkpoint keys)."""
        if model.taps:
            raise ConfigError("method (ecaml): model.taps is not supported: the confusion term applies the class "
                              "head's W to the pooled last map, which a tapped head does not read alone")
        object.__setattr__(self, "_metric_layer", model.heads["class"].linear)

    @property
    def metric_layer(self) -> nn.Linear:
        if self._metric_layer is None:
            raise RuntimeError("ECAML needs the embedder's metric layer: call method.attach(model) once the "
                               "embedder is built")
        return self._metric_layer

    def loss(self, out: dict[str, torch.Tensor], batch: Batch) -> LossOutput:
        base = self.base_objective(out["class"], batch.labels)
        confusion, energy, penalty = self.confusion_terms(out["features"], batch)
        total = base + self.params.confusion_weight * confusion + penalty
        parts = {"base": base, "confusion": confusion, "energy": energy, "penalty": penalty}
        return LossOutput(total, {key: float(value.detach()) for key, value in parts.items()})

    def confusion_terms(
        self, features: torch.Tensor, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(confusion term, energy E, penalty R(W)) in fp32 (fp64 for a float64 model), also under autocast;
        z = W f + b with f detached unless configured otherwise. A one-class batch has no pairs: term and E are 0."""
        layer, p = self.metric_layer, self.params
        features = features.detach() if p.detach_features else features
        dtype = torch.promote_types(layer.weight.dtype, torch.float32)
        with torch.autocast(features.device.type, enabled=False):
            weight, bias = layer.weight.to(dtype), layer.bias.to(dtype)
            z = F.linear(features.to(dtype), weight, bias)
            anchors, partners = different_class_pairs(batch.labels, p.pairs_per_anchor, self.pair_generator(batch))
            if len(anchors) == 0:
                energy = z.sum() * 0.0
                confusion = energy
            else:
                energy = confusion_energy(z, anchors.to(z.device), partners.to(z.device))
                confusion = energy.log() if p.log_energy else energy
            penalty = row_norm_penalty(weight, p.row_norm_weight)
        return confusion, energy, penalty

    def pair_generator(self, batch: Batch) -> torch.Generator:
        """A CPU generator seeded from the run's seed and the batch's rows: the draw is reproducible (resume
        included) and leaves the global RNG stream, hence the augmentations, as the baseline's."""
        words = np.concatenate([[self.config.train.seed], batch.rows.detach().cpu().numpy().ravel()]).astype(np.int64)
        digest = hashlib.blake2b(words.tobytes(), digest_size=8).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)
