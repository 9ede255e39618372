"""The training loop: build everything from a validated config, step, log, evaluate on validation, checkpoint.

Run dir: `config.yaml` (resolved), `classes.json` (label ids -> class names per split), `bad_images.json`
(image files checked and skipped, when files were read), `history.jsonl` (one line per logging window and
per validation), `checkpoints/{last,best}.pt`, `metrics.json` (final validation and test metrics of the
best and the last checkpoint, with the protocol).

Resuming continues exactly: checkpoints are taken at epoch boundaries with the optimizer, scheduler and
RNG states, and each epoch's batches and augmentations are a pure function of (seed, epoch).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from unseen.config import Config, dump_config, load_config, validate_config
from unseen.data import build_splits
from unseen.data.base import Splits, Table
from unseen.data.dataset import ImageDataset
from unseen.data.transforms import BatchBorderFillAffine, build_batch_augment, build_transform
from unseen.embedding import embed_table
from unseen.errors import CheckpointError, ConfigError
from unseen.evaluation import evaluate
from unseen.methods import Batch, EpochContext, Method, build_method
from unseen.models.embedder import Embedder, build_embedder
from unseen.train.checkpoint import load_checkpoint, save_checkpoint


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


@dataclass
class Components:
    """Everything a run builds from its config; shared by training, evaluation and embedding."""

    config: Config
    splits: Splits
    model: Embedder
    method: Method
    device: torch.device

    def transform(self, train: bool):
        """The per-image transform; in training it leaves out the jitter that `batch_augment` applies."""
        cfg = self.model.trunk.pretrained_cfg if self.config.data.preset == "imagenet" else {}
        return build_transform(self.config.data.preset, self.config.data.image_size, train=train,
                               jitter=self.batch_augment() is None, mean=cfg.get("mean"), std=cfg.get("std"))

    def batch_augment(self) -> BatchBorderFillAffine | None:
        """The training jitter applied to whole batches on the device (`data.augment_on`), or None."""
        data = self.config.data
        if data.augment_on == "loader" or (data.augment_on == "auto" and data.preset != "small"):
            return None
        return build_batch_augment(data.preset)

    def embed(self, table: Table, output: str = "class", progress: bool = False) -> np.ndarray:
        return embed_table(self.model, table, self.transform(train=False), output=output,
                           batch_size=self.config.evaluation.batch_size, device=self.device,
                           num_workers=self.config.data.num_workers, progress=progress,
                           description=f"embed {table.name}")

    def evaluate(self, table: Table, progress: bool = False) -> dict[str, float]:
        """The configured metrics of the class embedding on `table` (leave-one-out or query -> gallery)."""
        embeddings = self.embed(table, progress=progress)
        query, gallery = (None, None) if table.is_leave_one_out else (table.is_query, table.is_gallery)
        ev = self.config.evaluation
        return evaluate(embeddings, table.labels, query=query, gallery=gallery, recall_at=ev.recall_at,
                        metrics=ev.metrics)


def build_components(config: Config, splits: Splits | None = None, progress: bool = False) -> Components:
    device = resolve_device(config.train.device)
    if config.data.augment_on == "device" and config.data.preset != "small":
        raise ConfigError(f"data.augment_on: 'device' needs data.preset 'small' (the {config.data.preset!r} crops "
                          "need each full image); use 'loader' or 'auto'")
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    splits = splits or build_splits(config.data, progress=progress)
    method = build_method(config, num_classes=splits.train.num_classes, embedding_dim=config.model.embedding_dim)
    model = build_embedder(config.model, in_chans=input_channels(splits.train, config.data.preset),
                           extra_heads=method.extra_heads(), class_slices=method.class_slices())
    model, method = model.to(device), method.to(device)
    method.attach(model)
    return Components(config, splits, model, method, device)


def build_optimizer(components: Components) -> torch.optim.Optimizer:
    cfg = components.config.optimizer
    groups = components.model.param_groups(cfg.lr, cfg.backbone_lr, cfg.weight_decay)
    groups += components.method.param_groups(cfg.lr, cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    optimizer_cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    return optimizer_cls(groups, lr=cfg.lr)


def build_scheduler(
    config: Config, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then constant / cosine to `min_lr_ratio` / step decay at `step_epochs`; per optimizer step."""
    cfg = config.schedule

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.name == "cosine":
            progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
            return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        if cfg.name == "step":
            return cfg.gamma ** sum(step >= e * steps_per_epoch for e in cfg.step_epochs)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class History:
    """history.jsonl: appended line by line; on resume, lines after the checkpoint's step are dropped."""

    def __init__(self, path: Path, keep_until_step: int) -> None:
        self.path = path
        if path.exists():
            lines = [line for line in path.read_text().splitlines() if line.strip()]
            kept = [line for line in lines if json.loads(line).get("step", 0) <= keep_until_step]
            path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")


