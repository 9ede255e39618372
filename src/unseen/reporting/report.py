"""`unseen report RUN_DIR`: one self-contained report.html (every image inlined; it opens offline) of a run.

It shows the training loss and the validation curves with the selected step (and the traced test metrics when the
run kept them, labelled as for the figure only: nothing chose with them), the final metrics with the protocol and
the selection rule, a retrieval grid (queries from the unseen test classes with their top-k, correct ones marked),
a t-SNE map of test embeddings coloured by class, and the resolved config. The test images are read through the
run's own data config (`unseen.evaluation.runs.run_table`), so the report needs the run's data (`--data-root`).
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from unseen.artifact import Embedder
from unseen.data.base import Table
from unseen.errors import UnseenError
from unseen.files import write_text_atomic
from unseen.reporting import plots
from unseen.retrieval.thumbnails import data_uri, png_bytes, thumbnail

MAP_POINTS = 2000


class ReportError(UnseenError):
    """A report cannot be made (`runs/x: the run's test images are not readable ...; pass --data-root DIR`)."""


def render_report(run_dir: str | Path, *, out: str | Path | None = None, which: str = "best",
                  data_root: str | Path | None = None, queries: int = 8, k: int = 8, map_classes: int = 20,
                  seed: int = 0, progress: bool = False) -> Path:
    """Write the report of `run_dir` to `out` (default RUN_DIR/report.html) and return its path."""
    import unseen
    from unseen.evaluation.runs import run_table

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ReportError(f"{run_dir}: not a run folder (no config.yaml)")
    embedder = unseen.load(run_dir, which)
    try:
        config, table, dataset = run_table(embedder, "test", data_root)
        vectors = embedder.embed_table(table, progress=progress)
    except UnseenError as error:
        root = data_root or (embedder.config.data.root if embedder.config else None) or "$UNSEEN_DATA"
        raise ReportError(f"{run_dir}: cannot read the run's test images from {root} ({error}); if its data is "
                          "elsewhere, pass --data-root DIR, the folder that holds its dataset") from None
    history = _json_lines(run_dir / "history.jsonl")
    trace = _json_lines(run_dir / "test_trace.jsonl")
    metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else None
    rng = np.random.default_rng(seed)
    sections = [
        _metrics_section(metrics),
        _curves_section(history, trace, embedder.step if which == "best" else None, config.evaluation.select_on),
        _retrieval_section(table, vectors, rng, queries, k),
        _map_section(table, vectors, rng, map_classes, seed),
        f"<h2>Resolved config</h2><pre>{html.escape((run_dir / 'config.yaml').read_text())}</pre>",
    ]
    out = Path(out) if out is not None else run_dir / "report.html"
    write_text_atomic(out, _page(run_dir, embedder, which, dataset, sections))
    return out


def _json_lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _figure(png: bytes | None, alt: str, caption: str = "") -> str:
    if png is None:
        return f"<p class='meta'>{html.escape(alt)}: nothing recorded.</p>"
    return (f"<figure><img src='{data_uri(png)}' alt='{html.escape(alt)}'>"
            f"{f'<figcaption>{caption}</figcaption>' if caption else ''}</figure>")


def _metrics_section(metrics: dict[str, Any] | None) -> str:
    if metrics is None:
        return "<h2>Final metrics</h2><p>The run has not finished: no metrics.json yet.</p>"
    columns = [("test", "test, selected checkpoint"), ("test_last", "test, last checkpoint"),
               ("val", "validation, selected checkpoint")]
    columns = [(key, title) for key, title in columns if isinstance(metrics.get(key), dict)]
    names: list[str] = []
    for key, _ in columns:
        names += [name for name in metrics[key] if name not in names]
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in columns)
    body = "".join(f"<tr><td>{html.escape(name)}</td>"
                   + "".join(f"<td>{_number(metrics[key].get(name))}</td>" for key, _ in columns) + "</tr>"
                   for name in names)
    protocol = metrics.get("protocol", {})
    splits = ", ".join(f"{split}: {protocol[split]['images']} images of {protocol[split]['classes']} classes"
                       for split in ("train", "val", "test") if isinstance(protocol.get(split), dict))
    return (f"<h2>Final metrics</h2><table><tr><th>metric</th>{head}</tr>{body}</table>"
            f"<p><b>Protocol:</b> {html.escape(str(protocol.get('dataset', '')))}: "
            f"{html.escape(str(protocol.get('protocol', '')))}. {html.escape(str(protocol.get('evaluation', '')))}. "
            f"{html.escape(splits)}.</p>"
            f"<p><b>Selection:</b> {html.escape(str(metrics.get('selection', '')))} (validation classes only; the "
            f"test classes never chose anything). Steps {metrics.get('steps')}, commit "
            f"{html.escape(str(metrics.get('commit')))}.</p>")


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "—" if value is None else html.escape(str(value))


def _curves_section(history: list[dict[str, Any]], trace: list[dict[str, Any]], selected: int | None,
                    select_on: str) -> str:
    validation = [r for r in history if r.get("kind") == "val"]
    parts = ["<h2>Training</h2>",
             _figure(plots.training_curves(history), "training loss"),
             _figure(plots.metric_curves(validation, "validation metrics (held-out training classes)",
                                         selected_step=selected), "validation metrics",
                     f"The selected checkpoint has the best validation {html.escape(select_on)}.")]
    if trace:
        parts.append(_figure(plots.metric_curves(trace, "test metrics during training: for the figure only"),
                             "test trace", "Test metrics traced during training, <b>for the figure only</b>: never "
                             "read to choose a checkpoint or a setting."))
    return "".join(parts)


def _retrieval_section(table: Table, vectors: np.ndarray, rng: np.random.Generator, queries: int, k: int) -> str:
    """Queries from distinct unseen classes, each with its top-k gallery images (itself left out, by row)."""
    query_rows = np.flatnonzero(table.is_query)
    gallery_rows = np.flatnonzero(table.is_gallery)
    classes = rng.permutation(np.unique(table.labels[query_rows]))[:queries]
    chosen = [int(rng.choice(query_rows[table.labels[query_rows] == c])) for c in classes]
    gallery = vectors[gallery_rows].astype(np.float64)
    cells = []
    for row in chosen:
        scores = gallery @ vectors[row].astype(np.float64)
        scores[gallery_rows == row] = -np.inf
        order = np.lexsort((gallery_rows, -scores))[:k]
        hits = []
        for rank, position in enumerate(order, start=1):
            found = int(gallery_rows[position])
            correct = table.labels[found] == table.labels[row]
            hits.append(f"<td class='{'hit' if correct else 'miss'}'>{_thumb(table, found)}<br>"
                        f"{'✓' if correct else '✗'} {rank}: {scores[position]:.3f}<br>"
                        f"<small>{html.escape(table.class_names[table.labels[found]])}</small></td>")
        cells.append(f"<tr><td class='query'>{_thumb(table, row)}<br>query<br><small>"
                     f"{html.escape(table.class_names[table.labels[row]])}</small></td>{''.join(hits)}</tr>")
    return (f"<h2>Retrieval on the unseen test classes</h2><p>{len(chosen)} queries from different test classes "
            f"(seeded), each with its {k} most similar gallery images by cosine similarity (the query itself left "
            "out); <span class='hit-text'>✓ green</span>: same class, <span class='miss-text'>✗ red</span>: "
            f"another class.</p><table class='grid'>{''.join(cells)}</table>")


def _thumb(table: Table, row: int) -> str:
    return f"<img src='{data_uri(png_bytes(thumbnail(table.load_image(row), 80, 64)))}' alt='row {row}'>"


def _map_section(table: Table, vectors: np.ndarray, rng: np.random.Generator, map_classes: int, seed: int) -> str:
    """t-SNE (cosine) of the test embeddings of up to `map_classes` seeded classes, at most MAP_POINTS points."""
    from sklearn.manifold import TSNE

    classes = np.sort(rng.permutation(table.num_classes)[:map_classes])
    rows = np.flatnonzero(np.isin(table.labels, classes))
    if len(rows) > MAP_POINTS:
        rows = np.sort(rng.permutation(rows)[:MAP_POINTS])
    if len(rows) < 5:
        return "<h2>Map of the test embeddings</h2><p>Too few test images for a map.</p>"
    perplexity = float(min(30.0, (len(rows) - 1) / 3))
    points = TSNE(n_components=2, metric="cosine", init="pca", perplexity=perplexity, random_state=seed
                  ).fit_transform(vectors[rows])
    png = plots.embedding_map(points, table.labels[rows], table.class_names,
                              f"t-SNE of {len(rows)} test embeddings, {len(classes)} classes")
    return ("<h2>Map of the test embeddings</h2>"
            + _figure(png, "t-SNE map", f"t-SNE (cosine distance, perplexity {perplexity:.0f}, seed {seed}) of the "
                      f"test images of {len(classes)} of the {table.num_classes} unseen classes, drawn at random; "
                      "one colour (and marker) per class. Distances between far-apart groups mean little in t-SNE."))


STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1100px;
  padding: 24px; color: #1d232b; }
h1 { margin-bottom: 4px; } h2 { margin-top: 32px; border-bottom: 2px solid #1d3557; padding-bottom: 4px; }
.meta { color: #56606b; } table { border-collapse: collapse; } td, th { padding: 4px 10px; text-align: left;
  border-bottom: 1px solid #dde2e7; } figure { margin: 12px 0; } figure img { max-width: 100%; }
figcaption { color: #56606b; font-size: 13px; } pre { background: #f4f6f8; padding: 12px; overflow: auto; }
table.grid td { text-align: center; font-size: 11px; border: 3px solid transparent; padding: 3px; }
table.grid img { image-rendering: pixelated; } table.grid td.hit { border-color: #2a9d4b; }
table.grid td.miss { border-color: #d9534f; } table.grid td.query { background: #eef2f6; }
.hit-text { color: #2a9d4b; } .miss-text { color: #d9534f; }
"""


def _page(run_dir: Path, embedder: Embedder, which: str, dataset: str, sections: list[str]) -> str:
    title = f"unseen run report: {run_dir.resolve().name}"
    meta = (f"{html.escape(dataset)} · {which} checkpoint (step {embedder.step}), sha256 {embedder.fingerprint[:12]} · "
            f"commit {html.escape(str(embedder.commit))} · written {time.strftime('%Y-%m-%d %H:%M')}")
    return (f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><p class='meta'>{meta}</p>"
            + "\n".join(sections) + "</body></html>\n")
