"""Property tests: every retrieval metric of `evaluate` against a plain numpy brute force, on small random
embedding sets with exact ties, duplicate rows, singleton classes and mixed query/gallery masks.

Embeddings are small multiples of a power of two, so every inner product is exact in float64 whatever the
summation order: ties are real ties, and the reference and the engine must order them the same way (by
gallery index). The notes of `evaluation_notes` are checked against the same reference.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unseen.evaluation import EvaluationError, evaluate, evaluation_notes

RETRIEVAL = ("recall", "precision@1", "r_precision", "map@r")
LABEL_IDS = (-3, 0, 1, 2, 7, 100, 2**40)  # raw class ids need not be contiguous or positive


def reference(x: np.ndarray, labels: np.ndarray, query, gallery, recall_at) -> dict | None:
    """Recall@K, P@1, R-Precision, MAP@R the obvious way (None: no query has a positive). Each query ranks the
    gallery by float64 inner product descending, then by lower gallery index, its own row left out by index."""
    n = len(x)
    if query is None and gallery is None:
        query = gallery = np.ones(n, dtype=bool)
    query_rows = np.flatnonzero(np.ones(n, dtype=bool) if query is None else query)
    gallery_rows = np.flatnonzero(np.ones(n, dtype=bool) if gallery is None else gallery)
    scores = x[query_rows].astype(np.float64) @ x[gallery_rows].astype(np.float64).T
    per_query = []
    for i, row in enumerate(query_rows):
        others = np.flatnonzero(gallery_rows != row)
        order = others[np.lexsort((others, -scores[i, others]))]  # similarity descending, then index
        relevant = labels[gallery_rows[order]] == labels[row]
        r = int(relevant.sum())
        if r == 0:
            continue
        first = int(np.argmax(relevant)) + 1
        top = relevant[:r]
        precision = np.cumsum(top) / np.arange(1, r + 1)
        per_query.append(
            {f"recall@{k}": float(first <= k) for k in recall_at}
            | {"precision@1": float(relevant[0]), "r_precision": top.sum() / r, "map@r": (precision * top).sum() / r}
        )
    if not per_query:
        return None
    means = {key: float(np.mean([metrics[key] for metrics in per_query])) for key in per_query[0]}
    return means | {"num_queries": len(per_query), "num_queries_excluded": len(query_rows) - len(per_query)}


@st.composite
def problems(draw):
    """(embeddings, labels, query mask or None, gallery mask or None)."""
    n = draw(st.integers(1, 16))
    dim = draw(st.integers(1, 3))
    limit = draw(st.sampled_from([1, 2, 32]))  # 1, 2: few distinct vectors, many ties and duplicates
    grid = np.array(draw(st.lists(st.integers(-limit, limit), min_size=n * dim, max_size=n * dim)))
    x = (grid.reshape(n, dim) * 2.0 ** draw(st.integers(-6, 3))).astype(np.float32)
    classes = draw(st.lists(st.sampled_from(LABEL_IDS), min_size=1, max_size=5, unique=True))
    labels = np.array(draw(st.lists(st.sampled_from(classes), min_size=n, max_size=n)), dtype=np.int64)
    masks = st.lists(st.booleans(), min_size=n, max_size=n).map(lambda values: np.array(values, dtype=bool))
    mode = draw(st.sampled_from(["leave-one-out", "both", "query only", "gallery only"]))
    query = draw(masks) if mode in ("both", "query only") else None
    gallery = draw(masks) if mode in ("both", "gallery only") else None
    return x, labels, query, gallery


@settings(max_examples=250, deadline=None, derandomize=True, database=None)
@given(
    problem=problems(),
    recall_at=st.lists(st.integers(1, 20), min_size=1, max_size=4),
    metrics=st.lists(st.sampled_from(RETRIEVAL), min_size=1, max_size=4, unique=True),
    chunk_size=st.sampled_from([None, 1, 3]),
)
def test_retrieval_metrics_equal_the_brute_force_reference(problem, recall_at, metrics, chunk_size):
    x, labels, query, gallery = problem
    expected = reference(x, labels, query, gallery, sorted(set(recall_at)))
    notes = evaluation_notes(labels, query=query, gallery=gallery, recall_at=recall_at)
    selected = [np.ones(len(x), dtype=bool) if mask is None else mask for mask in (query, gallery)]
    if not selected[0].any() or not selected[1].any() or expected is None:
        with pytest.raises(EvaluationError, match=r"^query: |^gallery: "):
            evaluate(x, labels, query=query, gallery=gallery, recall_at=recall_at, metrics=metrics,
                     chunk_size=chunk_size)
        assert any("undefined (evaluate raises)" in warning for warning in notes["warnings"])
        return
    found = evaluate(x, labels, query=query, gallery=gallery, recall_at=recall_at, metrics=metrics,
                     chunk_size=chunk_size)
    wanted = {key for key in expected if key.split("@")[0] in metrics or key in metrics or key.startswith("num_")}
    assert set(found) == wanted
    for key in wanted:
        assert found[key] == pytest.approx(expected[key], abs=1e-12), key
    assert notes["queries_without_positive"] == found["num_queries_excluded"]
    assert notes["num_queries"] == found["num_queries"] + found["num_queries_excluded"]
    for warning in notes["warnings"]:
        if "by construction" in warning:  # a trivial Recall@K really is 1.0
            for name in warning.split(":")[0].split(", "):
                assert name not in found or found[name] == 1.0
    if notes["num_classes"] == 1:
        assert all(found[key] == 1.0 for key in found if not key.startswith("num_"))


def test_the_reference_on_a_hand_computed_tie():
    """Query 0 ties with rows 1 (other class) and 2 (its class): the lower index, row 1, comes first."""
    x = np.array([[1.0], [1.0], [1.0], [-1.0]], dtype=np.float32)
    labels = np.array([5, 6, 5, 6])
    expected = reference(x, labels, None, None, [1, 2])
    # query 0: [1 (miss), 2 (hit), 3]; 1: [0, 2 (misses), 3 (hit)]; 2: [0 (hit), ...]; 3: [0, 1 (hit)]
    assert expected == {
        "recall@1": 0.25, "recall@2": 0.75, "precision@1": 0.25, "r_precision": 0.25, "map@r": 0.25,
        "num_queries": 4, "num_queries_excluded": 0,
    }
    assert evaluate(x, labels, recall_at=[1, 2], metrics=RETRIEVAL) == expected
