"""`evaluate`: the test metrics of a set of embeddings, under leave-one-out, query -> gallery or VehicleID;
`evaluation_notes`: what the labels and split make trivial or undefined, and the rules that decide the rest.

Similarity is the inner product of the given vectors (cosine when they are L2-normalized, as the models'
outputs are); nothing is normalized unless `normalize=True`. Formulas, exclusion and tie rules:
docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from unseen.evaluation.catalog import CLUSTERING_METRICS, RETRIEVAL_METRICS
from unseen.evaluation.clustering import FAISS_SEED, kmeans, nmi, pairwise_f1
from unseen.evaluation.edges import edge_notes, positives
from unseen.evaluation.errors import EvaluationError
from unseen.evaluation.knn import search
from unseen.evaluation.metrics import map_at_r, precision_at_1, r_precision, recall_at_k
from unseen.evaluation.protocols import Split, leave_one_out, query_gallery, vehicleid_splits

METRICS = RETRIEVAL_METRICS + CLUSTERING_METRICS
COUNT_KEYS = ("num_queries", "num_queries_excluded")  # integers beside the float metrics

ArrayLike = np.ndarray | torch.Tensor


def evaluate(
    embeddings: ArrayLike,
    labels: ArrayLike,
    *,
    query: ArrayLike | None = None,
    gallery: ArrayLike | None = None,
    recall_at: Sequence[int] = (1, 2, 4, 8),
    metrics: Sequence[str] = METRICS,
    normalize: bool = False,
    clustering_seed: int = FAISS_SEED,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Metrics of `embeddings` (N×D) with integer `labels` (N): keys `recall@K`, `precision@1`, `r_precision`,
    `map@r`, `nmi`, `f1` (those asked for), plus the integers `num_queries`, `num_queries_excluded`.

    Leave-one-out when `query` and `gallery` (boolean masks over the rows) are both None; otherwise the
    masked queries search the masked gallery (a missing mask means every row). A query whose class has no
    other gallery item is excluded from the retrieval metrics and counted. Clustering (k-means with K =
    number of classes, seeded) runs on the rows that are queries or gallery items, only when asked.
    """
    inputs = _Inputs(embeddings, labels, query, gallery, recall_at, metrics, device)
    return _evaluate(inputs, normalize, clustering_seed, chunk_size, progress)


