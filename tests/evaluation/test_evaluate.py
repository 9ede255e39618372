import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

from unseen.evaluation import METRICS, EvaluationError, evaluate, evaluate_files, evaluate_vehicleid
from unseen.evaluation.protocols import vehicleid_splits

RETRIEVAL = ("recall", "precision@1", "r_precision", "map@r")


def _reference(x, labels, ranking, query=None, gallery=None, recall_at=(1, 2, 4, 8)) -> dict:
    """Every retrieval metric the obvious way: rank the gallery per query, then count."""
    n = len(x)
    query = np.arange(n) if query is None else np.flatnonzero(query)
    gallery = np.arange(n) if gallery is None else np.flatnonzero(gallery)
    position = {row: i for i, row in enumerate(gallery)}
    self_index = [position.get(row, -1) for row in query]
    orders = ranking(x[query], x[gallery], self_index)
    per_query, excluded = [], 0
    for q, order in zip(query, orders, strict=True):
        rel = [labels[gallery[j]] == labels[q] for j in order]
        r = sum(rel)
        if r == 0:
            excluded += 1
            continue
        first = rel.index(True) + 1
        correct, average_precision = 0, 0.0
        for i in range(r):
            if rel[i]:
                correct += 1
                average_precision += correct / (i + 1)
        per_query.append(
            {f"recall@{k}": float(first <= k) for k in recall_at}
            | {"precision@1": float(rel[0]), "r_precision": sum(rel[:r]) / r, "map@r": average_precision / r}
        )
    results = {key: float(np.mean([m[key] for m in per_query])) for key in per_query[0]}
    return results | {"num_queries": len(per_query), "num_queries_excluded": excluded}


def _pml(x, labels, query=None, gallery=None) -> dict:
    calculator = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
        k="max_bin_count",
        device=torch.device("cpu"),
    )
    if query is None:
        out = calculator.get_accuracy(torch.from_numpy(x), torch.from_numpy(labels))
    else:
        out = calculator.get_accuracy(
            torch.from_numpy(x[query]),
            torch.from_numpy(labels[query]),
            torch.from_numpy(x[gallery]),
            torch.from_numpy(labels[gallery]),
        )
    return {"precision@1": out["precision_at_1"], "r_precision": out["r_precision"], "map@r": out[
        "mean_average_precision_at_r"
    ]}


def test_hand_computed_example():
    # Inner products are exact in binary; ties (query 1: rows 0, 3, 4 at 0.5) go to the lower index.
    x = np.array([[1, 0], [0.5, 0.5], [0.75, -0.25], [0.25, 0.75], [0, 1], [-1, 0]], dtype=np.float32)
    labels = np.array([0, 0, 1, 0, 1, 2])  # class 2 is a singleton: excluded and counted
    # first-match ranks 2, 1, 4, 2, 5; R-Precision 1/2, 1, 0, 1/2, 0; MAP@R 1/4, 1, 0, 1/4, 0
    assert evaluate(x, labels, metrics=RETRIEVAL) == {
        "recall@1": 0.2,
        "recall@2": 0.6,
        "recall@4": 0.8,
        "recall@8": 1.0,  # K beyond the 5 retrievable items: everything is retrieved
        "precision@1": 0.2,
        "r_precision": 0.4,
        "map@r": 0.3,
        "num_queries": 5,
        "num_queries_excluded": 1,
    }


def test_leave_one_out_equals_reference_with_ties_duplicates_and_singletons(clustered, ranking):
    x, labels = clustered(50, 8, seed=0, sizes=(1, 7), noise=1.2)
    x[30:45] = x[:15]  # exact duplicates, some across classes
    result = evaluate(x, labels, recall_at=(1, 3, 10, 1000), metrics=RETRIEVAL)
    expected = _reference(x, labels, ranking, recall_at=(1, 3, 10, 1000))
    assert result.keys() == expected.keys()
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-12), key
    assert result["num_queries_excluded"] > 0


def test_query_gallery_equals_reference(clustered, ranking):
    x, labels = clustered(40, 8, seed=1, sizes=(1, 6), noise=1.0)
    rng = np.random.default_rng(0)
    query = rng.random(len(x)) < 0.4
    gallery = ~query | (rng.random(len(x)) < 0.2)  # some rows are both: they never retrieve themselves
    result = evaluate(x, labels, query=query, gallery=gallery, metrics=RETRIEVAL)
    expected = _reference(x, labels, ranking, query, gallery)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-12), key


