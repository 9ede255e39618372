"""Clustering a folder of images by their embeddings (`unseen cluster`): k-means, a CSV, contact sheets, a page.

    OUT_DIR/clusters.csv        path,cluster,label,similarity (cosine to the cluster's normalized centre)
            clusters.json       K, how it was chosen, sizes, and NMI / pairwise F1 / purity when labels are known
            k_selection.csv     k,silhouette for --k auto
            sheets/cluster-NNN.png   the cluster's images nearest its centre first (up to 48)
            index.html          the overview: one row per cluster with its sheet
            skipped.csv         path,reason of the images that could not be decoded

k-means is faiss' (Lloyd's in L2 on the unit vectors), best of 5 seeded starts by its objective: a single random
start, as the evaluation engine's NMI uses for parity with the literature, too often merges two groups and splits
another. Clusters are numbered by size, largest first. `--k auto` picks the K of
a range with the highest mean silhouette coefficient (cosine distance) over a seeded sample of up to 5,000
images: s(i) = (b - a) / max(a, b), a = mean distance to its own cluster, b = to the nearest other cluster.
"""

from __future__ import annotations

import csv
import html
import io
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unseen.artifact import Embedder
from unseen.evaluation.clustering import nmi, pairwise_f1
from unseen.files import atomic_write, write_json_atomic, write_text_atomic
from unseen.retrieval.errors import RetrievalError
from unseen.retrieval.index import model_reference
from unseen.retrieval.sources import Item
from unseen.retrieval.thumbnails import contact_sheet, open_thumbnail, png_bytes

SILHOUETTE_SAMPLE = 5000
SHEET_IMAGES = 48
RESTARTS = 5
DEFAULT_K_RANGE = (2, 30)


@dataclass(frozen=True)
class ClusterReport:
    """The clustering of a set of images: which images, their cluster (numbered by size), K and how it was chosen."""

    paths: tuple[str, ...]
    labels: tuple[str, ...]
    clusters: np.ndarray
    similarities: np.ndarray
    k: int
    criterion: str
    silhouettes: dict[int, float]
    skipped: tuple[tuple[str, str], ...]
    scores: dict[str, float]


def choose_k(vectors: np.ndarray, k_range: tuple[int, int], *, seed: int = 0,
             log: Callable[[str], None] = print) -> tuple[int, dict[int, float]]:
    """(the K in `k_range` with the highest mean cosine silhouette on a seeded sample, {K: silhouette})."""
    from sklearn.metrics import silhouette_score

    low, high = k_range[0], min(k_range[1], len(vectors) - 1)
    if low < 2 or low > high:
        raise RetrievalError(f"--k-range: expected 2 <= MIN <= MAX < the number of images ({len(vectors)}), "
                             f"got {k_range[0]}:{k_range[1]}")
    sample = np.sort(np.random.default_rng(seed).permutation(len(vectors))[:SILHOUETTE_SAMPLE])
    scores = {}
    for k in range(low, high + 1):
        assignment = kmeans(vectors, k)
        if len(np.unique(assignment[sample])) < 2:
            scores[k] = -1.0
            continue
        scores[k] = float(silhouette_score(vectors[sample], assignment[sample], metric="cosine"))
        log(f"k={k}: silhouette {scores[k]:.4f}")
    best = max(scores, key=lambda key: (scores[key], -key))
    return best, scores


def kmeans(vectors: np.ndarray, k: int, *, seed: int = 0) -> np.ndarray:
    """The cluster of each row: faiss k-means (25 iterations), the best of RESTARTS seeded starts."""
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    clustering = faiss.Kmeans(x.shape[1], k, niter=25, nredo=RESTARTS, seed=seed, min_points_per_centroid=1)
    clustering.train(x)
    _, assignment = clustering.index.search(x, 1)
    return assignment[:, 0].astype(np.int64)


