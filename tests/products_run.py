"""A tiny trained run on a folder of generated images, for the retrieval and reporting tests (seconds on a CPU).

Each class is a fixed random 12×12 grey pattern plus per-image noise (as `make_pattern_table`), written as PNG
files in `<root>/seen/<class>/` (8 training classes, 2 of them held out for validation) and `<root>/unseen/<class>/`
(6 test classes), so the run reads its data back through its own config like a real one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from unseen.config import load_config
from unseen.train.trainer import Trainer

PER_CLASS = 6


def write_patterns(folder: Path, num_classes: int, seed: int, prefix: str) -> list[tuple[str, str]]:
    """PNG files of `num_classes` pattern classes under folder/<prefix>NN/; returns (path, class) pairs."""
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 256, size=(num_classes, 1, 12, 12))
    images = np.clip(prototypes + rng.normal(0, 40, size=(num_classes, PER_CLASS, 12, 12)), 0, 255).astype(np.uint8)
    written = []
    for c in range(num_classes):
        (folder / f"{prefix}{c:02d}").mkdir(parents=True, exist_ok=True)
        for i in range(PER_CLASS):
            path = folder / f"{prefix}{c:02d}" / f"{i}.png"
            Image.fromarray(images[c, i]).convert("RGB").save(path)  # RGB files, like the photos users index
            written.append((str(path), f"{prefix}{c:02d}"))
    return written


def train_tiny_run(root: Path, *overrides: str) -> Path:
    """Write the pattern folders under `root/data` and train a tiny run in `root/run`; returns the run folder."""
    data = root / "data"
    write_patterns(data / "seen", 8, seed=0, prefix="seen")
    write_patterns(data / "unseen", 6, seed=2, prefix="class")
    config = load_config(None, [
        "data.name=folder", f"data.root={data}", "data.options.train_dir=seen", "data.options.test_dir=unseen",
        "data.image_size=12", "data.val_fraction=0.25", "model.channels=[4,8]", "model.embedding_dim=8",
        "sampler.classes_per_batch=3", "sampler.samples_per_class=2", "train.steps=6", "train.validate_every=3",
        "train.threads=1", "train.trace_test=true", "evaluation.recall_at=[1,2]",
        "evaluation.metrics=[recall,map@r]", *overrides,
    ])
    Trainer(config, root / "run", progress=False).fit()
    return root / "run"
