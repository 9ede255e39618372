"""The training loop: build everything from a validated config, step, log, validate, checkpoint, test.

The budget is counted in optimizer steps (`train.steps`, else `train.epochs` × the method's steps per epoch).
Every `train.validate_every` steps, and at the end, the network is evaluated on the validation classes, the best
one so far is kept as `checkpoints/best.pt` and the whole training state as `checkpoints/last.pt` (both written
atomically). At the end the best and the last checkpoints are evaluated on the test classes.

Run dir: `config.yaml` (resolved), `classes.json` (label ids -> class names per split), `bad_images.json` (when
files were checked and skipped), `history.jsonl` (one line per logging window and per validation),
`test_trace.jsonl` (with `train.trace_test`: test metrics at each validation, for figures only; nothing reads it
to choose), `checkpoints/{last,best}.pt`, `metrics.json` (the final validation and test metrics with the
protocol, the selection rule and the commit).

Resuming continues exactly, from any checkpoint: an epoch's plan is a pure function of the seed, the epoch and
the method's checkpointed state, every sample carries its own augmentation seed, and the RNG states are saved.

Under torchrun (`train/distributed.py`) every process runs this loop on its part of each batch; rank 0 alone logs,
shows progress and writes the run directory.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from unseen.config import Config, dump_config, load_config, resolve_steps, validate_config
from unseen.data.base import Splits
from unseen.data.batches import TrainBatches
from unseen.data.samplers import BatchPlan
from unseen.errors import CheckpointError, ConfigError
from unseen.files import write_json_atomic, write_text_atomic
from unseen.methods import Batch
from unseen.provenance import commit
from unseen.train import distributed
from unseen.train.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from unseen.train.components import Components, build_components, seed_everything
from unseen.train.step import TrainingStep

TRACE_METRICS = ("recall", "map@r")


def build_optimizer(components: Components) -> torch.optim.Optimizer:
    """The network's groups (trunk, heads, attention) and the method's; a parameter that a method group lists
    (e.g. ECAML's metric layer at its own lr) leaves the network's group."""
    cfg = components.config.optimizer
    method_groups = components.method.param_groups(components.model, cfg.lr, cfg.weight_decay)
    claimed = {id(p) for group in method_groups for p in group["params"]}
    groups = []
    for group in components.model.param_groups(cfg.lr, cfg.backbone_lr, cfg.weight_decay):
        params = [p for p in group["params"] if id(p) not in claimed]
        if params:
            groups.append({**group, "params": params})
    groups += method_groups
    switch = components.config.train.fused_optimizer
    fused = components.device.type == "cuda" if switch == "auto" else switch
    options: dict[str, Any] = {"fused": True} if fused else {}
    try:
        if cfg.name == "sgd":
            return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, **options)
        optimizer_cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
        return optimizer_cls(groups, lr=cfg.lr, **options)
    except RuntimeError as error:
        raise ConfigError(f"train.fused_optimizer: {cfg.name} has no fused kernel here "
                          f"({str(error).splitlines()[0]}); use auto or false") from None


def build_scheduler(
    config: Config, optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then constant / cosine to `min_lr_ratio` / ×gamma at each milestone; per optimizer step."""
    cfg = config.schedule
    milestones = [resolve_steps(m, total_steps) for m in cfg.milestones]

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.name == "cosine":
            progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
            return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        if cfg.name == "step":
            return cfg.gamma ** sum(step >= m for m in milestones)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class JsonLines:
    """An append-only .jsonl file; on resume, lines after the checkpoint's step are dropped. `active=False` (the
    processes other than rank 0) neither trims nor writes."""

    def __init__(self, path: Path, keep_until_step: int, active: bool = True) -> None:
        self.path = path
        self.active = active
        if active and path.exists():
            lines = [line for line in path.read_text().splitlines() if line.strip()]
            kept = [line for line in lines if json.loads(line).get("step", 0) <= keep_until_step]
            write_text_atomic(path, "".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        if not self.active:
            return
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")


class Trainer:
    def __init__(self, config: Config, run_dir: str | Path, *, progress: bool = True,
                 splits: Splits | None = None) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        distributed.start(config)
        self.progress = progress and distributed.is_main()
        seed_everything(config.train.seed)
        self.c = build_components(config, splits, self.progress)
        distributed.check_agreement(config, self.c.splits, self.run_dir)
        if config.train.channels_last:
            self.c.model.to(memory_format=torch.channels_last)
        self.training_step = distributed.wrap(TrainingStep(self.c.model, self.c.method), config.train.distributed_loss)
        self.step_function = torch.compile(self.training_step) if config.train.compile else self.training_step
        self.train_batches: TrainBatches | None = None  # built at the first step (data/batches.py)
        self._plan: tuple[int, BatchPlan] | None = None  # the current epoch's plan, drawn once per epoch
        self.optimizer = build_optimizer(self.c)
        self.steps_per_epoch = self.c.method.steps_per_epoch()
        if self.steps_per_epoch < 1:
            raise ConfigError(f"method ({config.method.name}): its plan has no steps")
        self.total_steps = self.c.ctx.total_steps
        self.validate_every = max(1, resolve_steps(config.train.validate_every, self.total_steps))
        self.scheduler = build_scheduler(config, self.optimizer, self.total_steps)
        self.step = 0
        self.stream_steps: dict[str, int] = {}  # optimizer steps per batch stream (class, shared, cluster...)
        self.earlier_seconds = 0.0  # wall time of the run's earlier sessions (before a resume)
        self.started = time.perf_counter()
        self.best: dict[str, Any] = {"value": -math.inf, "step": None}
        self.resumed = False
        self.commit = commit()
        self._logs: tuple[JsonLines, JsonLines] | None = None  # history and test trace, once the run dir is open

    @classmethod
    def resume(cls, run_dir: str | Path, *, progress: bool = True, splits: Splits | None = None) -> Trainer:
        """Continue the run in `run_dir` from its last checkpoint, with the config it was started with."""
        run_dir = Path(run_dir)
        config = load_config(run_dir / "config.yaml")
        trainer = cls(config, run_dir, progress=progress, splits=splits)
        trainer._load_state(load_checkpoint(run_dir / "checkpoints" / "last.pt"), run_dir / "checkpoints" / "last.pt")
        trainer.resumed = True
        return trainer

    @property
    def wall_seconds(self) -> float:
        """Wall time spent in this run so far, over all its sessions (resumes)."""
        return self.earlier_seconds + time.perf_counter() - self.started

    @property
    def epoch(self) -> int:
        return self.step // self.steps_per_epoch

    # -- state -------------------------------------------------------------------------------------
    def _artifact(self) -> dict[str, Any]:
        """What a checkpoint needs to be used without the training data (`unseen.load`)."""
        return {"format": CHECKPOINT_FORMAT, "model_spec": self.c.spec.to_dict(), "config": self.config.to_dict(),
                "class_names": list(self.c.splits.train.class_names), "commit": self.commit,
                "model": self.c.model.state_dict(), "step": self.step, "epoch": self.epoch}

    def _state(self) -> dict[str, Any]:
        state = {
            **self._artifact(),
            "method": self.c.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "best": dict(self.best),
            "stream_steps": dict(self.stream_steps),
            "wall_seconds": self.wall_seconds,
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": _numpy_state()},
        }
        if torch.cuda.is_available():
            state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def _load_state(self, state: dict[str, Any], path: Path) -> None:
        if validate_config(state["config"]).to_dict() != self.config.to_dict():  # defaults added since count as set
            raise CheckpointError(f"{path}: its config differs from config.yaml")
        try:
            self.c.model.load_state_dict(state["model"])
            self.c.method.load_state_dict(state["method"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise CheckpointError(f"{path}: does not fit this model ({str(error).splitlines()[0]})") from None
        self.step, self.best = state["step"], dict(state["best"])
        self.stream_steps = dict(state.get("stream_steps", {}))
        self.earlier_seconds = float(state.get("wall_seconds", 0.0))
        self.c.ctx.step = self.step
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(_numpy_state_from(state["rng"]["numpy"]))
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])

    # -- loop --------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train to the budget, then evaluate the best and the last checkpoints; returns metrics.json."""
        self.train()
        return self.finish()

    def train(self, steps: int | None = None) -> None:
        """Take `steps` more optimizer steps (default: up to the budget), validating and checkpointing on schedule;
        the first call opens the run directory. `fit` is `train()` then `finish()`; a benchmark times `train(n)`."""
        if self._logs is None:
            self._logs = self._open_run_dir()
        history, trace = self._logs
        until = self.total_steps if steps is None else min(self.total_steps, self.step + steps)
        with tqdm(total=self.total_steps, initial=self.step, desc="train", disable=not self.progress,
                  leave=False) as bar:
            while self.step < until:
                self._train_epoch(history, trace, bar, until)

    def _open_run_dir(self) -> tuple[JsonLines, JsonLines]:
        """The run directory with its config and data records (a new run) and its history and test-trace files."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.started = time.perf_counter()
        if not self.resumed and distributed.is_main():
            for name in ("history.jsonl", "test_trace.jsonl"):
                (self.run_dir / name).unlink(missing_ok=True)
            write_text_atomic(self.run_dir / "config.yaml", dump_config(self.config))
            self._write_data_records()
        history = JsonLines(self.run_dir / "history.jsonl", keep_until_step=self.step, active=distributed.is_main())
        trace = JsonLines(self.run_dir / "test_trace.jsonl", keep_until_step=self.step, active=distributed.is_main())
        return history, trace

    def _train_epoch(self, history: JsonLines, trace: JsonLines, bar: tqdm, until: int) -> None:
        """The rest of the current epoch's plan, up to step `until`."""
        c, cfg = self.c, self.config
        epoch, start = self.epoch, self.step % self.steps_per_epoch
        c.ctx.step = epoch * self.steps_per_epoch
        if self._plan is None or self._plan[0] != epoch:  # `train(n)` may stop and go on inside an epoch
            self._plan = epoch, c.method.plan(epoch)
        plan = self._plan[1]
        if len(plan) != self.steps_per_epoch:
            raise RuntimeError(f"method ({cfg.method.name}): epoch {epoch} planned {len(plan)} batches, but it "
                               f"declared {self.steps_per_epoch} steps per epoch")
        count = min(self.steps_per_epoch - start, until - self.step)
        part = distributed.shard(plan)  # this process's part of each batch (the whole plan in one process)
        if self.train_batches is None:
            self.train_batches = c.train_batches()
            if self.progress:
                tqdm.write(f"training images: data.cache {c.cache.describe()}")
        batches = iter(self.train_batches.batches(part.items(start)[:count]))
        augment = c.batch_augment()
        memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        window: dict[str, list[torch.Tensor | float]] = {}
        started, images_seen = time.perf_counter(), 0
        for position in range(start, start + count):
            images, labels, rows = next(batches)
            images = images.to(c.device, non_blocking=True)
            if augment is not None:
                images = augment(images, part.seeds[position])
            images = images.contiguous(memory_format=memory_format)
            stream = plan.stream(position)
            parts = self._step(Batch(images, labels.to(c.device, non_blocking=True), rows, stream))
            self.stream_steps[stream] = self.stream_steps.get(stream, 0) + 1
            images_seen += len(plan.indices[position])
            for key, value in parts.items():
                window.setdefault(key, []).append(value)
            bar.update(1)
            last = self.step == self.total_steps
            if self.step % cfg.train.log_every == 0 or last:  # the one place the step's numbers reach the host
                means = _window_means(window, self.step)
                rate = images_seen / max(time.perf_counter() - started, 1e-9)
                phase = c.method.phase(self.step - 1)
                history.write({"kind": "train", "epoch": epoch + 1, "step": self.step, "phase": phase, **means,
                               "lr": self.optimizer.param_groups[0]["lr"], "images_per_s": rate})
                bar.set_postfix(loss=f"{means['loss']:.4f}", img_s=f"{rate:.0f}", phase=phase, refresh=False)
                window.clear()
            if self.step % self.validate_every == 0 or last:
                self._validate(history, trace)
                if distributed.is_main():
                    save_checkpoint(self._state(), self.run_dir / "checkpoints" / "last.pt")

    def _step(self, batch: Batch) -> dict[str, torch.Tensor | float]:
        """One optimizer step; the loss and its parts come back as they are (tensors stay on the device, so a GPU
        step never waits for the host). On the CPU a non-finite loss stops the run at its step; on a GPU, at the
        next logging."""
        c, cfg = self.c, self.config
        c.ctx.step = self.step
        c.model.train()
        c.method.train()
        autocast = torch.autocast(c.device.type, dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16")
        with autocast:
            result = self.step_function(batch)
        if c.device.type == "cpu" and not torch.isfinite(result.total):
            raise FloatingPointError(f"step {self.step}: the loss is {result.total.item()}; lower optimizer.lr?")
        self.optimizer.zero_grad(set_to_none=True)
        result.total.backward()
        if cfg.optimizer.grad_clip is not None:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, cfg.optimizer.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return {"loss": result.total.detach(), **result.parts}

    def _validate(self, history: JsonLines, trace: JsonLines) -> None:
        """Validation metrics to history; the best checkpoint by `evaluation.select_on`. With `train.trace_test`, the
        test metrics go to their own file, after the selection, which never reads them."""
        c, val = self.c, self.c.splits.val
        if len(val) > 0:
            metrics = c.evaluate(val, progress=self.progress)
            history.write({"kind": "val", "epoch": self.epoch, "step": self.step, **metrics})
            key = self.config.evaluation.select_on
            if key not in metrics:
                raise ConfigError(f"evaluation.select_on: '{key}' is not among the metrics ({', '.join(metrics)})")
            if metrics[key] > self.best["value"]:
                self.best = {"value": metrics[key], "epoch": self.epoch, "step": self.step, "val": metrics}
                if distributed.is_main():
                    save_checkpoint({**self._artifact(), "best": dict(self.best)},
                                    self.run_dir / "checkpoints" / "best.pt")
            if self.progress:
                shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
                tqdm.write(f"step {self.step} val: {shown}")
        if self.config.train.trace_test:
            trace.write({"kind": "test_trace", "step": self.step,
                         **c.evaluate(c.splits.test, metrics=TRACE_METRICS)})

    def finish(self) -> dict[str, Any]:
        """Test metrics of the last and of the best (by validation) checkpoint -> metrics.json."""
        c = self.c
        results: dict[str, Any] = {
            "protocol": {**c.splits.describe(), "evaluation": c.describe_protocol(c.splits.test)},
            "steps": self.step, "steps_by_stream": dict(sorted(self.stream_steps.items())), "epochs": self.epoch,
            "commit": self.commit, "hardware": hardware(c.device), "model_spec": c.spec.to_dict(),
        }
        if c.cache is not None:
            results["train_cache"] = c.cache.describe()
        results["test_last"] = c.evaluate(c.splits.test, progress=self.progress)
        best_path = self.run_dir / "checkpoints" / "best.pt"
        if best_path.exists():
            best = load_checkpoint(best_path)
            c.model.load_state_dict(best["model"])
            results["selection"] = (f"best validation {self.config.evaluation.select_on} "
                                    f"(step {best['best']['step']} of {self.total_steps})")
            results["val"] = best["best"]["val"]
            results["test"] = c.evaluate(c.splits.test, progress=self.progress)
        else:
            results["selection"] = "last checkpoint (no validation classes)"
            results["test"] = results["test_last"]
        results["wall_seconds"] = self.wall_seconds
        if distributed.is_main():
            write_json_atomic(self.run_dir / "metrics.json", results)
        return results

    def _write_data_records(self) -> None:
        """classes.json (label id -> class name per split) and, when files were checked, bad_images.json."""
        s = self.c.splits
        write_json_atomic(self.run_dir / "classes.json",
                          {t.name: list(t.class_names) for t in (s.train, s.val, s.test)})
        if s.bad_images:
            write_json_atomic(self.run_dir / "bad_images.json", s.bad_images)


def _window_means(window: dict[str, list[torch.Tensor | float]], step: int) -> dict[str, float]:
    """The mean of each logged number over the window (one host transfer per name); a non-finite loss is an error."""
    means = {key: float(torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in values]).mean())
             for key, values in window.items()}
    if not math.isfinite(means.get("loss", 0.0)):
        raise FloatingPointError(f"the loss became {means['loss']} in the {len(window['loss'])} steps up to step "
                                 f"{step}; lower optimizer.lr?")
    return means


def hardware(device: torch.device) -> str:
    """What trained: the GPU's name, or the CPU's core count and torch's threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def _numpy_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _numpy_state_from(state: dict[str, Any]) -> tuple:
    return (state["name"], state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"],
            state["cached"])