class Trainer:
    def __init__(self, config: Config, run_dir: str | Path, *, progress: bool = True,
                 splits: Splits | None = None) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.progress = progress
        seed_everything(config.train.seed)
        self.c = build_components(config, splits, progress)
        self.optimizer = build_optimizer(self.c)
        self.steps_per_epoch = len(self.c.method.batches(self.c.splits.train, 0))
        planned = config.train.epochs * self.steps_per_epoch
        self.total_steps = min(planned, config.train.max_steps or planned)
        self.scheduler = build_scheduler(config, self.optimizer, self.total_steps, self.steps_per_epoch)
        self.epoch = 0
        self.step = 0
        self.best: dict[str, Any] = {"value": -math.inf, "epoch": None}
        self.resumed = False

    @classmethod
    def resume(cls, run_dir: str | Path, *, progress: bool = True, splits: Splits | None = None) -> Trainer:
        """Continue the run in `run_dir` from its last checkpoint, with the config it was started with."""
        run_dir = Path(run_dir)
        config = load_config(run_dir / "config.yaml")
        trainer = cls(config, run_dir, progress=progress, splits=splits)
        state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
        trainer._load_state(state)
        trainer.resumed = True
        return trainer

    # -- state -------------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        state = {
            "config": self.config.to_dict(),
            "model": self.c.model.state_dict(),
            "method": self.c.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "best": dict(self.best),
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                    "numpy": _numpy_state()},
        }
        if torch.cuda.is_available():
            state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def _load_state(self, state: dict[str, Any]) -> None:
        if validate_config(state["config"]).to_dict() != self.config.to_dict():  # defaults added since count as set
            raise CheckpointError(f"{self.run_dir}/checkpoints/last.pt: its config differs from config.yaml")
        try:
            self.c.model.load_state_dict(state["model"])
            self.c.method.load_state_dict(state["method"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise CheckpointError(f"{self.run_dir}/checkpoints/last.pt: does not fit this model ({error})") from None
        self.epoch, self.step, self.best = state["epoch"], state["step"], dict(state["best"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(_numpy_state_from(state["rng"]["numpy"]))
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])

    # -- loop --------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train to the configured budget, then evaluate best and last checkpoints; returns metrics.json."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not self.resumed:
            (self.run_dir / "history.jsonl").unlink(missing_ok=True)
            (self.run_dir / "config.yaml").write_text(dump_config(self.config))
            self._write_data_records()
        history = History(self.run_dir / "history.jsonl", keep_until_step=self.step)
        epochs = self.config.train.epochs
        while self.epoch < epochs and self.step < self.total_steps:
            self._train_epoch(history)
            self.epoch += 1
            last_epoch = self.epoch == epochs or self.step >= self.total_steps
            if self.epoch % self.config.train.eval_every == 0 or last_epoch:
                self._validate(history)
            save_checkpoint(self._state(), self.run_dir / "checkpoints" / "last.pt")
        return self.finish()

    def _train_epoch(self, history: History) -> None:
        c, cfg = self.c, self.config
        c.method.on_epoch_start(EpochContext(
            epoch=self.epoch, train=c.splits.train, seed=cfg.train.seed,
            embed=lambda output: c.embed(c.splits.train, output=output, progress=self.progress),
        ))
        plan = c.method.batches(c.splits.train, self.epoch)
        steps = min(len(plan), self.total_steps - self.step)
        loader = DataLoader(ImageDataset(c.splits.train, c.transform(train=True)),
                            batch_sampler=plan.items()[:steps], num_workers=cfg.data.num_workers)
        augment = c.batch_augment()
        c.model.train()
        c.method.train()
        window: dict[str, list[float]] = {}
        started, images_seen = time.perf_counter(), 0
        bar = tqdm(loader, total=steps, desc=f"epoch {self.epoch + 1}/{cfg.train.epochs}",
                   disable=not self.progress, leave=False)
        for position, (images, labels, rows) in enumerate(bar):
            images = images.to(c.device)
            if augment is not None:
                images = augment(images, plan.seeds[position])
            batch = Batch(images, labels.to(c.device), rows, plan.stream(position))
            parts = self._step(batch)
            images_seen += len(images)
            for key, value in parts.items():
                window.setdefault(key, []).append(value)
            rate = images_seen / max(time.perf_counter() - started, 1e-9)
            bar.set_postfix(loss=f"{parts['loss']:.4f}", img_s=f"{rate:.0f}")
            if self.step % cfg.train.log_every == 0 or self.step == self.total_steps:
                record = {"kind": "train", "epoch": self.epoch + 1, "step": self.step,
                          **{k: float(np.mean(v)) for k, v in window.items()},
                          "lr": self.optimizer.param_groups[0]["lr"], "images_per_s": rate}
                history.write(record)
                window.clear()

    def _step(self, batch: Batch) -> dict[str, float]:
        c, cfg = self.c, self.config
        c.method.on_step(self.step, self.total_steps)
        autocast = torch.autocast(c.device.type, dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16")
        with autocast:
            out = c.model(batch.images)
            result = c.method.loss(out, batch)
        if not torch.isfinite(result.total):
            raise FloatingPointError(f"step {self.step}: the loss is {result.total.item()}; lower optimizer.lr?")
        self.optimizer.zero_grad(set_to_none=True)
        result.total.backward()
        if cfg.optimizer.grad_clip is not None:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, cfg.optimizer.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return {"loss": float(result.total.detach()), **result.parts}

    def _validate(self, history: History) -> None:
        val = self.c.splits.val
        if len(val) == 0:
            return
        metrics = self.c.evaluate(val, progress=self.progress)
        history.write({"kind": "val", "epoch": self.epoch, "step": self.step, **metrics})
        key = self.config.evaluation.select_on
        if key not in metrics:
            raise ConfigError(f"evaluation.select_on: '{key}' is not among the metrics ({', '.join(metrics)})")
        if metrics[key] > self.best["value"]:
            self.best = {"value": metrics[key], "epoch": self.epoch, "step": self.step, "val": metrics}
            save_checkpoint({**self._state(), "best": dict(self.best)},
                            self.run_dir / "checkpoints" / "best.pt")
        if self.progress:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
            tqdm.write(f"epoch {self.epoch} val: {shown}")

    def finish(self) -> dict[str, Any]:
        """Test metrics of the last and of the best (by validation) checkpoint -> metrics.json."""
        c = self.c
        results: dict[str, Any] = {"protocol": c.splits.describe(), "steps": self.step, "epochs": self.epoch}
        results["test_last"] = c.evaluate(c.splits.test, progress=self.progress)
        best_path = self.run_dir / "checkpoints" / "best.pt"
        if best_path.exists():
            best = load_checkpoint(best_path)
            c.model.load_state_dict(best["model"])
            results["selection"] = (f"best validation {self.config.evaluation.select_on} "
                                    f"(epoch {best['best']['epoch']}, step {best['best']['step']})")
            results["val"] = best["best"]["val"]
            results["test"] = c.evaluate(c.splits.test, progress=self.progress)
        else:
            results["selection"] = "last checkpoint (no validation classes)"
            results["test"] = results["test_last"]
        _write_json_atomic(self.run_dir / "metrics.json", results)
        return results

    def _write_data_records(self) -> None:
        """classes.json (label id -> class name per split) and, when files were checked, bad_images.json."""
        s = self.c.splits
        _write_json_atomic(self.run_dir / "classes.json",
                           {t.name: list(t.class_names) for t in (s.train, s.val, s.test)})
        if s.bad_images:
            _write_json_atomic(self.run_dir / "bad_images.json", s.bad_images)


def _write_json_atomic(path: Path, data: Any) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    temporary.replace(path)


def _numpy_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _numpy_state_from(state: dict[str, Any]) -> tuple:
    return (state["name"], state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"],
            state["cached"])
