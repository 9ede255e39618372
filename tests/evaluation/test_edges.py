import json

import numpy as np
import pytest
import torch

from unseen.evaluation import EvaluationError, evaluate, evaluation_notes, evaluation_notes_files
from unseen.evaluation.edges import NO_POSITIVE_RULE, SELF_MATCH, TIE_BREAK

UNDEFINED = "every retrieval metric is undefined (evaluate raises)"


def test_notes_of_a_leave_one_out_evaluation_with_a_singleton_class():
    labels = np.array([4, 4, 9, 9, 9, 7])
    notes = evaluation_notes(labels, recall_at=(1, 2, 4, 8))
    assert notes == {
        "protocol": "leave-one-out",
        "num_queries": 6,
        "num_gallery": 6,
        "num_classes": 3,
        "queries_without_positive": 1,
        "queries_without_positive_rule": NO_POSITIVE_RULE,
        "tie_break": TIE_BREAK,
        "self_match": SELF_MATCH,
        "warnings": [
            f"1 of 6 queries have no other gallery item of their class: {NO_POSITIVE_RULE}",
            "recall@8: K is at least the 5 gallery items any query can rank, so each is 1.0 by construction",
        ],
    }
    assert json.loads(json.dumps(notes)) == notes
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    assert evaluate(x, labels, metrics=("recall",))["num_queries_excluded"] == notes["queries_without_positive"]
    assert (TIE_BREAK, NO_POSITIVE_RULE) == (
        "equal similarities are ordered by gallery index (lower first)",
        "excluded from every retrieval metric and counted in num_queries_excluded",
    )


@pytest.mark.parametrize(
    ("labels", "query", "gallery", "protocol", "warnings"),
    [
        # clean query -> gallery: nothing to warn about (a gallery of 5 > the largest K)
        ([0, 0, 1, 1, 0, 1, 0, 1, 1], [1] * 4 + [0] * 5, [0] * 4 + [1] * 5, "query -> gallery", []),
        (
            [3, 3, 3],
            None,
            None,
            "leave-one-out",
            [
                "recall@2, recall@4: K is at least the 2 gallery items any query can rank, so each is 1.0 by "
                "construction",
                "one class: every gallery item is a positive, so every retrieval metric of a counted query is 1.0 "
                "and NMI and F1 are 1.0 by convention",
            ],
        ),
        ([0, 1, 2], None, None, "leave-one-out", [f"none of the 3 queries has another gallery item of its class: "
                                                  f"{UNDEFINED}"]),
        ([0, 1, 0], [1, 1, 1], [0, 0, 0], "query -> gallery", [f"no gallery items: {UNDEFINED}"]),
        ([0, 1, 0], [0, 0, 0], [1, 1, 1], "query -> gallery", [f"no queries: {UNDEFINED}"]),
        (
            [0, 1, 0],
            [1, 1, 0],
            [0, 0, 1],
            "query -> gallery",
            [
                f"1 of 2 queries have no other gallery item of their class: {NO_POSITIVE_RULE}",
                "each query ranks at most 1 gallery item (the gallery has 1): the ranking is trivial, every retrieval "
                "metric only says whether that item has the query's class",
            ],
        ),
        (
            [5, 5],
            None,
            None,
            "leave-one-out",
            [
                "each query ranks at most 1 gallery item (the gallery has 2): the ranking is trivial, every retrieval "
                "metric only says whether that item has the query's class",
                "one class: every gallery item is a positive, so every retrieval metric of a counted query is 1.0 "
                "and NMI and F1 are 1.0 by convention",
            ],
        ),
    ],
)
def test_each_trivial_or_undefined_metric_is_warned(labels, query, gallery, protocol, warnings):
    masks = [None if mask is None else np.array(mask, dtype=bool) for mask in (query, gallery)]
    notes = evaluation_notes(np.array(labels), query=masks[0], gallery=masks[1], recall_at=(1, 2, 4))
    assert (notes["protocol"], notes["warnings"]) == (protocol, warnings)


def test_torch_inputs_and_bad_inputs():
    notes = evaluation_notes(torch.tensor([0, 0, 1]), query=torch.tensor([True, True, False]))
    assert (notes["num_queries"], notes["num_gallery"], notes["queries_without_positive"]) == (2, 3, 0)
    with pytest.raises(EvaluationError, match=r"^labels: expected integer class ids, got float32$"):
        evaluation_notes(np.zeros(3, dtype=np.float32))
    with pytest.raises(EvaluationError, match=r"^query: expected a mask of 3 entries \(one per row\), got shape"):
        evaluation_notes(np.zeros(3, dtype=np.int64), query=np.ones(2, dtype=bool))


def test_notes_from_files_name_the_file(tmp_path):
    np.save(tmp_path / "labels.npy", np.array([0, 0, 1, 1]))
    np.save(tmp_path / "query.npy", np.array([True, False, True, False]))
    np.save(tmp_path / "gallery.npy", np.array([False, True, False, True]))
    notes = evaluation_notes_files(tmp_path / "labels.npy", tmp_path / "query.npy", tmp_path / "gallery.npy")
    assert (notes["protocol"], notes["num_queries"], notes["queries_without_positive"]) == ("query -> gallery", 2, 0)
    np.save(tmp_path / "bad.npy", np.ones(4, dtype=np.int8))
    with pytest.raises(EvaluationError, match=r"bad.npy: expected a boolean mask over the rows, got int8$"):
        evaluation_notes_files(tmp_path / "labels.npy", tmp_path / "bad.npy")
    with pytest.raises(EvaluationError, match=r"missing.npy: no such file$"):
        evaluation_notes_files(tmp_path / "missing.npy")
