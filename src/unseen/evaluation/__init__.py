"""The evaluation engine: exact streamed k-NN, retrieval and clustering metrics, evaluation protocols.

`evaluate(embeddings, labels)` is the entry point; `evaluation_notes(labels, query=, gallery=)` states its
edges (trivial or undefined metrics, excluded queries, the tie rule); `unseen.evaluation.knn.knn` the exact
k-NN search. Formulas and conventions are in docs/metrics.md.
"""

from unseen.evaluation.errors import EvaluationError
from unseen.evaluation.evaluate import (
    METRICS,
    evaluate,
    evaluate_files,
    evaluate_vehicleid,
    evaluation_notes,
    evaluation_notes_files,
)

__all__ = [
    "METRICS",
    "EvaluationError",
    "evaluate",
    "evaluate_files",
    "evaluate_vehicleid",
    "evaluation_notes",
    "evaluation_notes_files",
]
