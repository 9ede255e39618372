"""Conventional metric losses and miners from pytorch-metric-learning, by name, with config keyword arguments.

`loss.name=MultiSimilarityLoss loss.alpha=2` builds `MultiSimilarityLoss(alpha=2)`. Arguments that take
objects accept names: `loss.distance=CosineSimilarity`, `loss.reducer=MeanReducer`. Losses that need the
number of classes or the embedding size (proxy and classification losses) get them from the run.

`metric_loss` applies a loss and a miner in full precision: under bf16 autocast PML's distances (a matmul) would
otherwise run in bf16, and with them the miners' choices, the exp / logsumexp and the losses' sentinel values.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytorch_metric_learning.distances as pml_distances
import pytorch_metric_learning.losses as pml_losses
import pytorch_metric_learning.miners as pml_miners
import pytorch_metric_learning.reducers as pml_reducers
import pytorch_metric_learning.regularizers as pml_regularizers
import torch
from torch import nn

from unseen.errors import ConfigError
from unseen.registry import Registry

# Abstract bases and losses whose input is not a labelled batch of embeddings (two views, pre-packed
# triplets, ManifoldLoss's label-free proxies).
_NOT_LOSSES = {
    "BaseMetricLossFunction", "GenericPairLoss", "VICRegLoss", "ManifoldLoss", "MultipleLosses", "CrossBatchMemory",
    "SelfSupervisedLoss", "BaseLossWrapper",
}
_NOT_MINERS = {
    "BaseMiner", "BaseTupleMiner", "BaseSubsetBatchMiner", "EmbeddingsAlreadyPackagedAsTriplets",
}

# What PML's losses call the embedding size.
_EMBEDDING_SIZE_ARGUMENTS = ("embedding_size", "descriptors_dim")

_OBJECT_ARGUMENTS = {
    "distance": pml_distances,
    "reducer": pml_reducers,
    "embedding_regularizer": pml_regularizers,
    "weight_regularizer": pml_regularizers,
}


def _registry(kind: str, module: Any, base: type, excluded: set[str]) -> Registry[type]:
    registry: Registry[type] = Registry(kind, key=f"{kind}.name")
    for name, obj in sorted(vars(module).items()):
        if inspect.isclass(obj) and issubclass(obj, base) and name not in excluded:
            registry.register(name)(obj)
    return registry


LOSSES = _registry("loss", pml_losses, pml_losses.BaseMetricLossFunction, _NOT_LOSSES)
MINERS = _registry("miner", pml_miners, pml_miners.BaseMiner, _NOT_MINERS)


def build_loss(name: str, kwargs: dict[str, Any], *, num_classes: int, embedding_dim: int) -> nn.Module:
    """A PML loss by name; `num_classes` / `embedding_size` are filled in where the loss takes them."""
    cls = LOSSES.get(name)
    kwargs = dict(kwargs)
    accepted = _accepted_arguments(cls)
    run_values = {"num_classes": num_classes, **{key: embedding_dim for key in _EMBEDDING_SIZE_ARGUMENTS}}
    for key, value in run_values.items():
        if key in accepted and key not in kwargs:
            kwargs[key] = value
    return _construct(cls, kwargs, "loss")


def build_miner(name: str | None, kwargs: dict[str, Any]) -> nn.Module | None:
    """A PML miner by name, or None for `miner.name: null` (the loss sees every pair/triplet)."""
    if name is None:
        if kwargs:
            raise ConfigError(f"miner: arguments {sorted(kwargs)} given but miner.name is null")
        return None
    return _construct(MINERS.get(name), dict(kwargs), "miner")


def full_precision(dtype: torch.dtype) -> torch.dtype:
    """The dtype a metric term computes in: float32, or float64 for float64 inputs (a float64 model, tests)."""
    return torch.promote_types(dtype, torch.float32)


def metric_loss(
    loss: Callable[..., torch.Tensor],
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    miner: Callable[[torch.Tensor, torch.Tensor], Any] | None = None,
) -> torch.Tensor:
    """`loss(embeddings, labels, miner(embeddings, labels))` (no tuples without a miner) in fp32 (fp64 for float64
    embeddings) with autocast off, so that the similarity matrices, the miner's choice of tuples, exp / logsumexp
    and the sentinel values are those of the fp32 run also when the network runs under bf16 autocast. Without
    autocast, the same as calling the two on `embeddings.float()`."""
    with torch.autocast(embeddings.device.type, enabled=False):
        embeddings = embeddings.to(full_precision(embeddings.dtype))
        tuples = miner(embeddings, labels) if miner is not None else None
        return loss(embeddings, labels, tuples)


def _construct(cls: type, kwargs: dict[str, Any], section: str) -> nn.Module:
    for key, module in _OBJECT_ARGUMENTS.items():
        if isinstance(kwargs.get(key), str):
            kwargs[key] = _named_object(module, kwargs[key], f"{section}.{key}")
    try:
        return cls(**kwargs)
    except TypeError as error:
        accepted = _accepted_arguments(cls)
        raise ConfigError(
            f"{section}: {cls.__name__} rejected its arguments ({error}); it takes: {', '.join(accepted)}"
        ) from None
    except (ValueError, AssertionError) as error:
        raise ConfigError(f"{section}: {cls.__name__}: {error}") from None


def _named_object(module: Any, name: str, key: str) -> object:
    obj = getattr(module, name, None)
    if not inspect.isclass(obj):
        known = sorted(n for n, o in vars(module).items() if inspect.isclass(o) and not n.startswith("Base"))
        raise ConfigError(f"{key}: unknown '{name}'; known: {', '.join(known)}")
    return obj()


def _accepted_arguments(cls: type) -> list[str]:
    names: list[str] = []
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        for param in inspect.signature(init).parameters.values():
            if param.name != "self" and param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                if param.name not in names:
                    names.append(param.name)
    return names
