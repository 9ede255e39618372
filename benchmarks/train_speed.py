"""Training images/s of unseen's trainer against a minimal hand-written PyTorch loop doing the same work.

Each case builds one run (`Trainer`) and a bare loop over the *same* network, method and batches, and alternates
them in this process: `--rounds` times, `--steps` optimizer steps of the trainer (`Trainer.train(n)`: its batch
source, plan, training step, scheduler, logging) then `--steps` steps of the bare loop (index a tensor of the
images, the same batch jitter, forward, loss, backward, `optimizer.step()`). Both sides warm up first; the ratio
is trainer images/s over bare images/s, summed over the rounds.

Cases:
- `convnet`: the Omniglot ConvNet with multi-similarity, protocol v2's data-poor arm (158 classes). The bare loop
  calls pytorch-metric-learning's loss and miner itself.
- `ecaml`, `class_adversarial`, `divide_conquer`, `mic`, `sharing`, `s2sd`: each method's protocol-v2 cell (the
  spec's settings, the same arm); the bare loop adds the method's own work, `method.objective(model, batch)`, on
  the method's own batch plan. Re-clustering is timed on its own (one k-means of the training set), and the
  budget is set so that none falls inside the timed steps.
- `resnet50`: a timm ResNet-50 (random init) at 224 px, 128-d, on synthetic in-memory images, P×K = 4×2
  (`--resnet-batch`).

The sampler's time per step (one epoch's plan, divided by its steps) is printed beside each case. `--cache none`
puts the trainer on the per-sample DataLoader path (the bare loop always indexes a tensor). Under `--compile` both
sides compile their step.

    PYTHONPATH=src UNSEEN_DATA=../shared/data python benchmarks/train_speed.py --threads 1
    PYTHONPATH=src python benchmarks/train_speed.py --cases resnet50 --device cuda --resnet-batch 32x4 \\
        --precision bf16 --channels-last --compile          # the GPU path (benchmarks/gpu_speed.sh)
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unseen.benchmark.spec import cell_config, load_spec
from unseen.config import validate_config
from unseen.data.base import Splits, table_from_labels
from unseen.data.dataset import ImageDataset
from unseen.losses.factory import build_loss, build_miner
from unseen.methods import Batch
from unseen.train.trainer import Trainer

SPEC = Path(__file__).resolve().parents[1] / "configs" / "benchmark" / "omniglot.yaml"
ARM, LOSS = "data_poor", "multisimilarity"
METHODS = ("ecaml", "class_adversarial", "divide_conquer", "mic", "sharing", "s2sd")
CASES = ("convnet", *METHODS, "resnet50")
NEVER = 10**7  # a budget no timed window reaches: no validation, no re-clustering inside the timing
PERIOD = 1000  # D&C's re-clustering period in the benchmark: one plan, longer than all the timed steps


@dataclass
class Timing:
    trainer: float = 0.0  # seconds
    bare: float = 0.0
    images: int = 0  # per side


def case_config(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The protocol-v2 cell of `name` (the data-poor arm, multi-similarity, seed 0), run for the benchmark."""
    spec = load_spec(SPEC)
    method = {} if name == "convnet" else spec.methods[name]
    config = cell_config(spec, ARM, LOSS, method, seed=0, steps=NEVER)
    knobs = spec.knobs.get(name)
    if knobs:  # the middle of the knob's grid
        key, values = knobs
        config = cell_config(spec, ARM, LOSS, method, seed=0, steps=NEVER, extra={key: values[len(values) // 2]})
    config.setdefault("data", {})["cache"] = args.cache
    train = config.setdefault("train", {})
    train.update(validate_every=NEVER, trace_test=False, threads=args.threads, device=args.device,
                 precision=args.precision, channels_last=args.channels_last, compile=args.compile)
    if name in ("divide_conquer", "mic"):  # cluster at the start, then not again within the benchmark
        method_section = config.setdefault("method", {})
        method_section.update(recluster_every=NEVER // 2)
        if name == "divide_conquer":  # divided from step 0; a plan is one period, so keep it finite
            method_section.update(warmup=0, recluster_every=PERIOD, full_embedding_from=NEVER // 2,
                                  finetune_from=NEVER - 1)
    return config


def resnet_setup(args: argparse.Namespace) -> tuple[dict[str, Any], Splits]:
    """ResNet-50 at 224 px on synthetic 224×224 RGB images: 2P classes of 2K images for P×K batches (no jitter:
    the images are the input)."""
    p, k = args.resnet_batch
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4 * p * k, 224, 224, 3), dtype=np.uint8)
    table = table_from_labels(np.arange(len(images)) % (2 * p), images=images, name="train")
    small = table_from_labels(np.arange(4) % 2, images=images[:4], name="val")
    splits = Splits(train=table, val=small, test=small, dataset="synthetic", protocol="synthetic")
    config = {
        "data": {"preset": "imagenet", "image_size": 224, "jitter": False, "cache": args.cache},
        "model": {"backbone": "resnet50", "embedding_dim": 128, "pretrained": False},
        "sampler": {"classes_per_batch": p, "samples_per_class": k},
        "train": {"steps": NEVER, "validate_every": NEVER, "threads": args.threads, "device": args.device,
                  "precision": args.precision, "channels_last": args.channels_last, "compile": args.compile},
    }
    return config, splits


def batch_shape(text: str) -> tuple[int, int]:
    p, _, k = text.lower().partition("x")
    if not (p.isdigit() and k.isdigit() and int(p) >= 2 and int(k) >= 2):
        raise argparse.ArgumentTypeError(f"expected P×K as e.g. 32x4, got {text!r}")
    return int(p), int(k)


class BareLoop:
    """The hand-written loop: images in one tensor, index, jitter, forward, loss, backward, step."""

    def __init__(self, trainer: Trainer, objective: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, str],
                                                              torch.Tensor]) -> None:
        c = trainer.c
        self.device, self.config = c.device, trainer.config
        dataset = ImageDataset(c.splits.train, c.transform(train=True))
        self.images = torch.stack([dataset[row][0] for row in range(len(dataset))]).to(c.device)
        self.labels = torch.as_tensor(c.splits.train.labels).to(c.device)
        self.augment = c.batch_augment()
        self.objective = torch.compile(objective) if self.config.train.compile else objective
        params = [p for p in itertools.chain(c.model.parameters(), c.method.parameters()) if p.requires_grad]
        fused = trainer.optimizer.defaults.get("fused") or False
        self.optimizer = torch.optim.Adam(params, lr=self.config.optimizer.lr, fused=fused)
        plan = c.method.plan(trainer.epoch)
        self.batches = itertools.cycle(list(zip(plan.indices, plan.seeds, plan.streams or ["class"] * len(plan),
                                                strict=True)))
        self.channels_last = self.config.train.channels_last

    def run(self, steps: int) -> int:
        images_seen = 0
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16,
                                  enabled=self.config.train.precision == "bf16")
        for _ in range(steps):
            rows, seeds, stream = next(self.batches)
            index = torch.as_tensor(rows).to(self.device)
            x, y = self.images[index], self.labels[index]
            if self.augment is not None:
                x = self.augment(x, seeds)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast:
                loss = self.objective(x, y, torch.as_tensor(rows), stream)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            images_seen += len(rows)
        return images_seen


