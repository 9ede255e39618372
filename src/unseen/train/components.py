"""Everything a run builds from its config: the splits, the method, the network it asks for, the transforms and
the evaluation of a table under its protocol. Training builds it once; `check_config` builds what needs no data."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from unseen.config import Config
from unseen.data import build_splits
from unseen.data.base import Splits, Table
from unseen.data.batches import CachePlan, LoaderBatches, TensorBatches, TrainBatches, choose_cache
from unseen.data.transforms import BatchBorderFillAffine, Transform, build_batch_augment, build_transform
from unseen.embedding import embed_table
from unseen.errors import ConfigError
from unseen.evaluation.table import DESCRIPTIONS, Protocol, choose_protocol, evaluate_table
from unseen.methods import METHODS, Method, MethodContext
from unseen.models.network import EmbeddingModel, build_model
from unseen.models.spec import ModelSpec
from unseen.train.distributed import embed_sharded, main_first, once


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: '{name}' asked for, but no CUDA device is available")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def input_channels(table: Table, preset: str) -> int:
    """1 for grayscale in-memory images under the small preset, else 3 (files are decoded as RGB or L)."""
    if preset == "small" and table.images is not None:
        return 1 if table.images.ndim == 3 else table.images.shape[-1]
    return 3


def eval_transform(spec: ModelSpec) -> Transform:
    """The transform a trained network's inputs get at test time, from its spec alone."""
    return build_transform(spec.preset, spec.image_size, train=False, mean=spec.mean, std=spec.std,
                           channels=spec.in_chans)


@dataclass
class Components:
    """A run's parts; shared by training and by the evaluation at its end."""

    config: Config
    splits: Splits
    spec: ModelSpec
    model: EmbeddingModel
    method: Method
    device: torch.device
    cache: CachePlan | None = None  # what `train_batches` chose

    @property
    def ctx(self) -> MethodContext:
        return self.method.ctx

    def transform(self, train: bool) -> Transform:
        """The per-image transform; in training it leaves out the jitter that `batch_augment` applies (and all
        jitter under `data.jitter: false`)."""
        if not train:
            return eval_transform(self.spec)
        jitter = self.config.data.jitter and self.batch_augment() is None
        return build_transform(self.spec.preset, self.spec.image_size, train=True, jitter=jitter,
                               mean=self.spec.mean, std=self.spec.std, channels=self.spec.in_chans)

    def batch_augment(self) -> BatchBorderFillAffine | None:
        """The training jitter applied to whole batches on the device (`data.augment_on`), or None."""
        data = self.config.data
        if not data.jitter or data.augment_on == "loader" or (data.augment_on == "auto" and data.preset != "small"):
            return None
        return build_batch_augment(data.preset)

    def train_batches(self) -> TrainBatches:
        """The training batches' source under `data.cache` (data/batches.py): an in-memory tensor cache, or one
        DataLoader for the run (decoded files or not), page-locked on CUDA under `data.pin_memory: auto`."""
        data = self.config.data
        table, transform = self.splits.train, self.transform(train=True)
        pin = self.device.type == "cuda" if data.pin_memory == "auto" else data.pin_memory
        deterministic = not (data.jitter and self.batch_augment() is None)
        try:
            cache = choose_cache(data.cache, table, deterministic=deterministic, max_gb=data.cache_max_gb,
                                 tensor_bytes_per_image=4 * self.spec.in_chans * self.spec.image_size ** 2)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        self.cache = cache
        if cache.kind == "tensors":
            return TensorBatches(table, transform, self.device, pin_memory=pin)
        return LoaderBatches(table, transform, num_workers=data.num_workers, pin_memory=pin,
                             decoded=cache.kind == "decoded")

    def embed(self, table: Table, output: str = "class", progress: bool = False) -> np.ndarray:
        """`output` of every row of `table` (under torchrun: each process embeds a shard, all get every row)."""
        return embed_sharded(self.model, table, lambda part: embed_table(
            self.model, part, self.transform(train=False), output=output, batch_size=self.config.evaluation.batch_size,
            device=self.device, num_workers=self.config.data.num_workers, progress=progress,
            description=f"embed {table.name}"))

    def protocol(self, table: Table) -> Protocol:
        return choose_protocol(self.config.evaluation.protocol, table, self.splits.dataset)

    def describe_protocol(self, table: Table) -> str:
        return DESCRIPTIONS[self.protocol(table)]

    def evaluate(self, table: Table, progress: bool = False, metrics: tuple[str, ...] | None = None,
                 embeddings: np.ndarray | None = None) -> dict[str, float]:
        """The configured metrics (or `metrics`) of the class embedding on `table` under its protocol (under torchrun:
        computed by rank 0, given to all)."""
        ev = self.config.evaluation
        vectors = self.embed(table, progress=progress) if embeddings is None else embeddings
        return once(lambda: evaluate_table(vectors, table, self.protocol(table), metrics=metrics or ev.metrics,
                                           recall_at=ev.recall_at, vehicleid_repeats=ev.vehicleid_repeats,
                                           progress=progress))


