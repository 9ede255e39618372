"""The generalization benchmark's runner: cell configs, failure handling and the summary table."""

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "generalization.py"


@pytest.fixture(scope="module")
def runner():
    spec = importlib.util.spec_from_file_location("generalization", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_cell_config_takes_the_base_loss_and_the_variant_overrides(runner, tmp_path):
    path = runner.cell_config(tmp_path, "divide_conquer+method.num_clusters=8+model.taps=[]", "margin")
    raw = yaml.safe_load(path.read_text())
    assert raw["method"]["num_clusters"] == 8 and raw["method"]["name"] == "divide_conquer"
    assert raw["model"]["taps"] == []
    assert raw["loss"] == runner.BASE_LOSSES["margin"]["loss"]
    assert raw["miner"] == runner.BASE_LOSSES["margin"]["miner"]


def fake_cell(runner, out, method, loss, seed, r1, val, minutes=2.0, steps=1500):
    run_dir = runner.cell_dir(out, method, loss, seed)
    run_dir.mkdir(parents=True)
    test = {c: r1 for c in runner.COLUMNS}
    metrics = {"test": test, "test_last": {"recall@1": r1 - 0.01}, "val": {"recall@1": val}, "steps": steps}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "wall_time.json").write_text(json.dumps({"seconds": minutes * 60}))


def test_the_summary_is_mean_and_sample_std_over_seeds(runner, tmp_path):
    fake_cell(runner, tmp_path, "baseline", "margin", 0, 0.80, 0.9)
    fake_cell(runner, tmp_path, "baseline", "margin", 1, 0.84, 0.9, minutes=4.0)
    fake_cell(runner, tmp_path, "ecaml", "margin", 0, 0.70, 0.8)
    fake_cell(runner, tmp_path, "sharing", "margin", 0, 0.70, 0.8, steps=1200)
    table = runner.summarize(tmp_path, ["baseline", "ecaml", "mic", "sharing"], ["margin"], [0, 1], steps=1500)
    rows = {line.split(" | ")[0]: line for line in table.splitlines() if line.startswith("| ")}
    assert rows["| baseline"].startswith("| baseline | 0.8200 ± 0.0283 |")  # std of (0.80, 0.84), ddof 1
    assert rows["| baseline"].endswith("| 0.8100 ± 0.0283 | 0.9000 ± 0.0000 | 3.0 min |")
    assert rows["| ecaml (1/2 seeds)"].startswith("| ecaml (1/2 seeds) | 0.7000 |")  # one seed: no spread
    assert "mic" not in table  # no finished cell, no row
    assert "| sharing (1/2 seeds) (ran 1200 steps: train.epochs ran out) | 0.7000 |" in table


def test_a_failing_cell_is_reported_with_its_log_and_the_grid_goes_on(runner, tmp_path, capsys):
    assert runner.run_cell(tmp_path, "baseline+method.no_such_key=1", "margin", 0, 10, []) is False
    log = (tmp_path / "logs" / "baseline+method.no_such_key=1-margin-seed0.log").read_text()
    assert "no_such_key" in log
    assert "FAILED baseline+method.no_such_key=1 / margin / seed 0" in capsys.readouterr().out
