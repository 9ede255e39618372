"""Data-parallel training on PyTorch's own DistributedDataParallel, started by torchrun, with losses that see the
global batch.

`torchrun --nproc_per_node=N -m unseen train CONFIG` starts N processes; each joins the process group from torchrun's
environment (`start`: nccl on CUDA, one GPU per process by LOCAL_RANK; gloo on the CPU). In one process every
function here does nothing, or computes as it would without it.

- One seeded global batch stream: every process plans the same epoch and takes its contiguous part of each batch,
  with the batch's own per-sample augmentation seeds (`shard`); the parts in rank order are the batch of one process,
  so nothing is duplicated or dropped.
- `train.distributed_loss: global` (default): each process runs its part through the network, and the network's
  outputs, the labels and the rows of every process are gathered (`GlobalBatch`, `gather_rows`), so that the method's
  loss — the miner's pairs, proxies, ECAML's pairs, the adversaries, the decorrelation, every term — is the loss of
  the whole batch, computed alike on every process. `local`: each process's loss on its own part (for comparison).
- What every process must share is computed once, on rank 0, and broadcast (`once`): the methods' clusterings, the
  evaluation metrics. A table is embedded in shards, one per process, gathered with each row exactly once
  (`embed_sharded`).
- At start the processes compare their resolved config, run directory and data (`check_agreement`); each epoch
  they compare their plans (`shard`): a difference is one error line, never a silent divergence.

Why the global loss gives one process's update: every process computes the same loss L of the gathered outputs Y.
The gather's backward hands each process its own rows of ∂L/∂Y times the number of processes W; DDP averages the
gradients over the processes, so the network gets Σ_r ∂L/∂Y_r · ∂Y_r/∂θ, the whole batch's gradient. Parameters that
meet L directly (the method's proxies, adversaries, projection; ECAML's metric layer in its confusion and penalty)
get the full ∂L/∂θ on every process, which the average leaves as it is.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from unseen.data.samplers import BatchPlan
from unseen.errors import ConfigError, DatasetError

if TYPE_CHECKING:
    from pathlib import Path

    from unseen.config import Config
    from unseen.data.base import Splits, Table
    from unseen.methods.base import Batch, LossOutput
    from unseen.train.step import TrainingStep

T = TypeVar("T")


# -- the process group -------------------------------------------------------------------------------------------
def start(config: Config) -> None:
    """Join torchrun's process group, once per process: nccl when the run is on CUDA (each process on the GPU of its
    LOCAL_RANK), gloo otherwise. Then check that the processes can share the config's batches."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        device = config.train.device
        if device.startswith("cuda:"):
            raise ConfigError(f"train.device: {device!r} puts every process on one GPU; under torchrun use auto or "
                              "cuda (each process takes the GPU of its LOCAL_RANK)")
        cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    check_batch(config, world_size())


def stop() -> None:
    """Leave the process group (at the end of a run; nothing in one process)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0: the process that logs, writes the run directory and shows progress bars."""
    return rank() == 0


def check_batch(config: Config, processes: int) -> None:
    """The P×K batch must split into equal parts, one per process."""
    s = config.sampler
    batch = s.classes_per_batch * s.samples_per_class
    if batch % processes:
        raise ConfigError(f"sampler.classes_per_batch × sampler.samples_per_class = {batch} images per batch do not "
                          f"split evenly over {processes} processes; make the batch a multiple of {processes}")


