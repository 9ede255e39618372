"""The report's figures: PNG bytes when there is something to draw, None when there is not."""

import io

import numpy as np
from PIL import Image

from unseen.reporting import plots

HISTORY = [
    {"kind": "train", "epoch": 1, "step": 10, "phase": "", "loss": 0.9, "base": 0.9, "lr": 1e-3, "images_per_s": 5.0},
    {"kind": "val", "epoch": 1, "step": 10, "recall@1": 0.4, "map@r": 0.1, "num_queries": 12},
    {"kind": "train", "epoch": 2, "step": 20, "phase": "", "loss": 0.7, "base": 0.7, "lr": 5e-4, "images_per_s": 5.0},
    {"kind": "val", "epoch": 2, "step": 20, "recall@1": 0.5, "map@r": 0.2, "num_queries": 12},
]


def size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(png)).size


def test_curves_and_map_are_pngs():
    assert size(plots.training_curves(HISTORY))[0] > 500
    validation = [r for r in HISTORY if r["kind"] == "val"]
    assert size(plots.metric_curves(validation, "validation", selected_step=20))[0] > 500
    points = np.random.default_rng(0).standard_normal((30, 2))
    assert size(plots.embedding_map(points, np.repeat(np.arange(3), 10), ["a", "b", "c"], "map"))[1] > 500


def test_nothing_to_draw_is_none():
    assert plots.training_curves([]) is None and plots.training_curves(HISTORY[1::2]) is None
    assert plots.metric_curves([], "validation") is None
    assert plots.metric_curves([{"kind": "val", "step": 1, "num_queries": 3}], "v") is None