def base_loss_objective(trainer: Trainer) -> Callable[..., torch.Tensor]:
    """The baseline written by hand: the network's class embedding, the PML miner and loss, in fp32."""
    cfg, model = trainer.config, trainer.c.model
    loss_fn = build_loss(cfg.loss.name, cfg.loss.kwargs, num_classes=trainer.c.splits.train.num_classes,
                         embedding_dim=cfg.model.embedding_dim).to(trainer.c.device)
    miner = build_miner(cfg.miner.name, cfg.miner.kwargs) if cfg.miner.name else None

    def objective(x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor, stream: str) -> torch.Tensor:
        embeddings = model(x)["class"].float()
        with torch.autocast(x.device.type, enabled=False):
            return loss_fn(embeddings, y, miner(embeddings, y) if miner else None)

    return objective


def method_objective(trainer: Trainer) -> Callable[..., torch.Tensor]:
    """The bare loop plus the method's own work: its objective on its own batches."""
    model, method = trainer.c.model, trainer.c.method

    def objective(x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor, stream: str) -> torch.Tensor:
        return method.objective(model, Batch(x, y, rows, stream)).total

    return objective


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name: str, args: argparse.Namespace, folder: Path) -> None:
    if name == "resnet50":
        raw, splits = resnet_setup(args)
    else:
        raw, splits = case_config(name, args), None
    trainer = Trainer(validate_config(raw), folder / name, progress=False, splits=splits)
    steps = args.resnet_steps if name == "resnet50" else args.steps
    trainer.train(max(2, steps // 2))  # warm-up: first plan (and clustering), caches, compilation
    bare = BareLoop(trainer, base_loss_objective(trainer) if name in ("convnet", "resnet50")
                    else method_objective(trainer))
    bare.run(max(2, steps // 2))
    timing = Timing()
    for _ in range(args.rounds):
        sync(trainer.c.device)
        start = time.perf_counter()
        before = trainer.step
        trainer.train(steps)
        sync(trainer.c.device)
        timing.trainer += time.perf_counter() - start
        assert trainer.step == before + steps
        start = time.perf_counter()
        seen = bare.run(steps)
        sync(trainer.c.device)
        timing.bare += time.perf_counter() - start
        timing.images += seen
    trainer_rate, bare_rate = timing.images / timing.trainer, timing.images / timing.bare
    extra = sampler_time(trainer) + clustering_time(trainer, name)
    print(f"{name:18s} trainer {trainer_rate:8.1f} img/s   bare {bare_rate:8.1f} img/s   "
          f"ratio {trainer_rate / bare_rate:.3f}   ({timing.images / args.rounds / steps:.0f} img/step, "
          f"{1000 * timing.bare / (args.rounds * steps):.1f} ms/step bare){extra}", flush=True)


def sampler_time(trainer: Trainer) -> str:
    """The default class-balanced sampler's plan of one epoch, per step."""
    sampler = trainer.c.method.sampler()
    start = time.perf_counter()
    plan = sampler.epoch(12345)
    return f"   sampler {1000 * (time.perf_counter() - start) / len(plan):.3f} ms/step"


def clustering_time(trainer: Trainer, name: str) -> str:
    """One re-clustering of the training set (embedding it and k-means), for the methods that cluster."""
    method = trainer.c.method
    if name not in ("divide_conquer", "mic"):
        return ""
    method.clustered_epoch = None  # forget the clustering of the current epoch, keep the assignment
    trainer.c.ctx.step = trainer.step + NEVER // 2  # due again (MIC re-clusters its shared embedding)
    start = time.perf_counter()
    method.cluster(trainer.epoch + 1)
    seconds = time.perf_counter() - start
    trainer.c.ctx.step = trainer.step
    return f"   re-clustering {seconds:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per side per round")
    parser.add_argument("--resnet-steps", type=int, default=3, help="the same for resnet50")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--resnet-batch", type=batch_shape, default=(4, 2), metavar="PxK",
                        help="resnet50's batch: P classes × K images (default 4x2; e.g. 32x4 on a GPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--cache", default="auto", choices=["auto", "tensors", "decoded", "none"],
                        help="the trainer's data.cache (none: a DataLoader transforming every sample, as before)")
    args = parser.parse_args()
    if args.steps * (args.rounds + 1) >= PERIOD:
        parser.error(f"--steps × (--rounds + 1) must stay under {PERIOD} (one D&C period: no re-clustering timed)")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, {args.precision}"
          f"{', channels_last' if args.channels_last else ''}{', compiled' if args.compile else ''}; "
          f"trainer data.cache {args.cache}; "
          f"{args.rounds} rounds of {args.steps} steps per side (resnet50: {args.resnet_steps})")
    with tempfile.TemporaryDirectory(prefix="unseen-train-speed-") as folder:
        for name in args.cases:
            measure(name, args, Path(folder))


if __name__ == "__main__":
    main()
