"""The evaluation engine: exact streamed k-NN, retrieval and clustering metrics, evaluation protocols.

`evaluate(embeddings, labels)` is the entry point; `unseen.evaluation.knn.knn` the exact k-NN search.
Formulas and conventions are in docs/metrics.md.
"""

from unseen.evaluation.errors import EvaluationError
from unseen.evaluation.evaluate import METRICS, evaluate, evaluate_files, evaluate_vehicleid

__all__ = ["METRICS", "EvaluationError", "evaluate", "evaluate_files", "evaluate_vehicleid"]