def cluster_vectors(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(cluster of each row, numbered by size with the largest 0; cosine of each row to its cluster's centre)."""
    assignment = kmeans(vectors, k)
    sizes = np.bincount(assignment, minlength=k)
    by_size = np.argsort(-sizes, kind="stable")
    renumber = np.empty(k, dtype=np.int64)
    renumber[by_size] = np.arange(k)
    clusters = renumber[assignment]
    centres = np.zeros((k, vectors.shape[1]))
    np.add.at(centres, clusters, vectors.astype(np.float64))
    centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    similarities = np.einsum("nd,nd->n", vectors.astype(np.float64), centres[clusters])
    return clusters, similarities


def cluster_images(embedder: Embedder, items: Sequence[Item], out: str | Path, *, k: int | None = None,
                   k_range: tuple[int, int] = DEFAULT_K_RANGE, batch_size: int = 256, progress: bool = False,
                   source: str = "", log: Callable[[str], None] = print) -> ClusterReport:
    """Embed `items`, cluster them into `k` clusters (None: chosen by silhouette over `k_range`) and write the CSV,
    the contact sheets and the overview page to `out`."""
    out = Path(out)
    embedded = embedder.embed_files([item.path for item in items], batch_size=batch_size, progress=progress)
    label_of = {item.path: item.label for item in items}
    vectors, paths = embedded.vectors, embedded.paths
    if len(paths) < 2:
        raise RetrievalError(f"{source or 'images'}: {len(paths)} readable images; clustering needs at least 2")
    if k is None:
        k, silhouettes = choose_k(vectors, k_range, log=log)
        criterion = (f"highest mean silhouette (cosine) over K = {min(silhouettes)} to {max(silhouettes)}, on "
                     f"{min(len(paths), SILHOUETTE_SAMPLE)} sampled images")
    else:
        if not 1 <= k <= len(paths):
            raise RetrievalError(f"--k: expected 1 to {len(paths)} (the readable images), got {k}")
        silhouettes, criterion = {}, "given (--k)"
    clusters, similarities = cluster_vectors(vectors, k)
    labels = tuple(label_of[path] for path in paths)
    report = ClusterReport(tuple(paths), labels, clusters, similarities, k, criterion, silhouettes,
                           tuple(embedded.failed), _scores(labels, clusters))
    _write(report, out, embedder, source)
    return report


def _scores(labels: Sequence[str], clusters: np.ndarray) -> dict[str, float]:
    """NMI, pairwise F1 and purity against the labels, over the labelled images (empty when none has a label)."""
    known = np.array([bool(label) for label in labels])
    if known.sum() < 2:
        return {}
    _, ids = np.unique(np.asarray(labels)[known], return_inverse=True)
    kept = clusters[known]
    purity = sum(Counter(ids[kept == c].tolist()).most_common(1)[0][1] for c in np.unique(kept)) / len(kept)
    return {"nmi": nmi(ids, kept), "f1": pairwise_f1(ids, kept), "purity": float(purity),
            "labelled_images": int(known.sum()), "classes": int(ids.max() + 1)}


def _write(report: ClusterReport, out: Path, embedder: Embedder, source: str) -> None:
    sheets = out / "sheets"
    sheets.mkdir(parents=True, exist_ok=True)
    rows = [["path", "cluster", "label", "similarity"]]
    rows += [[p, int(c), lab, f"{s:.6f}"] for p, c, lab, s in zip(report.paths, report.clusters, report.labels,
                                                                 report.similarities, strict=True)]
    write_text_atomic(out / "clusters.csv", _csv(rows))
    if report.silhouettes:
        write_text_atomic(out / "k_selection.csv", _csv([["k", "silhouette"],
                                                         *[[k, f"{s:.6f}"] for k, s in report.silhouettes.items()]]))
    if report.skipped:
        write_text_atomic(out / "skipped.csv", _csv([["path", "reason"], *report.skipped]))
    summaries = []
    for cluster in range(report.k):
        members = np.flatnonzero(report.clusters == cluster)
        members = members[np.argsort(-report.similarities[members], kind="stable")]
        shown = [open_thumbnail(report.paths[i], max_pixels=10**9, size=96) for i in members[:SHEET_IMAGES]]
        with atomic_write(sheets / f"cluster-{cluster:03d}.png") as file:
            file.write(png_bytes(contact_sheet(shown)))
        counts = Counter(report.labels[i] for i in members if report.labels[i])
        summaries.append({"cluster": cluster, "size": int(len(members)), "shown": len(shown),
                          "top_labels": counts.most_common(3)})
    write_json_atomic(out / "clusters.json", {
        "k": report.k, "criterion": report.criterion, "images": len(report.paths), "skipped": len(report.skipped),
        "silhouettes": {str(k): s for k, s in report.silhouettes.items()}, "scores": report.scores,
        "clusters": summaries, "source": source, "model": model_reference(embedder),
    })
    write_text_atomic(out / "index.html", _page(report, summaries, embedder, source))


def _csv(rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _page(report: ClusterReport, summaries: list[dict[str, Any]], embedder: Embedder, source: str) -> str:
    esc = html.escape
    scores = "".join(f"<li>{esc(name)}: {value:.4f}</li>" if isinstance(value, float) else
                     f"<li>{esc(name)}: {value}</li>" for name, value in report.scores.items())
    silhouettes = "".join(f"<tr{' class=chosen' if k == report.k else ''}><td>{k}</td><td>{s:.4f}</td></tr>"
                          for k, s in report.silhouettes.items())
    rows = []
    for summary in summaries:
        labels = ", ".join(f"{esc(label)} ({count})" for label, count in summary["top_labels"]) or "—"
        rows.append(f"<tr><td>{summary['cluster']}</td><td>{summary['size']}</td><td>{labels}</td>"
                    f"<td><img src='sheets/cluster-{summary['cluster']:03d}.png' loading='lazy' "
                    f"alt='cluster {summary['cluster']}'><br><small>{summary['shown']} of {summary['size']} images, "
                    "nearest the centre first</small></td></tr>")
    checkpoint = embedder.checkpoint or "in memory"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>clusters of {esc(source)}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d232b; }}
table {{ border-collapse: collapse; }} td, th {{ border-bottom: 1px solid #dde2e7; padding: 6px 10px; text-align: left;
vertical-align: top; }} img {{ max-width: 820px; image-rendering: pixelated; }} .chosen {{ font-weight: 700;
background: #eef5ff; }} .meta {{ color: #56606b; }}
</style></head><body>
<h1>{report.k} clusters of {len(report.paths)} images</h1>
<p class="meta">source {esc(source)} · checkpoint {esc(str(checkpoint))} (sha256 {embedder.fingerprint[:12]}) ·
{time.strftime('%Y-%m-%d %H:%M')} · {len(report.skipped)} unreadable images skipped
{'(skipped.csv)' if report.skipped else ''} · <a href="clusters.csv">clusters.csv</a></p>
<p>K: {esc(report.criterion)}.</p>
{f'<h2>Agreement with the labels</h2><ul>{scores}</ul>' if scores else ''}
{f'<h2>Choosing K</h2><table><tr><th>K</th><th>silhouette</th></tr>{silhouettes}</table>' if silhouettes else ''}
<h2>Clusters, largest first</h2>
<table><tr><th>cluster</th><th>images</th><th>most common labels</th><th>contact sheet</th></tr>
{''.join(rows)}
</table></body></html>
"""
