"""The run artifact on the real Omniglot: 30 training steps, the run folder copied alone to a new place with no
dataset reachable, loaded with `unseen.load`: the same test embeddings and the same Recall@1 as the trainer's."""

import shutil
from pathlib import Path

import numpy as np
import pytest

import unseen
import unseen.data as data_module
from unseen.config import load_config
from unseen.evaluation import evaluate
from unseen.train.trainer import Trainer

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "omniglot" / "baseline.yaml"


def test_thirty_steps_then_load_the_copied_run_without_data(tmp_path, monkeypatch):
    config = load_config(CONFIG, ["train.steps=30", "train.validate_every=15", "train.threads=2",
                                  "evaluation.metrics=[recall]", "evaluation.recall_at=[1]"])
    trainer = Trainer(config, tmp_path / "run", progress=False)
    results = trainer.fit()
    test = trainer.c.splits.test
    reference = trainer.c.embed(test)  # the trainer's own embedding of the test split, best checkpoint

    copy = tmp_path / "somewhere" / "else"
    shutil.copytree(tmp_path / "run", copy)
    monkeypatch.setenv("UNSEEN_DATA", str(tmp_path / "no-data-here"))
    monkeypatch.setattr(data_module, "build_splits", lambda *a, **k: pytest.fail("loading read a dataset"))
    embedder = unseen.load(copy)
    vectors = embedder.embed(test.images, batch_size=1000)

    assert vectors.shape == (13_180, 128)
    assert np.abs(vectors - reference).max() <= 1e-6
    recall = evaluate(vectors, test.labels, metrics=["recall"], recall_at=[1])["recall@1"]
    assert recall == results["test"]["recall@1"]
