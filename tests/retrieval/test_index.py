"""The gallery index: build from a folder or a manifest, skip unreadable images, resume, append, refuse mismatches."""

import csv
import json
import shutil

import numpy as np
import pytest

import unseen
from unseen.retrieval.errors import IndexMismatchError, RetrievalError
from unseen.retrieval.index import GalleryIndex, add_to_index, build_index, new_faiss_index, recall_against_exact
from unseen.retrieval.sources import list_items
from unseen.train.checkpoint import load_checkpoint, save_checkpoint


def quiet(_: str) -> None:
    pass


def test_a_folder_builds_an_exact_index_with_its_manifest_model_and_skipped_files(tmp_path, embedder, gallery):
    report = build_index(embedder, list_items(gallery), tmp_path / "index", source=str(gallery), log=quiet)
    index = GalleryIndex.load(tmp_path / "index")
    assert index.count == report.added == 24 and index.dim == 8 and index.kind == "flat"
    assert sorted(set(index.labels)) == ["g00", "g01", "g02", "g03"]
    skipped = {row["path"].rsplit("/", 1)[-1] for row in csv.DictReader(open(tmp_path / "index" / "skipped.csv"))}
    assert skipped == {"text.png", "cut.jpg"} and len(report.skipped) == 2
    model = json.loads((tmp_path / "index" / "index.json").read_text())["model"]
    assert model["fingerprint"] == embedder.fingerprint and model["spec"] == embedder.spec.to_dict()
    assert model["checkpoint"].endswith("checkpoints/best.pt") and "Resize" in model["transform"]
    expected = embedder.embed([p for p in index.paths])
    assert np.allclose(index.vectors, expected, atol=1e-6)
    similarities, rows = index.search(np.asarray(index.vectors), 3)
    assert (rows[:, 0] == np.arange(24)).all() and np.allclose(similarities[:, 0], 1.0, atol=1e-5)
    assert not (tmp_path / "index" / "partial").exists()
    with pytest.raises(RetrievalError, match="already holds an index; add images with `unseen index add"):
        build_index(embedder, list_items(gallery), tmp_path / "index", log=quiet)


def test_a_csv_manifest_gives_labels_and_a_missing_file_is_skipped(tmp_path, embedder, gallery):
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,label\ngallery/g00/0.png,zero\ngallery/g02/1.png,two\ngallery/g03/nothere.png,x\n")
    report = build_index(embedder, list_items(manifest), tmp_path / "index", log=quiet)
    assert report.index.labels == ("zero", "two") and report.index.paths[0] == str(gallery / "g00" / "0.png")
    assert [path.rsplit("/", 1)[-1] for path, _ in report.skipped] == ["nothere.png"]
    (tmp_path / "bad.csv").write_text("file,label\na.png,1\n")
    with pytest.raises(unseen.errors.DatasetError, match=r"bad\.csv: line 1: expected a header with a 'path' column"):
        list_items(tmp_path / "bad.csv")


