"""The edges of an evaluation: what its labels and query/gallery split make trivial or undefined, and the
conventions that decide the rest (queries without a positive, exact ties, the query's own row).

Pure functions of the labels and the split — no embeddings — so the notes can be given even when the
metrics cannot be computed. `evaluate` counts positives with the same `positives`, so the number of
excluded queries stated here is the `num_queries_excluded` of the metrics. docs/metrics.md, "Edges".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from unseen.evaluation.protocols import Split

NO_POSITIVE_RULE = "excluded from every retrieval metric and counted in num_queries_excluded"
TIE_BREAK = "equal similarities are ordered by gallery index (lower first)"
SELF_MATCH = "a query's own row is left out of its ranking by index, never by distance"


def positives(labels: torch.Tensor, split: Split) -> torch.Tensor:
    """R per query: the gallery items of its class other than the query itself (R = 0: nothing to find)."""
    device = labels.device
    query, gallery, self_index = (t.to(device) for t in (split.query, split.gallery, split.self_index))
    query_labels, gallery_labels = labels[query], labels[gallery]
    classes, inverse = torch.unique(torch.cat([query_labels, gallery_labels]), return_inverse=True)
    per_class = torch.bincount(inverse[len(query) :], minlength=len(classes))
    return per_class[inverse[: len(query)]] - (self_index >= 0).long()  # the query's own row: same class


def edge_notes(labels: torch.Tensor, split: Split, recall_at: Sequence[int] = ()) -> dict[str, object]:
    """JSON-able notes on an evaluation of `labels` under `split`: sizes, the queries without a positive and
    how they count, the tie and self-match rules, and a warning for each metric that is trivial or undefined:
    no queries or no gallery; no query with a positive; one class; at most one gallery item per query;
    Recall@K with K at least the gallery items any query can rank (1.0 by construction)."""
    num_queries, num_gallery = len(split.query), len(split.gallery)
    rows = torch.unique(torch.cat([split.query, split.gallery])).to(labels.device)
    num_classes = len(torch.unique(labels[rows]))
    relevant = positives(labels, split)
    without = int((relevant <= 0).sum())
    in_gallery = bool((split.self_index >= 0).all())  # every query is a gallery item too
    same_rows = in_gallery and num_queries == num_gallery
    rankable = num_gallery - int(in_gallery and num_queries > 0)  # the most gallery items one query ranks
    warnings = []
    if num_queries == 0 or num_gallery == 0:
        empty = "queries" if num_queries == 0 else "gallery items"
        warnings.append(f"no {empty}: every retrieval metric is undefined (evaluate raises)")
    elif without == num_queries:
        warnings.append(
            f"none of the {num_queries} queries has another gallery item of its class: every retrieval metric "
            "is undefined (evaluate raises)"
        )
    else:
        if without:
            warnings.append(
                f"{without} of {num_queries} queries have no other gallery item of their class: {NO_POSITIVE_RULE}"
            )
        if rankable < 2:
            warnings.append(
                f"each query ranks at most {rankable} gallery item (the gallery has {num_gallery}): the ranking is "
                "trivial, every retrieval metric only says whether that item has the query's class"
            )
        trivial = [k for k in sorted(set(recall_at)) if k >= rankable]
        if trivial and rankable >= 2:
            names = ", ".join(f"recall@{k}" for k in trivial)
            warnings.append(
                f"{names}: K is at least the {rankable} gallery items any query can rank, so each is 1.0 by "
                "construction"
            )
    if num_classes == 1:
        warnings.append(
            "one class: every gallery item is a positive, so every retrieval metric of a counted query is 1.0 and "
            "NMI and F1 are 1.0 by convention"
        )
    return {
        "protocol": "leave-one-out" if same_rows else "query -> gallery",
        "num_queries": num_queries,
        "num_gallery": num_gallery,
        "num_classes": num_classes,
        "queries_without_positive": without,
        "queries_without_positive_rule": NO_POSITIVE_RULE,
        "tie_break": TIE_BREAK,
        "self_match": SELF_MATCH,
        "warnings": warnings,
    }
