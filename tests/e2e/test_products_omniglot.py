"""End to end on the real Omniglot: train briefly, then index unseen test classes, search, cluster, report and serve
through the command line, as a user would after training."""

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import unseen
from unseen.config import load_config
from unseen.data import data_root
from unseen.evaluation import evaluate
from unseen.retrieval.index import GalleryIndex
from unseen.train.trainer import Trainer

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CLASSES = 60  # unseen test classes written out as PNG files (20 images each)


def cli(*args, timeout=600):
    result = subprocess.run([sys.executable, "-m", "unseen", *map(str, args)], cwd=REPO, capture_output=True,
                            text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 60-step Omniglot run, and a manifest of the PNG files of CLASSES of its unseen test classes."""
    if not (data_root() / "omniglot").exists():
        pytest.fail(f"Omniglot not found under {data_root()}; set UNSEEN_DATA (make test points it at ../shared/data)")
    root = tmp_path_factory.mktemp("products")
    config = load_config(REPO / "configs/omniglot/baseline.yaml", [
        "train.steps=60", "train.validate_every=30", "train.threads=2", "evaluation.metrics=[recall]",
        "evaluation.recall_at=[1]"])
    trainer = Trainer(config, root / "run", progress=False)
    trainer.fit()
    test = trainer.c.splits.test
    rows = np.flatnonzero(test.labels < CLASSES)
    (root / "images").mkdir()
    with open(root / "gallery.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        for row in rows:
            Image.fromarray(test.images[row]).save(root / "images" / f"{row:05d}.png")
            writer.writerow([f"images/{row:05d}.png", test.class_names[test.labels[row]]])
    return root


def test_index_search_and_recall_agree_with_the_evaluation_engine(trained):
    run, index_dir = trained / "run", trained / "index"
    out = cli("index", "build", run, trained / "gallery.csv", "--out", index_dir, "--no-progress")
    assert f"flat index of {CLASSES * 20} images (128-d)" in out
    index = GalleryIndex.load(index_dir)
    queries = [index.paths[0], index.paths[777]]
    results = [json.loads(line) for line in cli("search", index_dir, *queries, "-k", "5", "--json").splitlines()]
    for query, result in zip(queries, results, strict=True):
        assert result["hits"][0]["path"] == query and result["hits"][0]["similarity"] == pytest.approx(1.0, abs=1e-5)
        assert len(result["hits"]) == 5
    table = cli("search", index_dir, queries[1], "-k", "3")
    assert table.splitlines()[2].split()[3] == queries[1]

    _, labels = np.unique(np.asarray(index.labels), return_inverse=True)
    _, nearest = index.search(np.asarray(index.vectors), 1, exclude=np.arange(index.count))
    recall_from_index = float(np.mean(labels[nearest[:, 0]] == labels))
    vectors = unseen.load(run).embed(list(index.paths))
    assert np.allclose(vectors, index.vectors, atol=1e-6)
    engine = evaluate(vectors, labels, metrics=["recall"], recall_at=[1])["recall@1"]
    assert recall_from_index == engine, (recall_from_index, engine)
    # 60 trained steps retrieve 0.79 of these 60 unseen classes (chance: 1/60); a misaligned index or a broken
    # run falls far below the bound
    assert 0.5 < recall_from_index < 1


def test_cluster_report_and_server(trained, tmp_path):
    run = trained / "run"
    out = cli("cluster", run, trained / "gallery.csv", "--out", tmp_path / "clusters", "--k", "auto", "--k-range",
              "50:70", "--no-progress")
    assert "clusters of 1200 images" in out and "against the labels: nmi" in out
    rows = list(csv.DictReader(open(tmp_path / "clusters" / "clusters.csv")))
    k = json.loads((tmp_path / "clusters" / "clusters.json").read_text())["k"]
    assert len(rows) == 1200 and 50 <= k <= 70 and len(list((tmp_path / "clusters" / "sheets").iterdir())) == k

    cli("report", run, "--out", tmp_path / "report.html", "--no-progress")
    page = (tmp_path / "report.html").read_text()
    assert "Retrieval on the unseen test classes" in page and "t-SNE" in page and "659 classes" in page
    artifacts = Path(os.environ.get("UNSEEN_TEST_ARTIFACTS", REPO / "tests" / "artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    shutil.copy(tmp_path / "report.html", artifacts / "omniglot-report.html")

    if not (trained / "index" / "index.json").exists():
        cli("index", "build", run, trained / "gallery.csv", "--out", trained / "index", "--no-progress")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "unseen", "serve", trained / "index", "--port", str(port)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.5)
        assert httpx.get(f"{url}/api/index").json()["images"] == 1200
        hits = httpx.get(f"{url}/api/search/3?k=5").json()["hits"]
        assert len(hits) == 5 and 3 not in [hit["row"] for hit in hits]
        query = sorted((trained / "images").iterdir())[3].read_bytes()
        found = httpx.post(f"{url}/api/search?k=4", files={"image": ("q.png", query, "image/png")}).json()
        assert found["hits"][0]["row"] == 3
        assert httpx.get(f"{url}/api/items/3/thumbnail").headers["content-type"] == "image/png"
    finally:
        server.terminate()
        server.wait(timeout=30)
