"""End to end on the real Omniglot: a short training run must lift unseen-class Recall@1 well above the
untrained network's, and the command line must train, evaluate and embed a run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from unseen.config import load_config
from unseen.data import data_root
from unseen.train.trainer import Trainer

pytestmark = pytest.mark.slow

SHORT = ["train.steps=120", "train.validate_every=60", "train.threads=2",
         "evaluation.metrics=[recall,map@r]", "evaluation.recall_at=[1,4]"]


@pytest.fixture(scope="module")
def omniglot_root():
    root = data_root()
    if not (root / "omniglot").exists():
        pytest.fail(f"Omniglot not found under {root}; set UNSEEN_DATA (make test points it at ../shared/data)")
    return root


def test_training_lifts_unseen_class_recall(tmp_path, omniglot_root):
    config = load_config(Path("configs/omniglot/baseline.yaml"), SHORT)
    trainer = Trainer(config, tmp_path / "run", progress=False)
    untrained = trainer.c.evaluate(trainer.c.splits.test)
    results = trainer.fit()
    assert trainer.c.splits.test.num_classes == 659 and len(trainer.c.splits.test) == 13_180
    assert results["test"]["recall@1"] > untrained["recall@1"] + 0.15, (untrained, results["test"])
    assert results["test"]["map@r"] > untrained["map@r"]


def run_cli(*args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "unseen", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_command_line_train_evaluate_embed(tmp_path, omniglot_root):
    repo = Path(__file__).resolve().parents[2]
    run = tmp_path / "run"
    config = repo / "configs/omniglot/baseline.yaml"
    trained = run_cli("train", str(config), "train.steps=20", "--out", str(run),
                      "--no-progress", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "recall@1" in trained.stdout and (run / "metrics.json").exists()

    evaluated = run_cli("evaluate", str(run), "--json", str(tmp_path / "m.json"), "--no-progress", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads((tmp_path / "m.json").read_text())
    metrics = report["metrics"]
    assert metrics["recall@1"] == pytest.approx(json.loads((run / "metrics.json").read_text())["test"]["recall@1"])
    assert report["protocol"].startswith("leave-one-out") and report["checkpoint"].endswith("best.pt")

    embedded = run_cli("embed", str(run), "--out", str(tmp_path / "e.npy"), "--no-progress", cwd=tmp_path)
    assert embedded.returncode == 0, embedded.stderr
    vectors = np.load(tmp_path / "e.npy")
    assert vectors.shape == (13_180, 128)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    from_files = run_cli("evaluate", "--embeddings", str(tmp_path / "e.npy"), "--labels",
                         str(tmp_path / "e.labels.npy"), "--json", str(tmp_path / "f.json"), "--no-progress",
                         cwd=tmp_path)
    assert from_files.returncode == 0, from_files.stderr
    assert json.loads((tmp_path / "f.json").read_text())["metrics"]["recall@1"] == pytest.approx(metrics["recall@1"])

    again = run_cli("train", str(config), "--out", str(run), cwd=tmp_path)
    assert again.returncode == 2 and "already holds a run" in again.stderr


def test_torchrun_trains_one_run_from_the_command_line(tmp_path, omniglot_root):
    """Two gloo processes under torchrun: one run directory, named by rank 0's clock; rank 0 alone prints and writes."""
    config = Path(__file__).resolve().parents[2] / "configs/omniglot/baseline.yaml"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "unseen",
               "train", str(config), "train.steps=20", "train.validate_every=10", "train.threads=1", "--no-progress"]
    done = subprocess.run(command, cwd=tmp_path, env={**os.environ, "PYTHONUNBUFFERED": "1"}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    (run,) = (tmp_path / "runs").iterdir()
    assert done.stdout.count("run dir: ") == 1 and done.stdout.count("metrics: ") == 1
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history if r["kind"] == "val"] == [10, 20]
    assert json.loads((run / "metrics.json").read_text())["test"]["recall@1"] > 0.3
