"""The benchmark's figures (PNG, matplotlib without a display): learning curves per method and bars of test
Recall@1 and MAP@R with error bars per arm. Test curves are drawn for the figure only; nothing selects on them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from unseen.benchmark.summary import SELECT, CellRecord


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curves(records: Sequence[CellRecord], methods: Sequence[str], title: str, path: Path) -> Path:
    """One panel per method: validation Recall@1 (solid) and the traced test Recall@1 (dashed) against the step,
    one line per seed."""
    plt = _pyplot()
    methods = [m for m in methods if any(r.method == m for r in records)]
    columns = min(4, max(1, len(methods)))
    rows = -(-len(methods) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False, sharey=True)
    for axis, method in zip(axes.flat, methods, strict=False):
        for r in sorted((r for r in records if r.method == method), key=lambda r: r.seed):
            axis.plot([v["step"] for v in r.validation], [v[SELECT] for v in r.validation], color="C0", lw=1,
                      label="validation" if r.seed == 0 else None)
            if r.trace:
                axis.plot([t["step"] for t in r.trace], [t[SELECT] for t in r.trace], color="C3", lw=1, ls="--",
                          label="test (figure only)" if r.seed == 0 else None)
        axis.set_title(method, fontsize=9)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    for axis in axes.flat[len(methods):]:
        axis.axis("off")
    axes[0, 0].set_ylabel("Recall@1")
    axes[0, 0].legend(fontsize=8)
    return _save(plt, figure, title, path)


def bars(rows: Sequence[dict], title: str, path: Path) -> Path:
    """Test Recall@1 and MAP@R per method, mean with ± one standard deviation over seeds."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(max(6, 1.1 * len(rows) + 3), 3.6))
    for axis, column in zip(axes, ("recall@1", "map@r"), strict=True):
        values = [np.asarray([v for v in row[column] if v is not None], dtype=float) for row in rows]
        means = [v.mean() if len(v) else np.nan for v in values]
        errors = [v.std(ddof=1) if len(v) > 1 else 0.0 for v in values]
        axis.bar(range(len(rows)), means, yerr=errors, capsize=3, color=["C7" if row["id"] == "baseline" else "C0"
                                                                          for row in rows])
        axis.set_xticks(range(len(rows)), [row["method"] for row in rows], rotation=40, ha="right", fontsize=7)
        finite = [m for m in means if not np.isnan(m)]
        if finite:
            axis.set_ylim(min(finite) - 0.05, max(finite) + 0.03)
        axis.set_title(f"test {column}")
        axis.grid(axis="y", alpha=0.3)
    return _save(plt, figure, title, path)


def _save(plt, figure, title: str, path: Path) -> Path:
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