def evaluate_vehicleid(
    embeddings: ArrayLike,
    labels: ArrayLike,
    *,
    repeats: int = 10,
    seed: int = 0,
    recall_at: Sequence[int] = (1, 5),
    metrics: Sequence[str] = RETRIEVAL_METRICS,
    normalize: bool = False,
    clustering_seed: int = FAISS_SEED,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """VehicleID protocol: `repeats` random galleries of one image per identity, every other image a query.

    Each retrieval metric is the mean over repetitions, with `<key>_std` its sample standard deviation
    (0.0 for one repetition); `repeats` is added. Clustering metrics, if asked, use all rows once.
    """
    if repeats < 1:
        raise EvaluationError(f"repeats: expected a positive integer, got {repeats}")
    inputs = _Inputs(embeddings, labels, None, None, recall_at, metrics, device)
    vectors = _normalized(inputs.embeddings, normalize)
    runs = [
        _retrieval(vectors, inputs, split, chunk_size, progress)
        for split in vehicleid_splits(inputs.labels.cpu(), repeats=repeats, seed=seed)
    ]
    results: dict[str, float] = {}
    for key in runs[0]:
        values = np.array([run[key] for run in runs], dtype=np.float64)
        if key in COUNT_KEYS:
            results[key] = int(values[0]) if np.all(values == values[0]) else float(values.mean())
            continue
        results[key] = float(values.mean())
        results[f"{key}_std"] = float(values.std(ddof=1)) if repeats > 1 else 0.0
    results["repeats"] = repeats
    results.update(_clustering(vectors, inputs, leave_one_out(len(vectors)), clustering_seed, progress))
    return results


def evaluate_files(
    embeddings_path: str | Path,
    labels_path: str | Path,
    query_mask_path: str | Path | None = None,
    gallery_mask_path: str | Path | None = None,
    *,
    recall_at: Sequence[int] = (1, 2, 4, 8),
    metrics: Sequence[str] = METRICS,
    progress: bool = False,
) -> dict[str, float]:
    """`evaluate` on .npy files (embeddings N×D, labels N, optional boolean masks N); errors name the file."""
    paths = {"embeddings": embeddings_path, "labels": labels_path, "query": query_mask_path}
    paths["gallery"] = gallery_mask_path
    arrays = {field: None if path is None else _load_npy(Path(path)) for field, path in paths.items()}
    names = {field: str(path) for field, path in paths.items() if path is not None}
    inputs = _Inputs(
        arrays["embeddings"], arrays["labels"], arrays["query"], arrays["gallery"], recall_at, metrics, None, names
    )
    return _evaluate(inputs, False, FAISS_SEED, None, progress)


def evaluation_notes(
    labels: ArrayLike,
    *,
    query: ArrayLike | None = None,
    gallery: ArrayLike | None = None,
    recall_at: Sequence[int] = (1, 2, 4, 8),
) -> dict[str, object]:
    """The edges of `evaluate(embeddings, labels, query=..., gallery=..., recall_at=...)`, from the labels and
    masks alone (so also when the metrics are undefined): a JSON-able dict with `warnings` (trivial or
    undefined metrics), `queries_without_positive` and `queries_without_positive_rule`, `tie_break`,
    `self_match`, `protocol`, `num_queries`, `num_gallery`, `num_classes`. The float metrics of `evaluate` are
    unchanged; this is the note to print and store beside them."""
    return _notes({"labels": labels, "query": query, "gallery": gallery}, {}, recall_at)


def evaluation_notes_files(
    labels_path: str | Path,
    query_mask_path: str | Path | None = None,
    gallery_mask_path: str | Path | None = None,
    *,
    recall_at: Sequence[int] = (1, 2, 4, 8),
) -> dict[str, object]:
    """`evaluation_notes` of the .npy files that `evaluate_files` reads; errors name the file."""
    paths = {"labels": labels_path, "query": query_mask_path, "gallery": gallery_mask_path}
    arrays = {field: None if path is None else _load_npy(Path(path)) for field, path in paths.items()}
    return _notes(arrays, {field: str(path) for field, path in paths.items() if path is not None}, recall_at)


def _notes(arrays: dict, names: dict[str, str], recall_at: Sequence[int]) -> dict[str, object]:
    names = {"labels": "labels", "query": "query", "gallery": "gallery"} | names
    given = _tensor(arrays["labels"], names["labels"])
    n = given.shape[0] if given.ndim else 0
    labels = _labels(given, names["labels"], n)
    if arrays["query"] is None and arrays["gallery"] is None:
        split = leave_one_out(n)
    else:
        split = query_gallery(_mask(arrays["query"], names["query"], n), _mask(arrays["gallery"], names["gallery"], n))
    return edge_notes(labels.cpu(), split, recall_at)


class _Inputs:
    """Validated inputs: float32 embeddings, int64 labels and boolean masks on one device, plus the request.

    Each problem raises one EvaluationError naming the field (or file, via `names`).
    """

    def __init__(self, embeddings, labels, query, gallery, recall_at, metrics, device, names=None):
        names = {"embeddings": "embeddings", "labels": "labels", "query": "query", "gallery": "gallery"} | (
            names or {}
        )
        self.embeddings = _embeddings(embeddings, names["embeddings"], device)
        n = len(self.embeddings)
        self.labels = _labels(labels, names["labels"], n).to(self.embeddings.device)
        self.leave_one_out = query is None and gallery is None
        self.query = _mask(query, names["query"], n)
        self.gallery = _mask(gallery, names["gallery"], n)
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise EvaluationError(f"metrics: unknown metric {unknown[0]!r}; known: {', '.join(METRICS)}")
        self.metrics = tuple(metrics)
        bad = [k for k in recall_at if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1]
        if bad:
            raise EvaluationError(f"recall_at: expected positive integers, got {bad[0]!r}")
        self.recall_at = tuple(sorted({int(k) for k in recall_at})) if "recall" in self.metrics else ()

    def split(self) -> Split:
        if self.leave_one_out:
            return leave_one_out(len(self.embeddings))
        return query_gallery(self.query, self.gallery)


def _evaluate(inputs: _Inputs, normalize: bool, seed: int, chunk_size: int | None, progress: bool) -> dict:
    vectors = _normalized(inputs.embeddings, normalize)
    split = inputs.split()
    results = _retrieval(vectors, inputs, split, chunk_size, progress)
    results.update(_clustering(vectors, inputs, split, seed, progress))
    counts = {key: results.pop(key) for key in COUNT_KEYS if key in results}
    return results | counts


def _retrieval(vectors: torch.Tensor, inputs: _Inputs, split: Split, chunk_size, progress) -> dict:
    """Retrieval metrics of one split (empty if none asked for), plus query counts."""
    wanted = [m for m in inputs.metrics if m in RETRIEVAL_METRICS]
    if not wanted:
        return {}
    device = vectors.device
    query, gallery, self_index = (t.to(device) for t in (split.query, split.gallery, split.self_index))
    if len(query) == 0:
        raise EvaluationError("query: the mask selects no rows")
    if len(gallery) == 0:
        raise EvaluationError("gallery: the mask selects no rows")
    gallery_labels = inputs.labels[gallery]
    num_relevant = positives(inputs.labels, split)
    counted = num_relevant > 0
    if not counted.any():
        raise EvaluationError(
            f"query: none of the {len(query)} queries has another item of its class in the gallery"
        )
    query, self_index, num_relevant = query[counted], self_index[counted], num_relevant[counted]
    if "r_precision" in wanted or "map@r" in wanted:
        k = num_relevant
    else:
        k = torch.full_like(num_relevant, int("precision@1" in wanted))
    found = search(
        _rows(vectors, query),
        _rows(vectors, gallery),
        k,
        self_index=self_index,
        query_labels=inputs.labels[query],
        gallery_labels=gallery_labels,
        recall_at=inputs.recall_at,
        chunk_size=chunk_size,
        progress=progress,
    )
    hits = (found.indices >= 0) & (gallery_labels[found.indices.clamp(min=0)] == inputs.labels[query][:, None])
    results: dict[str, float] = {}
    for column, cutoff in enumerate(inputs.recall_at):
        results[f"recall@{cutoff}"] = recall_at_k(found.found_within[:, column])
    if "precision@1" in wanted:
        results["precision@1"] = precision_at_1(hits)
    if "r_precision" in wanted:
        results["r_precision"] = r_precision(hits, num_relevant)
    if "map@r" in wanted:
        results["map@r"] = map_at_r(hits, num_relevant)
    results["num_queries"] = int(counted.sum())
    results["num_queries_excluded"] = int((~counted).sum())
    return results


def _clustering(vectors: torch.Tensor, inputs: _Inputs, split: Split, seed: int, progress: bool) -> dict:
    """NMI and F1 of k-means (K = number of classes) on the rows that take part in the split."""
    wanted = [m for m in inputs.metrics if m in CLUSTERING_METRICS]
    if not wanted:
        return {}
    rows = torch.unique(torch.cat([split.query, split.gallery]))
    if len(rows) == 0:
        raise EvaluationError("query: the masks select no rows")
    labels = inputs.labels[rows.to(inputs.labels.device)].cpu().numpy()
    clusters = kmeans(vectors[rows.to(vectors.device)], len(np.unique(labels)), seed=seed, progress=progress)
    scores = {"nmi": nmi(labels, clusters), "f1": pairwise_f1(labels, clusters)}
    return {metric: scores[metric] for metric in wanted}


def _rows(vectors: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """vectors[rows], without a copy when rows are all the rows in order (leave-one-out)."""
    every_row = len(rows) == len(vectors) and bool((rows == torch.arange(len(rows), device=rows.device)).all())
    return vectors if every_row else vectors[rows]


def _normalized(vectors: torch.Tensor, normalize: bool) -> torch.Tensor:
    return torch.nn.functional.normalize(vectors, dim=1) if normalize else vectors


def _embeddings(values, name: str, device) -> torch.Tensor:
    tensor = _tensor(values, name)
    if tensor.ndim != 2:
        raise EvaluationError(f"{name}: expected a 2-D array (rows × dimensions), got shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise EvaluationError(f"{name}: expected floating-point values, got {_dtype_name(tensor)}")
    if len(tensor) == 0 or tensor.shape[1] == 0:
        raise EvaluationError(f"{name}: no values (shape {tuple(tensor.shape)})")
    tensor = tensor.detach().to(device=device if device is not None else tensor.device, dtype=torch.float32)
    row_max, row_min = tensor.amax(1), tensor.amin(1)  # NaN propagates; ±inf shows in one of them
    bad = (~(torch.isfinite(row_max) & torch.isfinite(row_min))).nonzero().squeeze(1)
    if len(bad):
        raise EvaluationError(
            f"{name}: {len(bad)} row{'s' if len(bad) > 1 else ''} contain{'' if len(bad) > 1 else 's'} "
            f"NaN or inf (first: row {int(bad[0])})"
        )
    return tensor


def _labels(values, name: str, n: int) -> torch.Tensor:
    tensor = _tensor(values, name)
    if tensor.ndim != 1:
        raise EvaluationError(f"{name}: expected a 1-D array of class ids, got shape {tuple(tensor.shape)}")
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise EvaluationError(f"{name}: expected integer class ids, got {_dtype_name(tensor)}")
    if len(tensor) != n:
        raise EvaluationError(f"{name}: {len(tensor)} entries, but the embeddings have {n} rows")
    return tensor.detach().long()


def _mask(values, name: str, n: int) -> torch.Tensor:
    if values is None:
        return torch.ones(n, dtype=torch.bool)
    tensor = _tensor(values, name)
    if tensor.dtype != torch.bool:
        raise EvaluationError(f"{name}: expected a boolean mask over the rows, got {_dtype_name(tensor)}")
    if tuple(tensor.shape) != (n,):
        raise EvaluationError(f"{name}: expected a mask of {n} entries (one per row), got shape {tuple(tensor.shape)}")
    return tensor.detach().cpu()


def _tensor(values, name: str) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values
    if isinstance(values, np.ndarray):
        if values.dtype.kind not in "biuf":
            raise EvaluationError(f"{name}: expected numbers, got numpy dtype {values.dtype}")
        return torch.from_numpy(np.ascontiguousarray(values))
    raise EvaluationError(f"{name}: expected a numpy array or torch tensor, got {type(values).__name__}")


def _dtype_name(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise EvaluationError(f"{path}: no such file")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise EvaluationError(f"{path}: not a readable .npy array ({error})") from None