def build_network(config: Config, in_chans: int, ctx: MethodContext) -> tuple[Method, ModelSpec, EmbeddingModel]:
    """The method of `config.method`, the network it asks for (pretrained trunk weights loaded), and the method
    built against that network (`ctx.output_dims` filled in)."""
    cls = METHODS.get(config.method.name)
    params = cls.parse_params(config.method.kwargs)
    spec = cls.configure_model(params, ModelSpec.from_config(config, in_chans))
    model = build_model(spec, pretrained=config.model.pretrained)
    if spec.preset == "imagenet" and spec.mean is None:  # the trunk's own normalization, fixed in the spec
        cfg = model.trunk.pretrained_cfg
        if cfg.get("mean") and cfg.get("std"):
            spec = spec.model_copy(update={"mean": tuple(cfg["mean"]), "std": tuple(cfg["std"])})
    ctx.output_dims = model.output_dims
    ctx.embedding_dim = spec.embedding_dim
    return cls(params, ctx), spec, model


def method_context(config: Config, num_classes: int, **fields) -> MethodContext:
    return MethodContext(loss=config.loss, miner=config.miner, sampler=config.sampler, num_classes=num_classes,
                         embedding_dim=config.model.embedding_dim, seed=config.train.seed,
                         total_steps=config.train.steps or 0, loss_lr=config.optimizer.loss_lr, **fields)


def build_components(config: Config, splits: Splits | None = None, progress: bool = False) -> Components:
    """Splits (read unless given), method and network on the configured device; the budget in steps is set on the
    method's context (`train.steps`, else `train.epochs` × the method's steps per epoch)."""
    device = resolve_device(config.train.device)
    if config.data.augment_on == "device" and config.data.preset != "small":
        raise ConfigError(f"data.augment_on: 'device' needs data.preset 'small' (the {config.data.preset!r} crops "
                          "need each full image); use 'loader' or 'auto'")
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    splits = splits or main_first(lambda: build_splits(config.data, progress=progress))
    ctx = method_context(config, splits.train.num_classes, train=splits.train, device=device)
    method, spec, model = build_network(config, input_channels(splits.train, config.data.preset), ctx)
    model, method = model.to(device), method.to(device)
    components = Components(config, splits, spec, model, method, device)
    ctx.embed = lambda output: components.embed(splits.train, output=output, progress=progress)
    if config.train.steps is None:
        ctx.total_steps = config.train.epochs * method.steps_per_epoch()
    return components


def build_method(
    config: Config, *, num_classes: int, train: Table | None = None, in_chans: int = 1, total_steps: int | None = None,
    embed: Callable[[str], np.ndarray] | None = None,
) -> tuple[Method, EmbeddingModel]:
    """The method of `config` and the network it asks for, on the CPU, outside a run (custom loops, tests): the
    context gets `train`, the budget (`train.steps`, else `total_steps`) and the embedding function `embed`."""
    ctx = method_context(config, num_classes, train=train, embed=embed)
    if total_steps is not None:
        ctx.total_steps = total_steps
    method, _, model = build_network(config, in_chans, ctx)
    return method, model


def check_config(config: Config) -> None:
    """Build what a config names that needs no data (loss, miner, method, backbone) to catch errors early."""
    no_weights = config.model_copy(update={"model": config.model.model_copy(update={"pretrained": False})})
    build_network(no_weights, 3, method_context(config, num_classes=2))
