"""Fixtures shared across the test packages: generated image tables and an interrupted training run."""

import numpy as np
import pytest

import unseen.train.trainer as trainer_module
from unseen.data.base import table_from_labels
from unseen.train.trainer import Trainer


def make_pattern_table(num_classes: int, per_class: int, seed: int, name: str, offset: int = 0):
    """Generated 12×12 grayscale images: each class a fixed random pattern plus per-image noise."""
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 256, size=(num_classes, 1, 12, 12))
    images = np.clip(prototypes + rng.normal(0, 40, size=(num_classes, per_class, 12, 12)), 0, 255)
    labels = np.repeat(np.arange(num_classes) + offset, per_class)
    return table_from_labels(labels, images=images.astype(np.uint8).reshape(-1, 12, 12), name=name)


@pytest.fixture(scope="session")
def pattern_table():
    return make_pattern_table


@pytest.fixture
def interrupted_run(monkeypatch):
    """`interrupted_run(config, run_dir, splits)` trains until the first `last.pt` is written, then crashes
    (KeyboardInterrupt) as a killed run would; returns the steps whose checkpoint was saved."""

    def run(config, run_dir, splits) -> list[int]:
        real_save = trainer_module.save_checkpoint
        saved = []

        def crash_after_first_epoch(state, path):
            real_save(state, path)
            if path.name == "last.pt":
                saved.append(state["step"])
                raise KeyboardInterrupt

        monkeypatch.setattr(trainer_module, "save_checkpoint", crash_after_first_epoch)
        with pytest.raises(KeyboardInterrupt):
            Trainer(config, run_dir, progress=False, splits=splits).fit()
        monkeypatch.setattr(trainer_module, "save_checkpoint", real_save)
        return saved

    return run
