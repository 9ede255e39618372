"""Generalization methods by name (`method.name`)."""

from __future__ import annotations

from unseen.config import Config
from unseen.methods.base import Batch, EpochContext, LossOutput, Method
from unseen.methods.baseline import Baseline
from unseen.methods.class_adversarial import ClassAdversarial
from unseen.methods.divide_conquer import DivideAndConquer
from unseen.methods.ecaml import ECAML
from unseen.methods.sharing import Sharing
from unseen.registry import Registry

METHODS: Registry[type[Method]] = Registry("method", key="method.name")
for _method in (Baseline, ECAML, ClassAdversarial, DivideAndConquer, Sharing):
    METHODS.register(_method.name)(_method)


def build_method(config: Config, *, num_classes: int, embedding_dim: int) -> Method:
    cls = METHODS.get(config.method.name)
    return cls(config, num_classes=num_classes, embedding_dim=embedding_dim)


__all__ = ["METHODS", "Batch", "EpochContext", "LossOutput", "Method", "build_method"]
