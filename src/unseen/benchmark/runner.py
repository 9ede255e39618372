"""Running a benchmark: every cell is an ordinary `unseen train` run folder under OUT/<arm>/<loss>/<method>/seed<s>.

A cell whose metrics.json exists is finished and never run again; one with a checkpoints/last.pt is continued
(`--resume`); anything else starts afresh. So an interrupted benchmark resumes where it stopped. Cells run as
separate processes, `jobs` at a time (several per GPU with `device`), each writing its log to OUT/logs/. The knob
values and the controls' budgets are decided from finished cells' validation metrics and step counts between
rounds, so one call runs the whole grid.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import NamedTuple

import yaml
from tqdm import tqdm

from unseen.benchmark.spec import Cell, Spec, expand
from unseen.benchmark.summary import choose_knobs, read_cells
from unseen.files import write_text_atomic


def cell_dir(out: Path, cell: Cell) -> Path:
    return out / cell.arm / cell.loss / cell.method / f"seed{cell.seed}"


def finished(out: Path, cell: Cell) -> bool:
    return (cell_dir(out, cell) / "metrics.json").is_file()


def train_command(out: Path, cell: Cell, device: str | None) -> list[str]:
    """The `unseen train` command of a cell: a fresh run from its config file, or `--resume`."""
    run = cell_dir(out, cell)
    if cell_state(out, cell) == "resume":
        return [sys.executable, "-m", "unseen", "train", "--resume", str(run), "--no-progress"]
    if run.exists():  # started but never checkpointed: nothing to keep
        shutil.rmtree(run)
    config = out / "configs" / f"{cell.key.replace('/', '--')}.yaml"
    settings = dict(cell.config)
    if device is not None:
        settings["train"] = {**settings.get("train", {}), "device": device}
    write_text_atomic(config, yaml.safe_dump(settings, sort_keys=False))
    return [sys.executable, "-m", "unseen", "train", str(config), "--out", str(run), "--no-progress"]


def run_cell(out: Path, cell: Cell, device: str | None = None) -> bool:
    """Train (or continue) one cell; its output goes to OUT/logs/<cell>.log. False when training failed."""
    log = out / "logs" / f"{cell.key.replace('/', '--')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = train_command(out, cell, device)
    with log.open("a") as stream:
        stream.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {' '.join(command)}\n")
        stream.flush()
        return subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT).returncode == 0


def cell_state(out: Path, cell: Cell) -> str:
    """'finished' (metrics.json written), 'resume' (a checkpoint to continue from) or 'new'."""
    if finished(out, cell):
        return "finished"
    return "resume" if (cell_dir(out, cell) / "checkpoints" / "last.pt").is_file() else "new"


class Runnable(NamedTuple):
    cells: list[Cell]  # the cells runnable now, finished ones included
    pending_knobs: list[str]  # 'arm/loss/method' among them whose knob is not chosen yet (other seeds wait)


def runnable(spec: Spec, out: Path, only: Callable[[Cell], bool] | None = None) -> Runnable:
    """What can run now: knob values are chosen and controls sized from the finished cells in `out`."""
    records = read_cells(out) if out.is_dir() else []
    chosen = choose_knobs(spec, records)
    class_steps = {(r.arm, r.loss, r.method, r.seed): r.metrics.get("steps_by_stream", {}).get("class")
                   for r in records if r.metrics.get("steps_by_stream", {}).get("class")}
    cells = [c for c in expand(spec, chosen, class_steps) if only is None or only(c)]
    families = dict.fromkeys((c.arm, c.loss, c.family) for c in cells if c.knob)
    return Runnable(cells, [f"{arm}/{loss}/{method}" for arm, loss, method in families
                            if (arm, loss, method) not in chosen])


def run_benchmark(spec: Spec, out: Path, *, jobs: int = 1, device: str | None = None, progress: bool = True,
                  only: Callable[[Cell], bool] | None = None) -> dict[str, list[str]]:
    """Run every cell of `spec` that is not finished, in rounds until no new cell becomes runnable (knob choices
    and controls unlock cells); returns {"finished": [...], "failed": [...]} cell keys."""
    out.mkdir(parents=True, exist_ok=True)
    failed: set[str] = set()
    done: list[str] = []
    bar = tqdm(desc=f"benchmark {spec.name}", unit="cell", disable=not progress)
    while True:
        cells = runnable(spec, out, only).cells
        todo = [c for c in cells if not finished(out, c) and c.key not in failed]
        bar.total = len(cells)
        bar.n = sum(finished(out, c) for c in cells)
        bar.refresh()
        if not todo:
            break
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(run_cell, out, cell, device): cell for cell in todo}
            for future in as_completed(futures):
                cell = futures[future]
                if future.result():
                    done.append(cell.key)
                    bar.update(1)
                else:
                    failed.add(cell.key)
                    tqdm.write(f"FAILED {cell.key}: see {out / 'logs' / (cell.key.replace('/', '--') + '.log')}")
                bar.set_postfix(failed=len(failed))
    bar.close()
    return {"finished": done, "failed": sorted(failed)}