@pytest.mark.parametrize("structured", [False, True])
def test_agrees_with_pml_leave_one_out(clustered, structured):
    if structured:
        x, labels = clustered(80, 16, seed=2, sizes=(1, 10), noise=0.9)
    else:
        rng = np.random.default_rng(3)
        x = rng.standard_normal((400, 16)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        labels = rng.integers(0, 50, 400)
    ours, theirs = evaluate(x, labels, metrics=RETRIEVAL), _pml(x, labels)
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key


def test_agrees_with_pml_query_gallery(clustered):
    x, labels = clustered(60, 16, seed=4, sizes=(2, 8), noise=0.9)
    query = np.random.default_rng(5).random(len(x)) < 0.5
    ours = evaluate(x, labels, query=query, gallery=~query, metrics=RETRIEVAL)
    for key, value in _pml(x, labels, query, ~query).items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key


def test_nmi_agrees_with_pml_same_faiss_seed(clustered):
    x, labels = clustered(40, 16, seed=13, sizes=(2, 8), noise=0.8)
    calculator = AccuracyCalculator(include=("NMI",), device=torch.device("cpu"))
    theirs = calculator.get_accuracy(torch.from_numpy(x), torch.from_numpy(labels))["NMI"]
    assert evaluate(x, labels, metrics=("nmi",))["nmi"] == pytest.approx(theirs, abs=1e-9)


def test_numpy_and_torch_inputs_give_the_same_result(clustered):
    x, labels = clustered(30, 8, seed=6)
    assert evaluate(x, labels) == evaluate(torch.from_numpy(x), torch.from_numpy(labels))


def test_chunked_evaluation_equals_unchunked(clustered):
    x, labels = clustered(40, 8, seed=7, noise=1.5)
    whole = evaluate(x, labels, metrics=RETRIEVAL, recall_at=(1, 5, 50))
    assert evaluate(x, labels, metrics=RETRIEVAL, recall_at=(1, 5, 50), chunk_size=7) == whole


def test_clustering_is_seeded_and_only_run_when_asked(clustered):
    x, labels = clustered(10, 8, seed=8, sizes=(4, 8), noise=0.4)
    result = evaluate(x, labels, metrics=("nmi", "f1"), clustering_seed=1)
    assert set(result) == {"nmi", "f1"}
    assert result == evaluate(x, labels, metrics=("nmi", "f1"), clustering_seed=1)
    assert 0.5 < result["nmi"] <= 1 and 0 < result["f1"] <= 1
    assert set(evaluate(x, labels, metrics=RETRIEVAL)).isdisjoint({"nmi", "f1"})
    assert set(evaluate(x, labels)) == {"recall@1", "recall@2", "recall@4", "recall@8", *METRICS[1:],
                                        "num_queries", "num_queries_excluded"}


def test_normalize_uses_cosine(clustered):
    x, labels = clustered(30, 8, seed=9)
    scaled = x * np.random.default_rng(0).uniform(0.5, 3, (len(x), 1)).astype(np.float32)
    assert evaluate(scaled, labels, normalize=True, metrics=RETRIEVAL) == evaluate(x, labels, metrics=RETRIEVAL)


def test_progress_bar_runs(clustered, capsys):
    x, labels = clustered(10, 4, seed=10)
    evaluate(x, labels, progress=True)
    assert "k-NN" in capsys.readouterr().err


def test_vehicleid_protocol_is_the_mean_and_std_over_random_galleries(clustered):
    x, labels = clustered(30, 8, seed=11, sizes=(2, 6), noise=1.0)
    result = evaluate_vehicleid(x, labels, repeats=4, seed=3, recall_at=(1, 5))
    runs = []
    for split in vehicleid_splits(labels, repeats=4, seed=3):
        query = np.isin(np.arange(len(x)), split.query.numpy())
        runs.append(evaluate(x, labels, query=query, gallery=~query, recall_at=(1, 5), metrics=RETRIEVAL))
    for key in ("recall@1", "recall@5", "precision@1", "r_precision", "map@r"):
        values = [run[key] for run in runs]
        assert result[key] == pytest.approx(np.mean(values), abs=1e-12)
        assert result[f"{key}_std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
    assert result["repeats"] == 4 and result["num_queries"] == len(x) - 30
    assert result["r_precision"] == result["map@r"] == result["precision@1"]  # one relevant item: R = 1


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda x, y: (np.where(np.arange(len(x))[:, None] % 4 == 1, np.nan, x), y),
         r"^embeddings: 3 rows contain NaN or inf \(first: row 1\)$"),
        (lambda x, y: (x, y[:-1]), r"^labels: 11 entries, but the embeddings have 12 rows$"),
        (lambda x, y: (x, y.astype(np.float64)), r"^labels: expected integer class ids, got float64$"),
        (lambda x, y: (x[:, 0], y), r"^embeddings: expected a 2-D array"),
        (lambda x, y: (x.tolist(), y), r"^embeddings: expected a numpy array or torch tensor, got list$"),
    ],
)
def test_bad_input_raises_one_clear_error(change, message):
    x = np.random.default_rng(0).standard_normal((12, 4)).astype(np.float32)
    x, y = change(x, np.arange(12) % 3)
    with pytest.raises(EvaluationError, match=message):
        evaluate(x, y)