def _collective_device() -> torch.device:
    """Where tensors must be for a collective: the process's GPU under nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# -- one result for every process --------------------------------------------------------------------------------
def once(compute: Callable[[], T]) -> T:
    """`compute()` run on rank 0 only, its result (or its exception) given to every process: for what all must share,
    such as a clustering or the evaluation metrics. `compute` must not itself communicate."""
    if world_size() == 1:
        return compute()
    box: list[Any] = [None]
    if is_main():
        try:
            box[0] = (True, compute())
        except Exception as error:  # every process raises it, rather than wait for a result that never comes
            box[0] = (False, error)
    dist.broadcast_object_list(box, src=0)
    ok, value = box[0]
    if not ok:
        raise value
    return value


def agree(value: T) -> T:
    """Rank 0's `value` on every process (e.g. a time stamp in a run directory's name)."""
    return once(lambda: value)


def main_first(compute: Callable[[], T]) -> T:
    """`compute()` on rank 0 first, then on the others: a download or a scan cache is written once, then read."""
    if world_size() == 1:
        return compute()
    if is_main():
        try:
            return compute()
        finally:
            dist.barrier()
    dist.barrier()
    return compute()


# -- agreement ---------------------------------------------------------------------------------------------------
def check_agreement(config: Config, splits: Splits, run_dir: str | Path) -> None:
    """Every process must train the same config into the same run directory on the same data; the first difference
    from rank 0 is a ConfigError (config, run directory) or a DatasetError (a table) on every process."""
    if world_size() == 1:
        return
    mine = {"config": _flatten(config.to_dict()), "run_dir": str(run_dir),
            "tables": {t.name: (len(t), table_digest(t)) for t in (splits.train, splits.val, splits.test)}}
    everyone: list[Any] = [None] * world_size()
    dist.all_gather_object(everyone, mine)
    first = everyone[0]
    for other, theirs in enumerate(everyone[1:], start=1):
        for key, value in first["config"].items():
            if theirs["config"].get(key) != value:
                raise ConfigError(f"{key}: the processes disagree (rank {other}: {theirs['config'].get(key)!r}, "
                                  f"rank 0: {value!r}); give every process the same config and overrides")
        if theirs["run_dir"] != first["run_dir"]:
            raise ConfigError(f"--out: the processes disagree on the run directory (rank {other}: "
                              f"{theirs['run_dir']}, rank 0: {first['run_dir']})")
        for name, (rows, digest) in first["tables"].items():
            their_rows, their_digest = theirs["tables"][name]
            if their_digest != digest:
                raise DatasetError(f"{name} table: the processes read different data (rank {other}: {their_rows} "
                                   f"rows, rank 0: {rows} rows{', other content' if rows == their_rows else ''}); "
                                   "every process must read the same data (data.root, $UNSEEN_DATA)")


def table_digest(table: Table) -> str:
    """A hash of what a table holds: labels, class names, images (in-memory) or paths, query and gallery roles."""
    digest = hashlib.blake2b(digest_size=16)
    for array in (table.labels, table.is_query, table.is_gallery):
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update("\0".join(table.class_names).encode())
    if table.images is not None:
        digest.update(np.ascontiguousarray(table.images).tobytes())
    else:
        digest.update("\0".join(table.paths or ()).encode())
    return digest.hexdigest()


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict as {dotted key: value}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# -- the batch stream --------------------------------------------------------------------------------------------
def shard(plan: BatchPlan) -> BatchPlan:
    """This process's part of every batch of `plan` (the plan itself in one process), after checking that every
    process planned the same batches."""
    if world_size() == 1:
        return plan
    digest = hashlib.blake2b(digest_size=16)
    for rows, seeds in zip(plan.indices, plan.seeds, strict=True):
        digest.update(np.asarray(rows, dtype=np.int64).tobytes() + np.asarray(seeds, dtype=np.int64).tobytes())
    digest.update(json.dumps(plan.streams).encode())
    everyone: list[Any] = [None] * world_size()
    dist.all_gather_object(everyone, digest.hexdigest())
    if len(set(everyone)) > 1:
        raise RuntimeError(f"the processes planned different batches ({len(set(everyone))} different plans); a "
                           "method's plan must be a function of the seed, the epoch and its checkpointed state")
    return plan.shard(rank(), world_size())


# -- gathering ---------------------------------------------------------------------------------------------------
def row_counts(rows: int) -> list[int]:
    """The number of rows each process holds, in rank order."""
    count = torch.tensor([rows], dtype=torch.int64, device=_collective_device())
    counts = [torch.zeros_like(count) for _ in range(world_size())]
    dist.all_gather(counts, count)
    return [int(c.item()) for c in counts]


def _all_gather_rows(tensor: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Every process's rows of `tensor` (count[r] rows on process r), concatenated in rank order; no gradient."""
    padded = tensor.new_zeros((max(counts), *tensor.shape[1:]), device=_collective_device())
    padded[: len(tensor)] = tensor.detach()
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([part[:count] for part, count in zip(parts, counts, strict=True)]).to(tensor.device)


