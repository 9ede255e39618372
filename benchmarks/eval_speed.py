"""Speed and peak memory of unseen's evaluation engine against pytorch-metric-learning's AccuracyCalculator.

Builds a SOP-shaped synthetic set (60,502 unit vectors of 512 dimensions, 11,316 classes of 2-12 images,
seeded; class centres grouped under 12 super-classes and a per-class noise level, so that Recall@1 is about
0.68 as for a mid-range SOP model), saves it to a temporary directory, and runs each side in a fresh
subprocess that loads the same .npy files:

  unseen retrieval   evaluate(metrics=recall, precision@1, r_precision, map@r; recall_at=1,10,100,1000)
  PML retrieval      AccuracyCalculator(k="max_bin_count", include=precision_at_1, r_precision,
                     mean_average_precision_at_r)   (faiss exact L2 search; cannot give Recall@1000)
  unseen clustering  evaluate(metrics=nmi, f1)      (k-means from faiss' seeded start, exact assignments)
  PML clustering     AccuracyCalculator(include=NMI) (faiss k-means, at most 20 iterations; same seed)

Wall time is measured inside the subprocess around the one evaluation call (imports and loading excluded).
Peak memory is the subprocess's peak resident set size (VmHWM, which a fresh process starts at zero, unlike
ru_maxrss that inherits the parent's): it includes the interpreter, torch and the loaded embeddings on both
sides alike, so neither side is charged for the other's allocations and allocator caches are counted as the
OS sees them; on CUDA the peak of torch.cuda.max_memory_allocated is
printed too. With --repeats R the sides run interleaved R times and the fastest run of each is kept (the
machine may be shared), all runs printed. The floor is the bare N×N×d product, 2·N²·d flops, at this
machine's measured torch.mm rate (fp32 and bf16), with how close unseen's retrieval time comes to it.

Usage: python benchmarks/eval_speed.py [--small] [--device cpu|cuda] [--repeats R]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FULL = {"rows": 60_502, "classes": 11_316, "dim": 512}
SMALL = {"rows": 6_050, "classes": 1_131, "dim": 128}
RECALL_AT = (1, 10, 100, 1000)
WORKERS = ("unseen-retrieval", "pml-retrieval", "unseen-clustering", "pml-clustering")


def sop_like(rows: int, classes: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors with SOP's shape: classes of 2-12 images, 12 super-classes, per-class noise levels."""
    rng = np.random.default_rng(seed)
    sizes = 2 + rng.binomial(10, (rows / classes - 2) / 10, size=classes)
    while sizes.sum() != rows:  # nudge random classes, staying within 2..12, until the total is exact
        diff = rows - sizes.sum()
        pick = rng.integers(0, classes, size=abs(diff))
        sizes[pick] = np.clip(sizes[pick] + np.sign(diff), 2, 12)
    labels = np.repeat(np.arange(classes), sizes)
    supers = _unit(rng.standard_normal((12, dim)))
    centres = _unit(_unit(rng.standard_normal((classes, dim))) + 0.5 * supers[rng.integers(0, 12, classes)])
    noise = rng.uniform(1.0, 3.0, classes)[labels, None] / np.sqrt(dim)
    x = _unit(centres[labels] + noise * rng.standard_normal((rows, dim)))
    order = rng.permutation(rows)
    return x[order].astype(np.float32), labels[order].astype(np.int64)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def worker(name: str, data: Path, device: str) -> None:
    """Run one side once and print {"seconds", "peak_rss", "cuda_peak", "result"} as JSON."""
    import torch

    x, labels = np.load(data / "x.npy"), np.load(data / "labels.npy")
    if name.startswith("unseen"):
        from unseen.evaluation import evaluate

        metrics = ("recall", "precision@1", "r_precision", "map@r") if name.endswith("retrieval") else ("nmi", "f1")
        call = lambda: evaluate(x, labels, recall_at=RECALL_AT, metrics=metrics, device=device)  # noqa: E731
    else:
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        include = ("precision_at_1", "r_precision", "mean_average_precision_at_r")
        include = include if name.endswith("retrieval") else ("NMI",)
        calculator = AccuracyCalculator(include=include, k="max_bin_count", device=torch.device(device))
        call = lambda: calculator.get_accuracy(torch.from_numpy(x), torch.from_numpy(labels))  # noqa: E731
    start = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - start
    cuda_peak = torch.cuda.max_memory_allocated() if device == "cuda" else 0
    print(json.dumps({"seconds": seconds, "peak_rss": _peak_rss(), "cuda_peak": cuda_peak, "result": result}))


