"""The tables of a benchmark from its finished cells: mean ± std over seeds, paired gains over the baseline with
their standard error and the protocol's verdict, the knob grids and their choice, the pilots' peaks.

Selection never reads a test metric: knob values are chosen on validation Recall@1 (`choose_knobs`), checkpoints
were chosen on validation by the trainer, and a pilot's peak is its validation peak. Test numbers are reported.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unseen.benchmark.spec import CONTROL, PILOT, Spec, knob_id

COLUMNS = ("recall@1", "recall@4", "map@r", "r_precision", "nmi", "f1")
SELECT = "recall@1"  # the validation metric that chooses knob values


@dataclass
class CellRecord:
    """A finished cell: where it sits in the grid, its metrics.json, and its curves."""

    arm: str
    loss: str
    method: str
    seed: int
    path: Path
    metrics: dict[str, Any]
    validation: list[dict[str, Any]] = field(default_factory=list)
    trace: list[dict[str, Any]] = field(default_factory=list)

    @property
    def val_score(self) -> float:
        return float(self.metrics.get("val", {}).get(SELECT, math.nan))


def read_cells(out: Path) -> list[CellRecord]:
    """Every finished cell under `out` (OUT/<arm>/<loss>/<method>/seed<s>/metrics.json)."""
    records = []
    for metrics_path in sorted(Path(out).glob("*/*/*/seed*/metrics.json")):
        run = metrics_path.parent
        arm, loss, method = run.parts[-4], run.parts[-3], run.parts[-2]
        history = _lines(run / "history.jsonl")
        records.append(CellRecord(arm, loss, method, int(run.name.removeprefix("seed")), run,
                                  json.loads(metrics_path.read_text()),
                                  [r for r in history if r.get("kind") == "val"], _lines(run / "test_trace.jsonl")))
    return records


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def choose_knobs(spec: Spec, records: Sequence[CellRecord]) -> dict[tuple[str, str, str], Any]:
    """(arm, loss, method) -> the knob value of highest mean validation Recall@1 over `knob_seeds`, once every
    value has finished on every knob seed. Only validation metrics are read."""
    by_cell = {(r.arm, r.loss, r.method, r.seed): r.val_score for r in records}
    chosen = {}
    for arm, loss, methods in spec.grid():
        for method in methods:
            if method not in spec.knobs:
                continue
            key, values = spec.knobs[method]
            scores = []
            for value in values:
                runs = [by_cell.get((arm, loss, knob_id(method, key, value), s)) for s in spec.knob_seeds]
                if any(v is None for v in runs):
                    break
                scores.append(float(np.mean(runs)))
            else:
                chosen[(arm, loss, method)] = values[int(np.argmax(scores))]
    return chosen


def mean_std(values: Sequence[float]) -> str:
    values = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if len(values) == 0:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"


def paired_gain(differences: Sequence[float]) -> tuple[float, float, str]:
    """(mean, standard error, verdict) of paired differences d_s = method − baseline on seed s. Protocol v2: "helps"
    when the mean exceeds twice the standard error of the differences, "hurts" when it is below minus twice it,
    else "no gain"; one pair has no standard error ("one seed")."""
    d = np.asarray(differences, dtype=float)
    if len(d) == 0:
        return math.nan, math.nan, "–"
    if len(d) == 1:
        return float(d[0]), math.nan, "one seed"
    mean, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))
    verdict = "helps" if mean > 2 * se else "hurts" if mean < -2 * se else "no gain"
    return mean, se, verdict


def method_rows(spec: Spec, records: Sequence[CellRecord], arm: str, loss: str,
                chosen: dict[tuple[str, str, str], Any]) -> list[dict[str, Any]]:
    """One row per reported method of (arm, loss): knob methods at their chosen value, then the controls."""
    cells = [r for r in records if r.arm == arm and r.loss == loss]
    baseline = {r.seed: r for r in cells if r.method == "baseline"}
    methods = next((m for a, lo, m in spec.grid() if a == arm and lo == loss), [])
    ids = []
    for method in methods:
        if method in spec.knobs:
            if (arm, loss, method) in chosen:
                ids.append((method, knob_id(method, spec.knobs[method][0], chosen[(arm, loss, method)])))
        else:
            ids.append((method, method))
        if method in spec.controls:
            ids.append((f"{CONTROL} of {method}", f"{CONTROL}_of_{method}"))
    rows = []
    for label, method_id in ids:
        runs = sorted((r for r in cells if r.method == method_id), key=lambda r: r.seed)
        if not runs:
            continue
        test = [r.metrics["test"] for r in runs]
        row: dict[str, Any] = {"method": label, "id": method_id, "seeds": [r.seed for r in runs]}
        for column in COLUMNS:
            row[column] = [t.get(column) for t in test]
        row["last"] = [r.metrics["test_last"].get(SELECT) for r in runs]
        row["val"] = [r.val_score for r in runs]
        row["steps"] = sorted({r.metrics.get("steps") for r in runs})
        row["class_steps"] = sorted({r.metrics.get("steps_by_stream", {}).get("class") for r in runs} - {None})
        row["wall"] = [r.metrics.get("wall_seconds") for r in runs]
        paired = [(r.metrics["test"][SELECT] - baseline[r.seed].metrics["test"][SELECT],
                   r.metrics["test"]["map@r"] - baseline[r.seed].metrics["test"]["map@r"])
                  for r in runs if r.seed in baseline]
        row["gain"] = paired_gain([p[0] for p in paired]) if method_id != "baseline" else None
        row["gain_map"] = paired_gain([p[1] for p in paired]) if method_id != "baseline" else None
        rows.append(row)
    return rows


def knob_rows(spec: Spec, records: Sequence[CellRecord], arm: str, loss: str,
              chosen: dict[tuple[str, str, str], Any]) -> list[dict[str, Any]]:
    rows = []
    for method, (key, values) in spec.knobs.items():
        for value in values:
            runs = [r for r in records if (r.arm, r.loss, r.method) == (arm, loss, knob_id(method, key, value))
                    and r.seed in spec.knob_seeds]
            if runs:
                rows.append({"method": method, "key": key, "value": value, "val": [r.val_score for r in runs],
                             "test": [r.metrics["test"][SELECT] for r in runs],
                             "chosen": chosen.get((arm, loss, method)) == value})
    return rows


def pilot_rows(records: Sequence[CellRecord]) -> list[dict[str, Any]]:
    """Per pilot: the validation peak (step, value), the test R@1 traced there and at the end, and the test trace's
    own maximum (reported to show whether test Recall@1 declines; it chooses nothing)."""
    rows = []
    for r in (r for r in records if r.method == PILOT):
        if not r.validation:
            continue
        peak = max(r.validation, key=lambda v: v[SELECT])
        trace = {t["step"]: t[SELECT] for t in r.trace}
        best_test = max(r.trace, key=lambda t: t[SELECT]) if r.trace else None
        rows.append({"arm": r.arm, "loss": r.loss, "seed": r.seed, "steps": r.metrics["steps"],
                     "val_peak_step": peak["step"], "val_peak": peak[SELECT],
                     "test_at_val_peak": trace.get(peak["step"]),
                     "test_end": trace.get(r.metrics["steps"]),
                     "test_max_step": best_test["step"] if best_test else None,
                     "test_max": best_test[SELECT] if best_test else None})
    return rows
