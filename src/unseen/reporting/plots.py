"""The report's figures as PNG bytes: training loss, validation (and traced test) metrics, the 2-D embedding map.

Matplotlib's object interface on the Agg canvas (no pyplot, no global state), so figures can be drawn from any
thread. Each function returns None when there is nothing to draw.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

NOT_PLOTTED = {"kind", "epoch", "step", "phase", "lr", "images_per_s"}
WIDTH, HEIGHT = 7.5, 3.4


def _figure(width: float = WIDTH, height: float = HEIGHT) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _numeric_keys(records: Sequence[dict[str, Any]]) -> list[str]:
    keys: list[str] = []
    for record in records:
        keys += [key for key, value in record.items() if key not in NOT_PLOTTED and key not in keys
                 and isinstance(value, int | float) and not isinstance(value, bool)]
    return keys


def training_curves(history: Sequence[dict[str, Any]]) -> bytes | None:
    """The training loss and its parts per logging window (left), and the learning rate (right)."""
    train = [r for r in history if r.get("kind") == "train"]
    if not train:
        return None
    figure = _figure()
    loss_axes, lr_axes = figure.subplots(1, 2, width_ratios=(3, 1))
    steps = [r["step"] for r in train]
    for key in _numeric_keys(train):
        values = [r.get(key, np.nan) for r in train]
        loss_axes.plot(steps, values, label=key, linewidth=1.6 if key == "loss" else 1.0,
                       marker="o" if len(steps) < 30 else None, markersize=3)
    loss_axes.set(xlabel="step", ylabel="loss", title="training loss (mean per logging window)")
    loss_axes.legend(fontsize=7)
    loss_axes.grid(alpha=0.3)
    lr_axes.plot(steps, [r.get("lr", np.nan) for r in train], color="gray", marker="o" if len(steps) < 30 else None,
                 markersize=3)
    lr_axes.set(xlabel="step", title="learning rate")
    lr_axes.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    lr_axes.grid(alpha=0.3)
    return _png(figure)


def metric_curves(records: Sequence[dict[str, Any]], title: str, *, selected_step: int | None = None
                  ) -> bytes | None:
    """Each metric of `records` (validation or traced test lines) against the step; `selected_step` marked."""
    if not records:
        return None
    keys = [key for key in _numeric_keys(records) if not key.startswith("num_")]
    if not keys:
        return None
    figure = _figure()
    axes = figure.subplots()
    steps = [r["step"] for r in records]
    for key in keys:
        axes.plot(steps, [r.get(key, np.nan) for r in records], marker="o", markersize=3, label=key)
    if selected_step is not None:
        axes.axvline(selected_step, color="black", linestyle="--", linewidth=1,
                     label=f"selected (step {selected_step})")
    axes.set(xlabel="step", ylabel="metric", title=title)
    axes.legend(fontsize=7, ncols=2)
    axes.grid(alpha=0.3)
    return _png(figure)


def embedding_map(points: np.ndarray, labels: np.ndarray, names: Sequence[str], title: str) -> bytes:
    """A scatter of 2-D `points` coloured by class (`labels` index `names`), with a legend of up to 20 classes."""
    from matplotlib import colormaps

    figure = _figure(7.5, 6.0)
    axes = figure.subplots()
    classes = np.unique(labels)
    colours = colormaps["tab20"](np.linspace(0, 1, 20))
    markers = "os^Dv<>ph*"
    for position, label in enumerate(classes):
        at = labels == label
        axes.scatter(points[at, 0], points[at, 1], s=14, color=colours[position % 20],
                     marker=markers[(position // 20) % len(markers)], label=names[label], alpha=0.85, linewidths=0)
    if len(classes) <= 20:
        axes.legend(fontsize=6, markerscale=1.2, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    axes.set(title=title, xticks=[], yticks=[])
    return _png(figure)