def test_an_interrupted_build_continues_where_it_stopped(tmp_path, embedder, gallery, monkeypatch):
    items = list_items(gallery)
    calls, crashed = [], []
    real = embedder.embed_files

    def crash_on_third_chunk(paths, **kwargs):
        calls.append(len(paths))
        if len(calls) == 3 and not crashed:
            crashed.append(True)
            raise KeyboardInterrupt
        return real(paths, **kwargs)

    monkeypatch.setattr(embedder, "embed_files", crash_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        build_index(embedder, items, tmp_path / "index", chunk_size=5, source="g", log=quiet)
    assert sorted(p.name for p in (tmp_path / "index" / "partial").iterdir()) == [
        "chunk-000000.npz", "chunk-000001.npz", "plan.json"]
    calls.clear()
    messages = []
    report = build_index(embedder, items, tmp_path / "index", chunk_size=5, source="g", log=messages.append)
    assert calls == [5, 5, 5, 1] and report.resumed == 10  # 26 files: chunks 3 to 6 only
    assert messages == ["resumed: 10 of 26 images were embedded before the interruption"]
    monkeypatch.undo()
    whole = build_index(embedder, items, tmp_path / "whole", source="g", log=quiet).index
    assert report.index.paths == whole.paths and np.allclose(report.index.vectors, whole.vectors, atol=1e-6)


def test_an_interrupted_build_of_other_images_is_not_mixed_in(tmp_path, embedder, gallery):
    partial = tmp_path / "index" / "partial"
    partial.mkdir(parents=True)
    (partial / "plan.json").write_text(json.dumps({"task": {"action": "build", "source": "other", "kind": "flat"},
                                                   "fingerprint": embedder.fingerprint, "chunk_size": 5,
                                                   "items": []}))
    with pytest.raises(RetrievalError, match=r"an interrupted `index build` of other .*or remove"):
        build_index(embedder, list_items(gallery), tmp_path / "index", source="g", log=quiet)


def test_add_appends_only_new_images_as_a_new_generation(tmp_path, embedder, gallery):
    items = list_items(gallery)
    first = [item for item in items if "/g00/" in item.path or "/g01/" in item.path]
    build_index(embedder, first, tmp_path / "index", log=quiet)
    report = add_to_index(tmp_path / "index", embedder, items, log=quiet)
    assert report.added == 12 and report.already_indexed == 12 and report.index.count == 24
    assert len(report.skipped) == 2  # the unreadable files are not "indexed": they are tried again
    index = GalleryIndex.load(tmp_path / "index")
    assert index.info["generation"] == 2 and sorted(p.name for p in (tmp_path / "index").iterdir()) == [
        "index.2.faiss", "index.json", "manifest.2.csv", "skipped.csv", "vectors.2.npy"]
    assert index.paths[:12] == tuple(item.path for item in first if not item.path.endswith(("text.png", "cut.jpg")))
    _, rows = index.search(np.asarray(index.vectors), 1)
    assert (rows[:, 0] == np.arange(24)).all()
    again = add_to_index(tmp_path / "index", embedder, items, log=quiet)
    assert again.added == 0 and again.already_indexed == 24
    assert len((tmp_path / "index" / "skipped.csv").read_text().splitlines()) == 3  # each file listed once
    assert GalleryIndex.load(tmp_path / "index").count == 24


def test_files_that_disagree_are_refused(tmp_path, embedder, gallery):
    folder = tmp_path / "index"
    build_index(embedder, list_items(gallery), folder, log=quiet)
    manifest = folder / "manifest.1.csv"
    original = manifest.read_text()
    manifest.write_text(original.replace("g00", "gXX"))
    with pytest.raises(IndexMismatchError, match=r"manifest\.1\.csv: changed since the index was written"):
        GalleryIndex.load(folder)
    manifest.write_text(original)
    np.save(folder / "vectors.1.npy", np.zeros((5, 8), dtype=np.float32))
    with pytest.raises(IndexMismatchError, match=r"disagree on the number of images \(manifest\.1\.csv: 24, "
                                                 r"index\.1\.faiss: 24, vectors\.1\.npy: 5, index\.json: 24\)"):
        GalleryIndex.load(folder)
    (folder / "vectors.1.npy").unlink()
    with pytest.raises(IndexMismatchError, match=r"vectors\.1\.npy: missing"):
        GalleryIndex.load(folder)
    with pytest.raises(RetrievalError, match=r"not an unseen index \(no index\.json\)"):
        GalleryIndex.load(tmp_path)


def test_a_gallery_embedded_with_another_checkpoint_is_refused(tmp_path, tiny_run, embedder, gallery):
    build_index(embedder, list_items(gallery), tmp_path / "index", log=quiet)
    other = tmp_path / "other-run"
    shutil.copytree(tiny_run, other)
    state = load_checkpoint(other / "checkpoints" / "best.pt")
    name = next(iter(state["model"]))
    state["model"][name] = state["model"][name] + 0.01
    save_checkpoint(state, other / "checkpoints" / "best.pt")
    with pytest.raises(IndexMismatchError, match=r"embedded with checkpoint .*best\.pt \(sha256 [0-9a-f]{12}\), not "
                                                 r"with .*other-run/checkpoints/best\.pt"):
        add_to_index(tmp_path / "index", unseen.load(other), list_items(gallery), log=quiet)
    from unseen.retrieval.search import Searcher

    with pytest.raises(IndexMismatchError, match="vectors of two networks are not comparable"):
        Searcher.open(tmp_path / "index", run=other)
    assert Searcher.open(tmp_path / "index").index.count == 24


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_kinds_record_recall_and_answer_like_exact_on_a_small_gallery(tmp_path, embedder, gallery, kind):
    report = build_index(embedder, list_items(gallery), tmp_path / kind, kind=kind, log=quiet)
    exact = build_index(embedder, list_items(gallery), tmp_path / "flat", log=quiet).index
    assert report.index.info["recall@10"] == pytest.approx(1.0)
    loaded = GalleryIndex.load(tmp_path / kind)
    assert loaded.kind == kind and loaded.info["parameters"]
    queries = np.asarray(exact.vectors[:5])
    assert np.array_equal(loaded.search(queries, 5)[1], exact.search(queries, 5)[1])


def synthetic(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def in_memory(vectors: np.ndarray, kind: str = "flat", **parameters) -> GalleryIndex:
    from unseen.retrieval.sources import Item

    faiss_index, params = new_faiss_index(kind, vectors, **parameters)
    items = [Item(f"/g/{i}.png", str(i % 7)) for i in range(len(vectors))]
    return GalleryIndex({"kind": kind, "parameters": params, "model": {}}, faiss_index, vectors, items)


def test_search_is_exact_brute_force_with_ties_by_row_and_exclusion_by_row():
    vectors = synthetic(300, 16)
    vectors[7] = vectors[3]  # an exact duplicate: a tie, and a self-match that exclusion must not drop
    index = in_memory(vectors)
    queries = np.concatenate([vectors[[3, 50]], synthetic(4, 16, seed=1)])
    similarities, rows = index.search(queries, 6, exclude=[3, 50, -1, -1, -1, -1])
    for q, (found, scores) in enumerate(zip(rows, similarities, strict=True)):
        exact = vectors.astype(np.float64) @ queries[q].astype(np.float64)
        if q < 2:
            exact[[3, 50][q]] = -np.inf
        expected = np.lexsort((np.arange(300), -exact))[:6]
        assert found.tolist() == expected.tolist()
        assert np.allclose(scores, exact[expected], atol=1e-12)
    assert rows[0, 0] == 7  # the duplicate of the excluded query is still found
    similarities, rows = in_memory(vectors[:3]).search(vectors[:1], 5)
    assert rows[0].tolist()[3:] == [-1, -1] and np.isnan(similarities[0, 3:]).all()


def test_hnsw_and_ivf_recall_against_exact_on_a_larger_gallery():
    vectors = synthetic(4000, 16)
    assert recall_against_exact(in_memory(vectors, "hnsw")) > 0.9
    assert 0.3 < recall_against_exact(in_memory(vectors, "ivf", nprobe=4)) <= recall_against_exact(
        in_memory(vectors, "ivf", nprobe=10**6)) == pytest.approx(1.0)
