"""The generalization benchmark of ../shared/EXPERIMENTS.md: methods × base losses × seeds on Omniglot.

Each cell trains `configs/omniglot/<method>.yaml` with one base loss and one seed under the same budget
(steps, P×K batch, Adam, cosine), selects the checkpoint on validation classes, and reports test metrics
on the 659 unseen classes. Cells already finished (their metrics.json exists) are not run again, so the
grid can be stopped and continued. The table (mean ± std over seeds) goes to stdout and, with --table,
replaces a Markdown file, with the command, the commit and the protocol (`--summarize-only` rebuilds it
from finished cells).

    python benchmarks/generalization.py --methods baseline,ecaml --seeds 0,1,2 --table docs/results.md
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]

# The two base losses of the protocol, as whole `loss:` and `miner:` sections that replace the method
# config's: margin loss with distance-weighted sampling (D&C / MIC setting, learnable per-class beta as in
# the MIC code) and multi-similarity with its miner.
BASE_LOSSES: dict[str, dict[str, dict]] = {
    "margin": {
        "loss": {"name": "MarginLoss", "margin": 0.2, "beta": 1.2, "learn_beta": True},
        "miner": {"name": "DistanceWeightedMiner", "cutoff": 0.5, "nonzero_loss_cutoff": 1.4},
    },
    "multisimilarity": {
        "loss": {"name": "MultiSimilarityLoss", "alpha": 2, "beta": 50, "base": 0.5},
        "miner": {"name": "MultiSimilarityMiner", "epsilon": 0.1},
    },
}
COLUMNS = ["recall@1", "recall@4", "map@r", "r_precision", "nmi", "f1"]


def cell_dir(out: Path, method: str, loss: str, seed: int) -> Path:
    return out / f"{method}-{loss}-seed{seed}"


def cell_config(out: Path, method: str, loss: str) -> Path:
    """configs/omniglot/<name>.yaml with its loss and miner sections replaced by the base loss's.

    A method is `name` or a variant `name+key=value+...` (e.g. `divide_conquer+method.num_clusters=8`)."""
    name, *settings = method.split("+")
    raw = yaml.safe_load((ROOT / "configs" / "omniglot" / f"{name}.yaml").read_text())
    raw.update(BASE_LOSSES[loss])
    for setting in settings:
        key, _, value = setting.partition("=")
        *sections, leaf = key.split(".")
        node = raw
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = yaml.safe_load(value)
    path = out / "configs" / f"{method}-{loss}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_cell(out: Path, method: str, loss: str, seed: int, steps: int, extra: list[str]) -> bool:
    """Train one cell (or continue it); its output goes to out/logs/<cell>.log. False when training failed."""
    run_dir = cell_dir(out, method, loss, seed)
    if (run_dir / "metrics.json").exists():
        return True
    if run_dir.exists():  # an interrupted cell: continue it
        command = [sys.executable, "-m", "unseen", "train", "--resume", str(run_dir), "--no-progress"]
    else:
        config = cell_config(out, method, loss)
        command = [sys.executable, "-m", "unseen", "train", str(config), f"train.seed={seed}",
                   f"train.max_steps={steps}", *extra, "--out", str(run_dir), "--no-progress"]
    log = out / "logs" / f"{run_dir.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"[{time.strftime('%H:%M:%S')}] {method} / {loss} / seed {seed}", flush=True)
    started = time.perf_counter()
    with log.open("a") as stream:
        finished = subprocess.run(command, cwd=ROOT, stdout=stream, stderr=subprocess.STDOUT).returncode == 0
    if not finished:
        print(f"[{time.strftime('%H:%M:%S')}] FAILED {method} / {loss} / seed {seed}: see {log}", flush=True)
        return False
    (run_dir / "wall_time.json").write_text(json.dumps({"seconds": time.perf_counter() - started}) + "\n")
    return True


def summarize(out: Path, methods: list[str], losses: list[str], seeds: list[int], steps: int | None = None) -> str:
    """The Markdown tables; a row whose runs stopped short of `steps` (a config's train.epochs ran out first)
    says how many steps they ran."""
    lines = []
    for loss in losses:
        lines += [f"### Base loss: {loss}", "",
                  "| method | " + " | ".join(COLUMNS) + " | R@1 (last) | val R@1 | wall time / run |",
                  "| --- |" + " --- |" * (len(COLUMNS) + 3)]
        for method in methods:
            runs = [cell_dir(out, method, loss, s) for s in seeds]
            done = [r for r in runs if (r / "metrics.json").exists()]
            if not done:
                continue
            metrics = [json.loads((r / "metrics.json").read_text()) for r in done]
            cells = [_mean_std([m["test"].get(c, np.nan) for m in metrics]) for c in COLUMNS]
            cells.append(_mean_std([m["test_last"]["recall@1"] for m in metrics]))
            cells.append(_mean_std([m.get("val", {}).get("recall@1", np.nan) for m in metrics]))  # for selection
            walls = [json.loads((r / "wall_time.json").read_text())["seconds"] for r in done
                     if (r / "wall_time.json").exists()]
            cells.append(f"{np.mean(walls) / 60:.1f} min" if walls else "–")
            seeds_note = "" if len(done) == len(seeds) else f" ({len(done)}/{len(seeds)} seeds)"
            ran = sorted({m.get("steps") for m in metrics} - {steps, None})
            if steps is not None and ran:
                seeds_note += f" (ran {', '.join(map(str, ran))} steps: train.epochs ran out)"
            lines.append(f"| {method}{seeds_note} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _mean_std(values: list[float]) -> str:
    values = np.asarray(values, dtype=float)
    if len(values) == 1:  # one seed has no spread to show
        return f"{values[0]:.4f}"
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"


def commit() -> str:
    if os.environ.get("UNSEEN_COMMIT"):  # a copy of the tree without .git (a remote machine) says it here
        return os.environ["UNSEEN_COMMIT"]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("+uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="baseline", help="comma-separated config names in configs/omniglot")
    parser.add_argument("--losses", default="margin,multisimilarity", help=f"of {', '.join(BASE_LOSSES)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "generalization")
    parser.add_argument("--table", type=Path, help="write the Markdown table here")
    parser.add_argument("--summarize-only", action="store_true", help="only aggregate finished cells")
    parser.add_argument("--jobs", type=int, default=1, help="cells trained at once (a GPU machine with many cores)")
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides for every cell")
    args = parser.parse_args()
    methods, losses = args.methods.split(","), args.losses.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    unknown = [loss for loss in losses if loss not in BASE_LOSSES]
    if unknown:
        parser.error(f"--losses: unknown {unknown[0]!r}; known: {', '.join(BASE_LOSSES)}")
    if not args.summarize_only:
        cells = [(m, loss, s) for s in seeds for m in methods for loss in losses]  # seed-major: a cut grid is even
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # each cell is its own process
            futures = [pool.submit(run_cell, args.out, *cell, args.steps, args.overrides) for cell in cells]
            failed = sum(not future.result() for future in futures)
        if failed:
            print(f"{failed} cell(s) failed; their logs are in {args.out / 'logs'}", file=sys.stderr)
    table = summarize(args.out, methods, losses, seeds, args.steps)
    command = "python benchmarks/generalization.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    header = (
        f"Command: `{command}`  \nCommit: `{commit()}`; machine: {os.cpu_count()} CPU cores.  \n"
        f"Protocol: ../shared/EXPERIMENTS.md — Omniglot 28 px, small ConvNet, 128-d, P×K = 32×4, "
        f"{args.steps} steps, Adam 1e-3 cosine, {args.jobs} cell(s) at a time; checkpoint selected on "
        f"validation Recall@1 (15% of the training classes); test = 659 unseen classes; "
        f"mean ± std over seeds {args.seeds}.\n\n"
    )
    print(header + table)
    if args.table:  # the whole file is regenerated from the finished cells: list every method to keep
        args.table.write_text("# Results: the generalization benchmark\n\n" + header + table)


if __name__ == "__main__":
    main()
