"""Searching a gallery index with query images or with one of its own rows: what `unseen search` and the server do.

A `Searcher` holds one model and one index and is safe to share between threads: the network embeds under a lock
(one forward pass at a time), and faiss searches, which only read the index, run concurrently.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from unseen.artifact import Embedder, image_files
from unseen.retrieval.errors import RetrievalError
from unseen.retrieval.index import GalleryIndex, load_recorded_model


@dataclass(frozen=True)
class Hit:
    """One gallery image found for a query: its rank (1 = nearest), row in the index, path, label, cosine."""

    rank: int
    row: int
    path: str
    label: str
    similarity: float


@dataclass(frozen=True)
class QueryResult:
    """The hits of one query (a file path, an upload name or `row N`)."""

    query: str
    hits: tuple[Hit, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "hits": [asdict(hit) for hit in self.hits]}


class Searcher:
    """A gallery index and the network its gallery was embedded with (checked by checkpoint sha256). The index must
    not be extended while a Searcher serves it."""

    def __init__(self, index: GalleryIndex, embedder: Embedder | None) -> None:
        self.index = index
        self.embedder = embedder
        self._model_lock = threading.Lock()

    @classmethod
    def open(cls, index_dir: str | Path, *, run: str | Path | None = None) -> Searcher:
        """The index in `index_dir` with the checkpoint it records (or `run`'s, when the run folder moved)."""
        index = GalleryIndex.load(index_dir)
        return cls(index, load_recorded_model(index, run))

    def search_vectors(self, vectors: np.ndarray, k: int, *, names: Sequence[str] | None = None,
                       exclude: Sequence[int] | None = None) -> list[QueryResult]:
        """The k nearest gallery images of each query vector."""
        similarities, rows = self.index.search(vectors, k, exclude=exclude)
        names = names or [f"query {i}" for i in range(len(vectors))]
        return [QueryResult(name, self._hits(s, r)) for name, s, r in zip(names, similarities, rows, strict=True)]

    def search_images(self, images: Sequence[Image.Image], k: int, names: Sequence[str] | None = None
                      ) -> list[QueryResult]:
        """The k nearest gallery images of decoded query images (any mode: converted as the network expects)."""
        mode = "L" if self._embedder().spec.in_chans == 1 else "RGB"
        with self._model_lock:
            vectors = self._embedder().embed([image.convert(mode) for image in images], progress=False)
        return self.search_vectors(vectors, k, names=names)

    def search_files(self, queries: Sequence[str | Path], k: int) -> tuple[list[QueryResult], list[tuple[str, str]]]:
        """(results, skipped (path, reason)) for query files and folders (every image under a folder)."""
        files = [f for q in queries for f in (image_files(q) if Path(q).is_dir() else [str(q)])]
        if not files:
            raise RetrievalError(f"{' '.join(map(str, queries))}: no query images")
        missing = [f for f in files if not Path(f).is_file()]
        if missing:
            raise RetrievalError(f"{missing[0]}: no such query image")
        with self._model_lock:
            embedded = self._embedder().embed_files(files, progress=False)
        if not embedded.paths:
            raise RetrievalError(f"none of the {len(files)} query images could be read ({embedded.failed[0][0]}: "
                                 f"{embedded.failed[0][1]})")
        return self.search_vectors(embedded.vectors, k, names=embedded.paths), list(embedded.failed)

    def search_row(self, row: int, k: int, *, include_self: bool = False) -> QueryResult:
        """The k nearest gallery images of gallery row `row` (itself left out by row unless `include_self`)."""
        if not 0 <= row < self.index.count:
            raise RetrievalError(f"row {row}: the index holds rows 0 to {self.index.count - 1}")
        vector = np.asarray(self.index.vectors[row : row + 1], dtype=np.float32)
        return self.search_vectors(vector, k, names=[f"row {row}"], exclude=None if include_self else [row])[0]

    def _embedder(self) -> Embedder:
        if self.embedder is None:
            raise RetrievalError("this searcher has no model: it can only search by row")
        return self.embedder

    def _hits(self, similarities: np.ndarray, rows: np.ndarray) -> tuple[Hit, ...]:
        index = self.index
        return tuple(Hit(rank, int(row), index.paths[row], index.labels[row], float(similarity))
                     for rank, (similarity, row) in enumerate(zip(similarities, rows, strict=True), start=1)
                     if row >= 0)


def format_table(results: Sequence[QueryResult]) -> str:
    """The results as a text table per query: rank, cosine similarity, label, path."""
    lines = []
    for result in results:
        lines.append(f"query: {result.query}")
        lines.append(f"  {'rank':>4}  {'cosine':>8}  {'label':<20}  path")
        lines += [f"  {hit.rank:>4}  {hit.similarity:8.4f}  {hit.label or '-':<20}  {hit.path}" for hit in result.hits]
    return "\n".join(lines)


def format_json_lines(results: Sequence[QueryResult]) -> str:
    """One JSON object per query: {"query", "hits": [{"rank", "row", "path", "label", "similarity"}, ...]}."""
    return "\n".join(json.dumps(result.to_dict()) for result in results)
