"""Bad input on the command line: one line on stderr naming the key or file, exit code 2, nothing written."""

import subprocess
import sys

import pytest


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "unseen", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "missing.yaml"], "error: missing.yaml: cannot read config"),
        (["train", "c.yaml", "model.embeding_dim=3"],
         "error: c.yaml: unknown key 'model.embeding_dim'; did you mean 'model.embedding_dim'?"),
        (["train", "c.yaml", "train.epochs=many"], "error: c.yaml: train.epochs: input should be a valid integer"),
        (["train", "c.yaml", "loss.name=Tripletloss"], "error: loss.name: unknown loss 'Tripletloss'; known:"),
        (["train", "c.yaml", "data.root=nowhere"], "error: omniglot: "),
        (["train", "--resume", "nowhere"], "error: nowhere: no checkpoints/last.pt to resume from"),
        (["evaluate", "nowhere"], "error: nowhere: no run folder or checkpoint file there"),
        (["evaluate", "nowhere", "--metrics", "recall@1,nmi,mapr"], "error: --metrics: unknown metric 'mapr'; known:"),
        (["embed", "nowhere", "x.png"], "error: nowhere: no run folder or checkpoint file there"),
        (["evaluate", "--embeddings", "e.npy"], "error: evaluate: give either RUN_DIR or both --embeddings"),
        (["evaluate", "--embeddings", "e.npy", "--labels", "l.npy", "--recall-at", "1,x"],
         "error: --recall-at: expected comma-separated positive integers"),
        (["config", "show", "c.yaml", "method.name=ecmal"], "error: method.name: unknown method 'ecmal'; known:"),
        (["config", "show", "c.yaml", "method.confusion_weight=1"],
         "error: method (baseline): unknown key 'confusion_weight'"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(tmp_path, args, message):
    (tmp_path / "c.yaml").write_text("data:\n  name: omniglot\n")
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert not (tmp_path / "runs").exists()


def test_config_show_prints_the_resolved_config(tmp_path):
    (tmp_path / "c.yaml").write_text("loss:\n  name: TripletMarginLoss\n  margin: 0.1\n")
    result = run_cli("config", "show", "c.yaml", "loss.margin=0.3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "name: TripletMarginLoss\n  margin: 0.3" in result.stdout
    assert "embedding_dim: 128" in result.stdout


def test_evaluate_files_states_its_edges_and_computes_only_what_is_asked(tmp_path):
    import json

    import numpy as np

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(7, 4)).astype(np.float32)
    np.save(tmp_path / "e.npy", vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    np.save(tmp_path / "l.npy", np.array([0, 0, 1, 1, 1, 2, 3]))  # classes 2 and 3 are singletons
    result = run_cli("evaluate", "--embeddings", "e.npy", "--labels", "l.npy", "--metrics", "recall@1,map@r",
                     "--json", "out.json", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out.json").read_text())
    assert set(report["metrics"]) == {"recall@1", "map@r", "num_queries", "num_queries_excluded"}
    assert report["notes"]["queries_without_positive"] == report["metrics"]["num_queries_excluded"] == 2
    assert "ties:" in result.stdout and "queries without a positive: 2" in result.stdout
