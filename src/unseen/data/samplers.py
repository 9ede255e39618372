"""Class-balanced P×K batches with a defined epoch, deterministic under a seed.

An epoch visits every eligible class exactly once as the "P" side of some batch: the classes are
shuffled and cut into groups of P; the last group is topped up with classes drawn from the rest so
every batch has P distinct classes. Each class contributes K images, without replacement when it has
at least K. The batches of epoch e are a pure function of (labels, seed, e), so resuming at an epoch
boundary replays the same stream, and each sample carries its own augmentation seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unseen.errors import ConfigError

SEED_SPACE = 2**31 - 1


@dataclass(frozen=True)
class BatchPlan:
    """One epoch's batches: `indices[b]` are table rows, `seeds[b]` their per-sample augmentation seeds, and
    `streams[b]` names the task a batch serves (all "class" unless a method interleaves auxiliary batches)."""

    indices: list[np.ndarray]
    seeds: list[np.ndarray]
    streams: list[str] | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def stream(self, batch: int) -> str:
        return "class" if self.streams is None else self.streams[batch]

    def items(self, start: int = 0) -> list[list[tuple[int, int]]]:
        """Batches as lists of (row, seed) pairs from batch `start` on, for a DataLoader's batch_sampler."""
        return [
            list(zip(rows.tolist(), seeds.tolist(), strict=True))
            for rows, seeds in zip(self.indices[start:], self.seeds[start:], strict=True)
        ]

    def shard(self, rank: int, world_size: int) -> BatchPlan:
        """Part `rank` of `world_size` of every batch: a contiguous run of its rows with their seeds, so that the
        parts in rank order are the batch (data-parallel training; parts differ by at most one row when a batch does
        not divide evenly)."""
        return BatchPlan([np.array_split(rows, world_size)[rank] for rows in self.indices],
                         [np.array_split(seeds, world_size)[rank] for seeds in self.seeds], self.streams)


class ClassBalancedBatchSampler:
    """P classes × K images per batch; classes with fewer than K (but 2+) images are repeated or dropped.

    Classes with a single image cannot provide a positive pair and are always left out; `excluded`
    lists them (and the small ones under `small_classes="drop"`) so the trainer can report them.
    """

    def __init__(
        self,
        labels: np.ndarray,
        classes_per_batch: int,
        samples_per_class: int,
        seed: int = 0,
        small_classes: str = "repeat",
    ) -> None:
        if small_classes not in ("repeat", "drop"):
            raise ConfigError(f"sampler.small_classes: expected 'repeat' or 'drop', got {small_classes!r}")
        labels = np.asarray(labels, dtype=np.int64)
        self.classes_per_batch = classes_per_batch
        self.samples_per_class = samples_per_class
        self.seed = seed
        order = np.argsort(labels, kind="stable")
        classes, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
        minimum = samples_per_class if small_classes == "drop" else 2
        keep = counts >= minimum
        self.excluded = classes[~keep].tolist()
        self.classes = classes[keep]
        self.members = [order[s : s + c] for s, c in zip(starts[keep], counts[keep], strict=True)]
        if len(self.classes) < classes_per_batch:
            raise ConfigError(
                f"sampler.classes_per_batch={classes_per_batch}, but only {len(self.classes)} classes have "
                f"{minimum}+ images"
            )

    @property
    def batch_size(self) -> int:
        return self.classes_per_batch * self.samples_per_class

    def __len__(self) -> int:
        """Batches per epoch: ceil(classes / P)."""
        return -(-len(self.classes) // self.classes_per_batch)

    def stream(self, start: int, length: int) -> BatchPlan:
        """Batches `start` .. `start + length - 1` of the endless stream epoch 0, epoch 1, ... (so a method whose
        plans are not the sampler's epochs still draws every class once per pass, from any step on)."""
        per_epoch = len(self)
        indices: list[np.ndarray] = []
        seeds: list[np.ndarray] = []
        epoch, offset = divmod(start, per_epoch)
        while len(indices) < length:
            plan = self.epoch(epoch)
            take = plan.indices[offset:offset + length - len(indices)]
            indices += take
            seeds += plan.seeds[offset:offset + len(take)]
            epoch, offset = epoch + 1, 0
        return BatchPlan(indices, seeds)

    def epoch(self, epoch: int) -> BatchPlan:
        """The batches of `epoch`; the same (seed, epoch) always gives the same plan."""
        rng = np.random.default_rng([self.seed, epoch])
        p, k = self.classes_per_batch, self.samples_per_class
        order = rng.permutation(len(self.classes))
        shortfall = (-len(order)) % p
        if shortfall:
            last = order[len(order) - (len(order) % p) :]
            others = np.setdiff1d(np.arange(len(self.classes)), last)
            order = np.concatenate([order, rng.choice(others, size=shortfall, replace=False)])
        indices, seeds = [], []
        for group in order.reshape(-1, p):
            indices.append(np.concatenate([self._draw(self.members[c], k, rng) for c in group]))
            seeds.append(rng.integers(0, SEED_SPACE, size=p * k))
        return BatchPlan(indices, seeds)

    @staticmethod
    def _draw(members: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        """K distinct members; a class with fewer gives all of them, topped up with repeats."""
        if len(members) >= k:
            return rng.choice(members, size=k, replace=False)
        return np.concatenate([rng.permutation(members), rng.choice(members, size=k - len(members))])