def test_bad_masks_and_requests_raise():
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    y = np.array([0, 0, 1, 1, 2, 2])
    with pytest.raises(EvaluationError, match="^query: the mask selects no rows$"):
        evaluate(x, y, query=np.zeros(6, dtype=bool), gallery=np.ones(6, dtype=bool))
    with pytest.raises(EvaluationError, match="^query: expected a boolean mask over the rows, got int64$"):
        evaluate(x, y, query=np.ones(6, dtype=np.int64))
    with pytest.raises(EvaluationError, match=r"^gallery: expected a mask of 6 entries"):
        evaluate(x, y, gallery=np.ones(5, dtype=bool))
    with pytest.raises(EvaluationError, match="^query: none of the 6 queries has another item of its class"):
        evaluate(x, np.arange(6))
    with pytest.raises(EvaluationError, match="^metrics: unknown metric 'recall@1'; known: recall, "):
        evaluate(x, y, metrics=("recall@1",))
    with pytest.raises(EvaluationError, match="^recall_at: expected positive integers, got 0$"):
        evaluate(x, y, recall_at=(0, 1))
    assert issubclass(EvaluationError, ValueError)


def test_evaluate_files_loads_npy_and_names_the_file(tmp_path, clustered):
    x, labels = clustered(20, 8, seed=12)
    np.save(tmp_path / "E.npy", x)
    np.save(tmp_path / "L.npy", labels)
    query = np.arange(len(x)) % 2 == 0
    np.save(tmp_path / "Q.npy", query)
    np.save(tmp_path / "G.npy", ~query)
    result = evaluate_files(tmp_path / "E.npy", tmp_path / "L.npy", tmp_path / "Q.npy", tmp_path / "G.npy",
                            recall_at=(1, 10), metrics=RETRIEVAL)
    assert result == evaluate(x, labels, query=query, gallery=~query, recall_at=(1, 10), metrics=RETRIEVAL)
    x[4, 1] = np.inf
    np.save(tmp_path / "bad.npy", x)
    with pytest.raises(EvaluationError, match=rf"^{tmp_path / 'bad.npy'}: 1 row contains NaN or inf \(first: row 4\)$"):
        evaluate_files(tmp_path / "bad.npy", tmp_path / "L.npy")
    with pytest.raises(EvaluationError, match=rf"^{tmp_path / 'missing.npy'}: no such file$"):
        evaluate_files(tmp_path / "missing.npy", tmp_path / "L.npy")
    (tmp_path / "junk.npy").write_text("not an array")
    with pytest.raises(EvaluationError, match=rf"^{tmp_path / 'junk.npy'}: not a readable .npy array"):
        evaluate_files(tmp_path / "E.npy", tmp_path / "junk.npy")
    np.save(tmp_path / "short.npy", labels[:-1])
    with pytest.raises(EvaluationError, match=rf"^{tmp_path / 'short.npy'}: {len(x) - 1} entries, but the embeddings"):
        evaluate_files(tmp_path / "E.npy", tmp_path / "short.npy")


def test_a_query_outside_the_gallery_may_retrieve_every_gallery_row():
    """Overlapping masks: row 0 queries a gallery of rows 1, 2 (both its class, R = 2 = the gallery size)
    while rows 1, 2 query each other (R = 1). The search once capped k at gallery - 1 for every query as soon
    as one query was a gallery row, and raised."""
    x = np.array([[1.0], [2.0], [3.0], [0.0]], dtype=np.float32)
    labels = np.array([0, 0, 0, 1])
    gallery = np.array([False, True, True, False])
    found = evaluate(x, labels, query=np.ones(4, dtype=bool), gallery=gallery, recall_at=(1, 2), metrics=RETRIEVAL)
    assert found == {"recall@1": 1.0, "recall@2": 1.0, "precision@1": 1.0, "r_precision": 1.0, "map@r": 1.0,
                     "num_queries": 3, "num_queries_excluded": 1}