def _peak_rss() -> int:
    """This process's peak resident set size in bytes: VmHWM, which starts afresh at exec (ru_maxrss does not:
    Linux carries the parent's high-water mark into a child through fork and exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def gemm_rates(device: str) -> dict[str, float]:
    """Best-of-5 torch.mm rate (GFLOP/s) for a 4096 × 512 × 16384 product in fp32 and bf16."""
    import torch

    rates = {}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(4096, 512, device=device).to(dtype)
        b = torch.randn(16384, 512, device=device).to(dtype)
        best = float("inf")
        for _ in range(5):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            a @ b.T
            if device == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        rates[str(dtype).removeprefix("torch.")] = 2 * 4096 * 512 * 16384 / best / 1e9
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a 6,050 × 128 set for a quick smoke run")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=1, help="interleaved runs per side; the fastest is kept")
    parser.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.data, args.device)
        return

    import torch

    shape = SMALL if args.small else FULL
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        x, labels = sop_like(**shape)
        np.save(data / "x.npy", x)
        np.save(data / "labels.npy", labels)
        print(
            f"SOP-shaped synthetic set: {shape['rows']:,} × {shape['dim']} unit vectors, {shape['classes']:,} classes"
            f" of {np.bincount(labels).min()}-{np.bincount(labels).max()} images, seed 0; device {args.device}, "
            f"{torch.get_num_threads()} CPU threads"
        )
        runs: dict[str, list[dict]] = {name: [] for name in WORKERS}
        for _ in range(args.repeats):
            for name in WORKERS:
                command = [sys.executable, __file__, "--worker", name, "--data", tmp, "--device", args.device]
                output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                runs[name].append(json.loads(output.strip().splitlines()[-1]))
    best = {name: min(r, key=lambda run: run["seconds"]) for name, r in runs.items()}
    _report(best, runs, shape, gemm_rates(args.device), args.device)


def _report(best: dict, runs: dict, shape: dict, rates: dict, device: str) -> None:
    gb = 1e9
    print(f"\n{'':22}{'wall s':>10}{'peak RSS GB':>14}" + (f"{'CUDA peak GB':>15}" if device == "cuda" else ""))
    for name in WORKERS:
        line = f"{name:22}{best[name]['seconds']:10.2f}{best[name]['peak_rss'] / gb:14.2f}"
        line += f"{best[name]['cuda_peak'] / gb:15.2f}" if device == "cuda" else ""
        seconds = ", ".join(f"{run['seconds']:.2f}" for run in runs[name])
        print(line + (f"   (runs: {seconds})" if len(runs[name]) > 1 else ""))
    for side, targets in (("retrieval", "targets: time <= 0.5, memory <= 0.25"), ("clustering", "target: time <= 1")):
        ours, theirs = best[f"unseen-{side}"], best[f"pml-{side}"]
        print(
            f"{side} ratio unseen/PML: time {ours['seconds'] / theirs['seconds']:.3f}, "
            f"peak memory {ours['peak_rss'] / theirs['peak_rss']:.3f}   ({targets})"
        )
    ours, theirs = best["unseen-retrieval"]["result"], best["pml-retrieval"]["result"]
    pairs = {"precision@1": "precision_at_1", "r_precision": "r_precision", "map@r": "mean_average_precision_at_r"}
    differences = [abs(ours[key] - theirs[name]) for key, name in pairs.items()]
    print(
        "agreement: "
        + ", ".join(f"{key} {ours[key]:.6f} (PML {theirs[name]:.6f})" for key, name in pairs.items())
        + f"; max |difference| {max(differences):.1e}"
    )
    print("unseen recall: " + ", ".join(f"R@{k} {ours[f'recall@{k}']:.4f}" for k in RECALL_AT))
    clustering = best["unseen-clustering"]["result"]
    print(
        f"clustering: unseen NMI {clustering['nmi']:.4f}, F1 {clustering['f1']:.4f}; "
        f"PML NMI {best['pml-clustering']['result']['NMI']:.4f}"
    )
    flops = 2 * shape["rows"] ** 2 * shape["dim"]
    seconds = best["unseen-retrieval"]["seconds"]
    for dtype, rate in rates.items():
        floor = flops / (rate * 1e9)
        print(
            f"floor: 2·N²·d = {flops / 1e12:.2f} TFLOP at the measured {dtype} torch.mm rate {rate:.0f} GFLOP/s "
            f"= {floor:.2f} s; unseen retrieval takes {seconds / floor:.2f}× that"
        )


if __name__ == "__main__":
    main()