class _GatherRows(torch.autograd.Function):
    """All processes' rows in rank order; backward: this process's rows of the gradient, times the number of
    processes (every process computed the same loss; DDP's average turns the factor into the sum over processes)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, counts: list[int]) -> torch.Tensor:
        ctx.start = sum(counts[: rank()])
        ctx.stop = ctx.start + counts[rank()]
        ctx.processes = len(counts)
        return _all_gather_rows(tensor, counts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad[ctx.start : ctx.stop] * ctx.processes, None


def gather_rows(tensor: torch.Tensor, counts: list[int] | None = None) -> torch.Tensor:
    """The rows of `tensor` from every process, in rank order, with gradient for floating-point tensors (see
    `_GatherRows`). `counts`: each process's number of rows, when already known (`row_counts`)."""
    if world_size() == 1:
        return tensor
    counts = counts or row_counts(len(tensor))
    if tensor.is_floating_point() and torch.is_grad_enabled():
        return _GatherRows.apply(tensor, counts)
    return _all_gather_rows(tensor, counts)


# -- the training step -------------------------------------------------------------------------------------------
class _GatheringNetwork:
    """The network as a method sees it under the global loss: this process's images in, every process's outputs out
    (gathered with gradient); its attributes (`heads`, ...) are the network's."""

    def __init__(self, model: nn.Module, counts: list[int]) -> None:
        self.model = model
        self.counts = counts

    def __call__(self, images: torch.Tensor, **kwargs: Any) -> dict[str, Any]:
        return {name: self._gather(value) for name, value in self.model(images, **kwargs).items()}

    def _gather(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return gather_rows(value, self.counts)
        if isinstance(value, list):
            return [self._gather(v) for v in value]
        return value

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


class GlobalBatch(nn.Module):
    """`train.distributed_loss: global`: the method's objective on the whole batch. This process's images go through
    the network; the method gets every process's outputs and the whole batch's labels and rows, in rank order — the
    batch of one process."""

    def __init__(self, step: TrainingStep) -> None:
        super().__init__()
        self.step = step

    def forward(self, batch: Batch) -> LossOutput:
        counts = row_counts(len(batch.images))
        whole = replace(batch, labels=gather_rows(batch.labels, counts), rows=gather_rows(batch.rows, counts))
        return self.step.method.objective(_GatheringNetwork(self.step.model, counts), whole)


class LocalBatch(nn.Module):
    """`train.distributed_loss: local`: each process's loss on its own part of the batch (DDP averages the gradients);
    the logged parts, `loss` included, are the means over the processes."""

    def __init__(self, step: TrainingStep) -> None:
        super().__init__()
        self.step = step

    def forward(self, batch: Batch) -> LossOutput:
        result = self.step(batch)
        everyone: list[Any] = [None] * world_size()
        dist.all_gather_object(everyone, {"loss": float(result.total.detach()), **result.parts})
        parts = {key: float(np.mean([p[key] for p in everyone if key in p])) for key in everyone[0]}
        return replace(result, parts=parts)


def wrap(step: TrainingStep, loss: str = "global") -> nn.Module:
    """The training step as every process runs it: `step` itself in one process, else in DistributedDataParallel
    around the global (or local) loss. Every step uses all of the network; a method's own modules may sit some steps
    out (Sharing's two tasks' losses, D&C's learners), so DDP looks for unused parameters when the method has any."""
    if world_size() == 1:
        return step
    module = GlobalBatch(step) if loss == "global" else LocalBatch(step)
    own = any(p.requires_grad for p in step.method.parameters())
    return DistributedDataParallel(module, find_unused_parameters=own)


# -- embedding ---------------------------------------------------------------------------------------------------
def embed_sharded(model: nn.Module, table: Table, embed: Callable[[Table], np.ndarray]) -> np.ndarray:
    """`embed(table)`, split over the processes: each embeds a contiguous shard of the rows and every process gets
    all rows in table order, each exactly once (no padding duplicates). The network's buffers are rank 0's first
    (BatchNorm statistics: those its checkpoint holds)."""
    if world_size() == 1:
        return embed(table)
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)
    rows = np.array_split(np.arange(len(table)), world_size())[rank()]
    part = torch.from_numpy(np.ascontiguousarray(embed(table.select(rows)), dtype=np.float32))
    shapes = [torch.zeros(2, dtype=torch.int64, device=_collective_device()) for _ in range(world_size())]
    dist.all_gather(shapes, torch.tensor(part.shape, dtype=torch.int64, device=_collective_device()))
    width = max(int(s[1]) for s in shapes)
    part = part if len(part) else torch.zeros((0, width))
    return _all_gather_rows(part, [int(s[0]) for s in shapes]).numpy()
