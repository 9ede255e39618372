"""`unseen benchmark summarize`: the Markdown tables of protocol v2 and the figures, from a benchmark folder."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from unseen.benchmark.figures import bars, learning_curves
from unseen.benchmark.spec import Spec
from unseen.benchmark.summary import (
    COLUMNS,
    choose_knobs,
    knob_rows,
    mean_std,
    method_rows,
    pilot_rows,
    read_cells,
)


def _gain(gain: tuple[float, float, str] | None) -> str:
    if gain is None:
        return ""
    mean, se, verdict = gain
    if math.isnan(mean):
        return "–"
    return f"{100 * mean:+.2f}" + ("" if math.isnan(se) else f" ± {100 * se:.2f}") + f" ({verdict})"


def _minutes(values: Sequence[float | None]) -> str:
    values = [v for v in values if v is not None]
    return f"{np.mean(values) / 60:.1f}" if values else "–"


def summarize(spec: Spec, out: Path, figures: Path, link_base: Path, command: str) -> str:
    """The Markdown summary of the finished cells under `out`; figures are written to `figures` and linked
    relative to `link_base` (the folder of the Markdown file)."""
    records = read_cells(out)
    chosen = choose_knobs(spec, records)
    commits = sorted({r.metrics.get("commit", "unknown") for r in records})
    hardware = sorted({r.metrics.get("hardware", "unknown") for r in records})
    source = out / "spec.source"
    shown = source.read_text().strip() if source.is_file() else _relative(spec.path)
    lines = [f"Spec: `{shown}`; command: `{command}`  ",
             f"Commit(s) of the cells: {', '.join(f'`{c}`' for c in commits) or '–'}; hardware: "
             f"{', '.join(hardware) or '–'}; {len(records)} finished cells.", ""]
    pilots = pilot_rows(records)
    if pilots:
        lines += ["### Pilots: the baseline's peak", "",
                  "| arm | loss | steps | val R@1 peak (step) | test R@1 there | test R@1 at the end "
                  "| test R@1 max (step) |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for p in pilots:
            lines.append(f"| {p['arm']} | {p['loss']} | {p['steps']} | {p['val_peak']:.4f} ({p['val_peak_step']}) | "
                         f"{_number(p['test_at_val_peak'])} | {_number(p['test_end'])} | "
                         f"{_number(p['test_max'])} ({p['test_max_step']}) |")
        lines.append("")
    for arm, loss, _ in spec.grid():
        rows = method_rows(spec, records, arm, loss, chosen)
        if not rows:
            continue
        steps = spec.arms[arm]["steps"]
        lines += [f"### Arm `{arm}`, base loss `{loss}` ({steps} steps)", "",
                  "| method | seeds | " + " | ".join(COLUMNS) + " | R@1 (last) | val R@1 | ΔR@1 (pts) ± SE | "
                  "ΔMAP@R (pts) ± SE | steps (class) | min / cell |",
                  "| --- |" + " --- |" * (len(COLUMNS) + 7)]
        for row in rows:
            class_steps = f" ({', '.join(map(str, row['class_steps']))})" if row["class_steps"] and \
                row["class_steps"] != row["steps"] else ""
            lines.append(
                f"| {row['method']} | {len(row['seeds'])} | " + " | ".join(mean_std(row[c]) for c in COLUMNS)
                + f" | {mean_std(row['last'])} | {mean_std(row['val'])} | {_gain(row['gain'])} | "
                f"{_gain(row['gain_map'])} | {', '.join(map(str, row['steps']))}{class_steps} | "
                f"{_minutes(row['wall'])} |")
        knobs = knob_rows(spec, records, arm, loss, chosen)
        if knobs:
            lines += ["", "Knob grids (chosen on validation Recall@1 over the knob seeds; test shown, never used):",
                      "", "| method | knob | value | val R@1 | test R@1 | chosen |",
                      "| --- | --- | --- | --- | --- | --- |"]
            for k in knobs:
                lines.append(f"| {k['method']} | {k['key']} | {k['value']} | {mean_std(k['val'])} | "
                             f"{mean_std(k['test'])} | {'✓' if k['chosen'] else ''} |")
        cell_records = [r for r in records if r.arm == arm and r.loss == loss]
        curve = learning_curves(cell_records, [row["id"] for row in rows], f"{arm} / {loss}",
                                figures / f"curves-{arm}-{loss}.png")
        bar = bars(rows, f"{arm} / {loss}", figures / f"bars-{arm}-{loss}.png")
        lines += ["", f"![learning curves {arm} {loss}]({os.path.relpath(curve, link_base)}) ",
                  f"![test R@1 and MAP@R {arm} {loss}]({os.path.relpath(bar, link_base)})", ""]
    return "\n".join(lines) + "\n"


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _relative(path: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), Path.cwd())
    except ValueError:
        return str(path)
