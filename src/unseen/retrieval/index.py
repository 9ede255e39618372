"""A gallery index: the embeddings of a set of images under one checkpoint, searchable by cosine similarity.

    INDEX_DIR/index.json          what the index is: kind and parameters, counts, recall@10 of an approximate kind
                                  against exact search, the model reference (run, checkpoint, its sha256
                                  fingerprint, the model spec = the eval transform) and the current file names
              index.G.faiss       the faiss index (flat inner product; IVF or HNSW for large galleries)
              manifest.G.csv      row,path,label: row i of the index is that image
              vectors.G.npy       the N×D float32 unit vectors (exact re-scoring, search by id, rebuilding)
              skipped.csv         path,reason of every image that could not be decoded (never fatal)
              partial/            while a build or an add runs: its plan and the embedded chunks so far

A build embeds the images in chunks and writes each chunk to `partial/` as soon as it is done, so an interrupted
build, run again, continues where it stopped. Each build or add writes a new generation G of the three data files
and then `index.json`, which names them (an atomic rename): a crash leaves the previous generation intact.

Search asks faiss for a few more candidates than wanted and re-scores them exactly (float64 inner products of the
stored vectors), ordered by (similarity descending, row ascending): the evaluation engine's rule, so an exact
index answers as `unseen.evaluation.knn` does.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from unseen.artifact import Embedder
from unseen.files import atomic_write, write_json_atomic, write_text_atomic
from unseen.retrieval.errors import IndexMismatchError, RetrievalError
from unseen.retrieval.sources import Item

FORMAT = "unseen-index/1"
KINDS = ("flat", "ivf", "hnsw")
CHUNK_SIZE = 2048  # images embedded and written to partial/ at a time
RERANK_MARGIN = 8  # candidates asked of faiss beyond k, re-scored exactly
RECALL_SAMPLE = 1000  # gallery vectors used as queries to measure an approximate index's recall@10
HNSW_NEIGHBOURS = 32
HNSW_EF_CONSTRUCTION = 80


@dataclass(frozen=True)
class BuildReport:
    """What a build or an add did: the index after it, the images added, skipped (path, reason), already indexed,
    embedded before an interruption, and listed now but absent from the interrupted plan that was resumed."""

    index: GalleryIndex
    added: int
    skipped: tuple[tuple[str, str], ...]
    already_indexed: int = 0
    resumed: int = 0
    not_in_plan: int = 0
    seconds: float = 0.0


class GalleryIndex:
    """The vectors, the faiss index over them and the manifest of one gallery, with its index.json record."""

    def __init__(self, info: dict[str, Any], faiss_index: Any, vectors: np.ndarray, items: Sequence[Item],
                 directory: Path | None = None) -> None:
        self.info = info
        self.faiss_index = faiss_index
        self.vectors = vectors
        self.paths = tuple(item.path for item in items)
        self.labels = tuple(item.label for item in items)
        self.directory = directory

    @property
    def count(self) -> int:
        return len(self.paths)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def kind(self) -> str:
        return str(self.info["kind"])

    @property
    def model(self) -> dict[str, Any]:
        return self.info["model"]

    def search(self, queries: np.ndarray, k: int, *, exclude: Sequence[int] | np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(Q×k float64 cosine similarities, Q×k int64 rows) of the k nearest gallery rows of each query, by
        (similarity descending, row ascending); `exclude[i]` is a row left out of query i's answer (by row, never
        by similarity). Past the gallery's size: similarity NaN, row -1."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise RetrievalError(f"queries: expected Q×{self.dim} vectors, got shape {tuple(queries.shape)}")
        if k < 1:
            raise RetrievalError(f"k: expected a positive integer, got {k}")
        excluded = None if exclude is None else np.asarray(exclude, dtype=np.int64).reshape(-1)
        wanted = min(k + RERANK_MARGIN + (excluded is not None), self.count)
        similarities = np.full((len(queries), k), np.nan)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        if not len(queries) or not wanted:
            return similarities, rows
        for start in range(0, len(queries), 1024):
            block = queries[start : start + 1024]
            _, candidates = self.faiss_index.search(block, wanted)
            valid = candidates >= 0
            if excluded is not None:
                valid &= candidates != excluded[start : start + 1024, None]
            safe = np.where(valid, candidates, 0)
            scores = np.einsum("qkd,qd->qk", np.asarray(self.vectors[safe.reshape(-1)], dtype=np.float64)
                               .reshape(*safe.shape, self.dim), block.astype(np.float64))
            scores[~valid] = -np.inf
            order = np.lexsort((np.where(valid, candidates, np.iinfo(np.int64).max), -scores), axis=-1)[:, :k]
            taken = np.take_along_axis(scores, order, axis=1)
            found = np.isfinite(taken)
            width = taken.shape[1]
            similarities[start : start + len(block), :width] = np.where(found, taken, np.nan)
            rows[start : start + len(block), :width] = np.where(found, np.take_along_axis(candidates, order, 1), -1)
        return similarities, rows

    def extended(self, vectors: np.ndarray, items: Sequence[Item]) -> GalleryIndex:
        """This index with `vectors` of `items` appended (rows count on from the last one)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.faiss_index.add(vectors)
        merged = np.concatenate([np.asarray(self.vectors), vectors])
        old = [Item(path, label) for path, label in zip(self.paths, self.labels, strict=True)]
        return GalleryIndex(dict(self.info), self.faiss_index, merged, [*old, *items], self.directory)

    def save(self, directory: str | Path) -> GalleryIndex:
        """Write a new generation of the data files, then index.json naming them; drop older generations."""
        import faiss

        directory = Path(directory)
        previous = _read_info(directory) if (directory / "index.json").is_file() else {}
        generation = int(previous.get("generation", 0)) + 1
        files = {"index": f"index.{generation}.faiss", "manifest": f"manifest.{generation}.csv",
                 "vectors": f"vectors.{generation}.npy"}
        with atomic_write(directory / files["index"]) as file:
            file.write(faiss.serialize_index(self.faiss_index).tobytes())
        with atomic_write(directory / files["vectors"]) as file:
            np.save(file, np.asarray(self.vectors, dtype=np.float32))
        manifest = _manifest_text(self.paths, self.labels)
        write_text_atomic(directory / files["manifest"], manifest)
        info = {**self.info, "format": FORMAT, "generation": generation, "files": files, "count": self.count,
                "dim": self.dim, "manifest_sha256": hashlib.sha256(manifest.encode()).hexdigest(),
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_json_atomic(directory / "index.json", info)
        for pattern in ("index.*.faiss", "manifest.*.csv", "vectors.*.npy"):
            for stale in directory.glob(pattern):
                if stale.name not in files.values():
                    stale.unlink(missing_ok=True)
        self.info, self.directory = info, directory
        return self

    @classmethod
    def load(cls, directory: str | Path) -> GalleryIndex:
        """Read an index folder; files that disagree with each other or with index.json are refused."""
        import faiss

        directory = Path(directory)
        info = _read_info(directory)
        paths = {key: directory / name for key, name in info["files"].items()}
        for key, path in paths.items():
            if not path.is_file():
                raise IndexMismatchError(f"{path}: missing, but {directory / 'index.json'} names it as the {key} "
                                         "file; the index is incomplete (build it again)")
        manifest_bytes = paths["manifest"].read_bytes()
        if hashlib.sha256(manifest_bytes).hexdigest() != info.get("manifest_sha256"):
            raise IndexMismatchError(f"{paths['manifest']}: changed since the index was written (its sha256 is not "
                                     f"the one in index.json); restore it or build the index again")
        items = _parse_manifest(manifest_bytes.decode("utf-8"), paths["manifest"])
        try:
            faiss_index = faiss.read_index(str(paths["index"]))
        except RuntimeError as error:
            raise RetrievalError(f"{paths['index']}: not a readable faiss index ({str(error).splitlines()[0]})") \
                from None
        try:
            vectors = np.load(paths["vectors"], mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as error:
            raise RetrievalError(f"{paths['vectors']}: not a readable .npy file ({error})") from None
        counts = {paths["manifest"].name: len(items), paths["index"].name: int(faiss_index.ntotal),
                  paths["vectors"].name: int(vectors.shape[0]), "index.json": int(info["count"])}
        if len(set(counts.values())) != 1:
            shown = ", ".join(f"{name}: {count}" for name, count in counts.items())
            raise IndexMismatchError(f"{directory}: the index files disagree on the number of images ({shown}); "
                                     "they are not one index (build it again)")
        if vectors.ndim != 2 or vectors.shape[1] != faiss_index.d or faiss_index.d != info["dim"]:
            raise IndexMismatchError(f"{directory}: vectors of shape {tuple(vectors.shape)}, a faiss index of "
                                     f"dimension {faiss_index.d} and index.json dim {info['dim']} disagree")
        _set_search_parameters(faiss_index, info)
        return cls(info, faiss_index, vectors, items, directory)


def build_index(embedder: Embedder, items: Sequence[Item], out: str | Path, *, kind: str = "flat",
                nlist: int | None = None, nprobe: int | None = None, ef_search: int | None = None,
                source: str = "", batch_size: int = 256, chunk_size: int = CHUNK_SIZE, num_workers: int = 0,
                progress: bool = False, log: Callable[[str], None] = print) -> BuildReport:
    """Embed `items` with `embedder` and write an index of `kind` to `out`, continuing an interrupted build
    there. For IVF and HNSW, recall@10 against exact search is measured on a sample and recorded."""
    started = time.perf_counter()
    out = Path(out)
    if kind not in KINDS:
        raise RetrievalError(f"--kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    if (out / "index.json").exists():
        raise RetrievalError(f"{out}: already holds an index; add images with `unseen index add {out} IMAGES`, "
                             "or choose another --out")
    embedded = _embed_resumable(embedder, items, out / "partial", {"action": "build", "source": source, "kind": kind},
                                batch_size=batch_size, chunk_size=chunk_size, num_workers=num_workers,
                                progress=progress, log=log)
    _append_skipped(out, embedded.failed)
    if not embedded.items:
        raise RetrievalError(f"{source or out}: none of the {len(embedded.failed)} images could be read "
                             f"(listed in {out / 'skipped.csv'})")
    faiss_index, parameters = new_faiss_index(kind, embedded.vectors, nlist=nlist, nprobe=nprobe,
                                              ef_search=ef_search)
    info = {"format": FORMAT, "kind": kind, "parameters": parameters, "model": model_reference(embedder),
            "source": source, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    index = GalleryIndex(info, faiss_index, embedded.vectors, embedded.items)
    if kind != "flat":
        info["recall@10"] = recall_against_exact(index)
    index.save(out)
    shutil.rmtree(out / "partial", ignore_errors=True)
    return BuildReport(index, len(embedded.items), embedded.failed, resumed=embedded.resumed,
                       not_in_plan=embedded.not_in_plan, seconds=time.perf_counter() - started)


def add_to_index(index_dir: str | Path, embedder: Embedder, items: Sequence[Item], *, source: str = "",
                 batch_size: int = 256, chunk_size: int = CHUNK_SIZE, num_workers: int = 0, progress: bool = False,
                 log: Callable[[str], None] = print) -> BuildReport:
    """Embed the images of `items` that are not in the index yet and append them (resumable like a build)."""
    started = time.perf_counter()
    index_dir = Path(index_dir)
    index = GalleryIndex.load(index_dir)
    check_model(index, embedder)
    finished = _read_plan(index_dir / "partial" / "plan.json")
    if finished is not None and finished["task"]["action"] == "build":  # the build was stopped after publishing
        shutil.rmtree(index_dir / "partial")
    known = set(index.paths)
    new = [item for item in items if item.path not in known]
    already = len(items) - len(new)
    if not new and not (index_dir / "partial").exists():
        return BuildReport(index, 0, (), already_indexed=already, seconds=time.perf_counter() - started)
    embedded = _embed_resumable(embedder, new, index_dir / "partial", {"action": "add", "source": source},
                                batch_size=batch_size, chunk_size=chunk_size, num_workers=num_workers,
                                progress=progress, log=log)
    _append_skipped(index_dir, embedded.failed)
    fresh = [(i, item) for i, item in enumerate(embedded.items) if item.path not in known]
    if fresh:
        rows = [i for i, _ in fresh]
        index = index.extended(embedded.vectors[rows], [item for _, item in fresh]).save(index_dir)
    shutil.rmtree(index_dir / "partial", ignore_errors=True)
    return BuildReport(index, len(fresh), embedded.failed, already_indexed=already, resumed=embedded.resumed,
                       not_in_plan=embedded.not_in_plan, seconds=time.perf_counter() - started)


def model_reference(embedder: Embedder) -> dict[str, Any]:
    """What index.json records of the network: the run, the checkpoint file and its sha256, the spec (which fixes
    the eval transform) and the transform itself, as text."""
    checkpoint = embedder.checkpoint.resolve() if embedder.checkpoint is not None else None
    run = checkpoint.parent.parent if checkpoint is not None and checkpoint.parent.name == "checkpoints" else None
    return {"run": None if run is None else str(run), "checkpoint": None if checkpoint is None else str(checkpoint),
            "fingerprint": embedder.fingerprint, "commit": embedder.commit, "step": embedder.step,
            "spec": embedder.spec.to_dict(), "transform": " ".join(repr(embedder.transform).split())}


def check_model(index: GalleryIndex, embedder: Embedder) -> None:
    """Refuse an embedder whose checkpoint is not the one the gallery was embedded with."""
    recorded = index.model
    if embedder.fingerprint != recorded["fingerprint"]:
        where = index.directory / "index.json" if index.directory else "index"
        raise IndexMismatchError(
            f"{where}: the gallery was embedded with checkpoint {recorded['checkpoint']} (sha256 "
            f"{recorded['fingerprint'][:12]}), not with {embedder.checkpoint} (sha256 {embedder.fingerprint[:12]}); "
            "vectors of two networks are not comparable: build a new index with this checkpoint")


def load_recorded_model(index: GalleryIndex, run: str | Path | None = None) -> Embedder:
    """The embedder of the checkpoint the index records (or of `run`, for a moved run folder), checked by sha256."""
    import unseen

    recorded = index.model
    target = run if run is not None else recorded["checkpoint"]
    if target is None or (run is None and not Path(target).is_file()):
        raise RetrievalError(f"{index.directory}: its checkpoint {target} is not there (moved?); pass --run RUN_DIR")
    embedder = unseen.load(target, which=Path(recorded["checkpoint"] or "best.pt").stem)
    check_model(index, embedder)
    return embedder


def new_faiss_index(kind: str, vectors: np.ndarray, *, nlist: int | None = None, nprobe: int | None = None,
                    ef_search: int | None = None) -> tuple[Any, dict[str, int]]:
    """A faiss inner-product index of `kind` holding `vectors`, and the parameters it was built with.

    IVF: `nlist` cells (default 4·√N, at most N/39 so that each cell trains on 39+ points), searched `nprobe` at a
    time (default nlist/16). HNSW: 32 links per node, efConstruction 80, efSearch `ef_search` (default 64)."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    if kind == "flat":
        index, parameters = faiss.IndexFlatIP(dim), {}
    elif kind == "ivf":
        nlist = nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
        if not 1 <= nlist <= n:
            raise RetrievalError(f"--nlist: expected 1 to {n} (the number of images), got {nlist}")
        index = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).permutation(n)[: 256 * nlist]
        index.cp.min_points_per_centroid = 1  # small galleries: no warning; faiss still samples 256 per cell
        index.train(vectors[np.sort(sample)])
        parameters = {"nlist": nlist, "nprobe": min(nlist, nprobe or max(1, nlist // 16))}  # nprobe capped at nlist
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        parameters = {"M": HNSW_NEIGHBOURS, "ef_construction": HNSW_EF_CONSTRUCTION, "ef_search": ef_search or 64}
    else:
        raise RetrievalError(f"--kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    index.add(vectors)
    _set_search_parameters(index, {"kind": kind, "parameters": parameters})
    return index, parameters


def _set_search_parameters(index: Any, info: dict[str, Any]) -> None:
    parameters = info.get("parameters", {})
    if info["kind"] == "ivf":
        index.nprobe = int(parameters["nprobe"])
    elif info["kind"] == "hnsw":
        index.hnsw.efSearch = int(parameters["ef_search"])


def recall_against_exact(index: GalleryIndex, *, k: int = 10, sample: int = RECALL_SAMPLE, seed: int = 0) -> float:
    """Mean |approximate top-k ∩ exact top-k| / k over up to `sample` gallery vectors used as queries."""
    import faiss

    rows = np.sort(np.random.default_rng(seed).permutation(index.count)[:sample])
    vectors = np.ascontiguousarray(index.vectors, dtype=np.float32)
    queries = vectors[rows]
    k = min(k, index.count)
    _, exact = faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
    _, approximate = index.search(queries, k)
    overlap = [len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approximate, exact, strict=True)]
    return float(np.mean(overlap) / k)


@dataclass(frozen=True)
class _Embedded:
    vectors: np.ndarray
    items: list[Item]
    failed: tuple[tuple[str, str], ...]
    resumed: int
    not_in_plan: int


def _embed_resumable(embedder: Embedder, items: Sequence[Item], partial: Path, task: dict[str, Any], *,
                     batch_size: int, chunk_size: int, num_workers: int, progress: bool,
                     log: Callable[[str], None]) -> _Embedded:
    """Embed `items` chunk by chunk, each chunk saved to `partial/` when done; an interrupted run with the same
    task and checkpoint is continued from its own plan (the image list it started with)."""
    plan_path = partial / "plan.json"
    plan = {"task": task, "fingerprint": embedder.fingerprint, "chunk_size": chunk_size,
            "items": [[item.path, item.label] for item in items]}
    not_in_plan = 0
    old = _read_plan(plan_path)
    if old is not None:
        if old["fingerprint"] != embedder.fingerprint:
            raise IndexMismatchError(f"{partial}: an interrupted {old['task']['action']} with another checkpoint "
                                     f"(sha256 {old['fingerprint'][:12]}); remove {partial} to start over")
        if old["task"] != task:
            raise RetrievalError(f"{partial}: an interrupted `index {old['task']['action']}` of "
                                 f"{old['task']['source']} (kind {old['task'].get('kind', '-')}); run that again "
                                 f"to finish it, or remove {partial}")
        planned = {path for path, _ in old["items"]}
        not_in_plan = sum(item.path not in planned for item in items)
        plan = old
    else:
        shutil.rmtree(partial, ignore_errors=True)  # chunks without a whole plan cannot be trusted
        write_json_atomic(plan_path, plan)
    planned_items = [Item(path, label) for path, label in plan["items"]]
    size = int(plan["chunk_size"])
    vectors, kept, failed, resumed = [], [], [], 0
    chunks = range(0, len(planned_items), size)
    bar = tqdm(total=len(planned_items), desc="embed", unit="img", disable=not progress)
    for number, start in enumerate(chunks):
        path = partial / f"chunk-{number:06d}.npz"
        chunk = planned_items[start : start + size]
        if path.is_file():
            saved = _read_chunk(path)
            resumed += len(chunk)
        else:
            result = embedder.embed_files([item.path for item in chunk], batch_size=batch_size, progress=False,
                                          num_workers=num_workers)
            position = {p: i for i, p in reversed(list(enumerate(item.path for item in chunk)))}
            saved = {"vectors": result.vectors.astype(np.float32).reshape(-1, embedder.embedding_dim),
                     "kept": np.array([start + position[p] for p in result.paths], dtype=np.int64),
                     "failed": np.array([start + position[p] for p, _ in result.failed], dtype=np.int64),
                     "reasons": np.array([reason for _, reason in result.failed], dtype=str)}
            with atomic_write(path) as file:
                buffer = io.BytesIO()
                np.savez(buffer, **saved)
                file.write(buffer.getvalue())
        vectors.append(saved["vectors"])
        kept += saved["kept"].tolist()
        failed += [(planned_items[i].path, str(r)) for i, r in zip(saved["failed"].tolist(), saved["reasons"],
                                                                    strict=True)]
        bar.update(len(chunk))
    bar.close()
    if resumed:
        log(f"resumed: {resumed} of {len(planned_items)} images were embedded before the interruption")
    if not_in_plan:
        log(f"{not_in_plan} images listed now are not in the interrupted plan; add them with `unseen index add`")
    stacked = np.concatenate(vectors) if vectors else np.zeros((0, embedder.embedding_dim), dtype=np.float32)
    return _Embedded(stacked, [planned_items[i] for i in kept], tuple(failed), resumed, not_in_plan)


def _read_plan(path: Path) -> dict[str, Any] | None:
    """The plan of an interrupted build or add, or None (none there, or cut short before it was whole)."""
    try:
        plan = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return plan if isinstance(plan, dict) and {"task", "fingerprint", "chunk_size", "items"} <= set(plan) else None


def _read_chunk(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in ("vectors", "kept", "failed", "reasons")}
    except (OSError, ValueError, KeyError) as error:
        raise RetrievalError(f"{path}: unreadable chunk of an interrupted build ({error}); remove it and run the "
                             "command again") from None


def _append_skipped(directory: Path, failed: Sequence[tuple[str, str]]) -> None:
    """Add `failed` (path, reason) to directory/skipped.csv, which lists every image ever skipped, once."""
    if not failed:
        return
    path = directory / "skipped.csv"
    listed = dict(list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))[1:]) if path.is_file() else {}
    listed.update(failed)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([("path", "reason"), *listed.items()])
    write_text_atomic(path, buffer.getvalue())


def _manifest_text(paths: Sequence[str], labels: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["row", "path", "label"])
    writer.writerows([row, path, label] for row, (path, label) in enumerate(zip(paths, labels, strict=True)))
    return buffer.getvalue()


def _parse_manifest(text: str, path: Path) -> list[Item]:
    reader = csv.reader(io.StringIO(text))
    if next(reader, None) != ["row", "path", "label"]:
        raise IndexMismatchError(f"{path}: line 1: expected the header 'row,path,label'")
    items = []
    for fields in reader:
        if len(fields) != 3 or fields[0] != str(len(items)):
            raise IndexMismatchError(f"{path}: line {reader.line_num}: expected row {len(items)},path,label")
        items.append(Item(fields[1], fields[2]))
    return items


def _read_info(directory: Path) -> dict[str, Any]:
    path = directory / "index.json"
    if not path.is_file():
        raise RetrievalError(f"{directory}: not an unseen index (no index.json); build one with "
                             f"`unseen index build RUN_DIR IMAGES --out {directory}`")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise RetrievalError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise RetrievalError(f"{path}: not an index of this version of unseen (expected format {FORMAT!r})")
    missing = [key for key in ("kind", "files", "count", "dim", "model") if key not in info]
    if missing:
        raise RetrievalError(f"{path}: missing the field {missing[0]!r}")
    return info
