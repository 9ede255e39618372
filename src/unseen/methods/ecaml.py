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
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from unseen.errors import ConfigError
from unseen.losses.energy_confusion import confusion_energy, different_class_pairs, row_norm_penalty
from unseen.methods.base import Batch, LossOutput, Method
from unseen.models.network import EmbeddingModel
from unseen.models.spec import ModelSpec


class ECAML(Method):
    name = "ecaml"

    class Params(Method.Params):
        confusion_weight: float = Field(0.13, ge=0, description="λ of the confusion term (Caffe loss_weight)")
        row_norm_weight: float = Field(0.5, ge=0, description="λ_w of the row-norm penalty on W (Caffe lamda)")
        pairs_per_anchor: PositiveInt | None = Field(
            10, description="different-class partners drawn per anchor (Caffe random_num); null: all of them"
        )
        detach_features: bool = Field(
            True, description="true: the confusion reaches only W and b (code); false: also the backbone"
        )
        log_energy: bool = Field(True, description="true: confusion term log E (code); false: E itself")
        metric_layer_lr: PositiveFloat = Field(
            10.0, description="learning-rate multiplier of the metric layer's W and b (the authors' lr_mult 10; "
            "their bias had 20), which the confusion and the base loss pull in opposite directions; 1: off")

    @classmethod
    def configure_model(cls, params: ECAML.Params, spec: ModelSpec) -> ModelSpec:
        if spec.taps:
            raise ConfigError("method (ecaml): model.taps is not supported: the confusion term applies the class "
                              "head's W to the pooled last map, which a tapped head does not read alone")
        return spec

    def param_groups(self, model: EmbeddingModel, lr: float, weight_decay: float) -> list[dict]:
        """The metric layer W, b at `metric_layer_lr`× the lr (the bias without weight decay, as in the code), plus
        the base loss's own parameters."""
        layer = model.heads["class"].linear
        return [*super().param_groups(model, lr, weight_decay),
                {"name": "metric_layer", "params": [layer.weight], "lr": lr * self.params.metric_layer_lr,
                 "weight_decay": weight_decay},
                {"name": "metric_layer_bias", "params": [layer.bias], "lr": lr * self.params.metric_layer_lr,
                 "weight_decay": 0.0}]

    def objective(self, model: EmbeddingModel, batch: Batch) -> LossOutput:
        return self.loss(model(batch.images), batch, model.heads["class"].linear)

    def loss(self, out: dict[str, torch.Tensor], batch: Batch, metric_layer: nn.Linear | None = None) -> LossOutput:
        """base + λ·confusion + R(W); `metric_layer` is the network's class-head linear layer W, b."""
        if metric_layer is None:
            raise ValueError("ecaml: the loss needs the network's metric layer (objective passes it)")
        base = self.base_objective(out["class"], batch.labels)
        confusion, energy, penalty = self.confusion_terms(out["features"], batch, metric_layer)
        total = base + self.params.confusion_weight * confusion + penalty
        parts = {"base": base, "confusion": confusion, "energy": energy, "penalty": penalty}
        return LossOutput(total, {key: value.detach() for key, value in parts.items()})

    def confusion_terms(
        self, features: torch.Tensor, batch: Batch, layer: nn.Linear
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(confusion term, energy E, penalty R(W)) in fp32 (fp64 for a float64 model), also under autocast;
        z = W f + b with f detached unless configured otherwise. A one-class batch has no pairs: term and E are 0."""
        p = self.params
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
        words = np.concatenate([[self.ctx.seed], batch.rows.detach().cpu().numpy().ravel()]).astype(np.int64)
        digest = hashlib.blake2b(words.tobytes(), digest_size=8).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)
