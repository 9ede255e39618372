"""Clustering a folder: K given or chosen by silhouette, clusters.csv, contact sheets, the overview page."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from unseen.retrieval.cluster import choose_k, cluster_images, cluster_vectors
from unseen.retrieval.errors import RetrievalError
from unseen.retrieval.sources import list_items


def blobs(centres: int, per: int, dim: int = 16, spread: float = 0.05, seed: int = 0):
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((centres, dim))
    x = np.repeat(means, per, axis=0) + spread * rng.standard_normal((centres * per, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), np.repeat(np.arange(centres), per)


def test_auto_k_picks_the_number_of_well_separated_groups():
    x, _ = blobs(5, 30)
    k, scores = choose_k(x, (2, 9), log=lambda _: None)
    assert k == 5 and sorted(scores) == list(range(2, 10)) and scores[5] == max(scores.values())
    with pytest.raises(RetrievalError, match=r"--k-range: expected 2 <= MIN <= MAX"):
        choose_k(x, (1, 4), log=lambda _: None)


def test_clusters_are_numbered_by_size_and_match_the_groups():
    x, labels = blobs(3, 20)
    keep = np.concatenate([np.arange(0, 20), np.arange(20, 30), np.arange(40, 45)])  # sizes 20, 10, 5
    clusters, similarities = cluster_vectors(x[keep], 3)
    assert np.bincount(clusters).tolist() == [20, 10, 5]
    assert all(len(set(clusters[labels[keep] == c])) == 1 for c in range(3))
    assert (similarities > 0.9).all() and (similarities <= 1 + 1e-9).all()


def test_cluster_images_writes_csv_sheets_and_page(tmp_path, embedder, gallery):
    report = cluster_images(embedder, list_items(gallery), tmp_path / "out", k=3, source=str(gallery),
                            log=lambda _: None)
    out = tmp_path / "out"
    rows = list(csv.DictReader(open(out / "clusters.csv")))
    assert len(rows) == 24 and {row["cluster"] for row in rows} == {"0", "1", "2"}
    assert {row["label"] for row in rows} == {"g00", "g01", "g02", "g03"}
    sizes = np.bincount([int(row["cluster"]) for row in rows])
    assert list(sizes) == sorted(sizes, reverse=True)
    summary = json.loads((out / "clusters.json").read_text())
    assert summary["k"] == 3 and summary["criterion"] == "given (--k)" and summary["skipped"] == 2
    assert set(summary["scores"]) == {"nmi", "f1", "purity", "labelled_images", "classes"}
    page = (out / "index.html").read_text()
    for cluster in range(3):
        sheet = out / "sheets" / f"cluster-{cluster:03d}.png"
        assert Image.open(sheet).size[0] > 96 and f"sheets/cluster-{cluster:03d}.png" in page
    assert (out / "skipped.csv").is_file() and report.k == 3
    auto = cluster_images(embedder, list_items(gallery), tmp_path / "auto", k_range=(2, 5), log=lambda _: None)
    assert 2 <= auto.k <= 5 and (tmp_path / "auto" / "k_selection.csv").read_text().startswith("k,silhouette\n2,")
    assert "highest mean silhouette (cosine) over K = 2 to 5" in (tmp_path / "auto" / "index.html").read_text()
