"""The training-speed benchmark runs end to end on the real Omniglot: one `ratio` line per case, the sampler's
time beside each and the re-clustering beside the methods that cluster (a tiny run: it checks the benchmark, not
the speed; the numbers live in docs/speed.md)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from unseen.data import data_root

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^(\w+) +trainer +([\d.]+) img/s +bare +([\d.]+) img/s +ratio ([\d.]+) .* sampler ([\d.]+) ms/step")


def test_train_speed_prints_one_ratio_line_per_case():
    if not (data_root() / "omniglot").exists():
        pytest.fail(f"Omniglot not found under {data_root()}; set UNSEEN_DATA")
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train_speed.py"), "--cases", "convnet", "divide_conquer",
         "--steps", "2", "--rounds", "1", "--threads", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if " ratio " in line]
    matches = [LINE.match(line) for line in lines]
    assert [m.group(1) for m in matches if m] == ["convnet", "divide_conquer"], result.stdout
    for m in matches:
        trainer, bare, ratio = float(m.group(2)), float(m.group(3)), float(m.group(4))
        assert trainer > 0 and bare > 0 and ratio == pytest.approx(trainer / bare, abs=2e-3)
    assert "re-clustering" in lines[1] and "re-clustering" not in lines[0]
