"""The energy-confusion term of ECAML (Chen & Deng, AAAI 2019) and the row-norm penalty that keeps it honest.

Pure functions on tensors; `unseen.methods.ecaml` wires them to the embedder's metric layer. Pair drawing,
energy and penalty follow the authors' Caffe code (`energy_confusion.cpp`, `inner_product_layer.cu`), with the
pairs restricted to different classes explicitly so that any P×K layout works (see docs/methods.md).
"""

from __future__ import annotations

import torch


def different_class_pairs(
    labels: torch.Tensor, pairs_per_anchor: int | None, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor and partner indices: for every anchor, `pairs_per_anchor` distinct partners drawn uniformly without
    replacement among the indices of other classes (all of them when fewer, or when `pairs_per_anchor` is None).

    Anchors without a different-class partner (a one-class batch) get none. Drawn on the CPU with `generator`.
    """
    labels = labels.detach().cpu()
    n = len(labels)
    different = labels[:, None] != labels[None, :]
    count = n - 1 if pairs_per_anchor is None else min(pairs_per_anchor, n - 1)
    if count <= 0:
        empty = torch.empty(0, dtype=torch.long)
        return empty, empty
    # A random key per (anchor, candidate); same-class candidates get keys above every real one, so the
    # `count` smallest keys are a uniform draw without replacement among the different-class candidates.
    keys = torch.rand(n, n, generator=generator).masked_fill(~different, 2.0)
    partners = keys.topk(count, dim=1, largest=False).indices
    valid = different.gather(1, partners)
    anchors = torch.arange(n)[:, None].expand_as(partners)
    return anchors[valid], partners[valid]


def confusion_energy(embeddings: torch.Tensor, anchors: torch.Tensor, partners: torch.Tensor) -> torch.Tensor:
    """E = mean over the pairs (i, j) of ½‖z_i − z_j‖², on un-normalized embeddings z (ECAML's energy)."""
    difference = embeddings[anchors] - embeddings[partners]
    return 0.5 * difference.pow(2).sum(dim=1).mean()


def row_norm_penalty(weight: torch.Tensor, strength: float) -> torch.Tensor:
    """R(W) = (λ/D_out)·Σ_k (‖w_k‖² − 1)² over the rows w_k of the D_out×D_in metric weight W; its gradient
    4λ/D_out·(‖w_k‖² − 1)·w_k is what ECAML's Caffe layer adds, so that W cannot shrink E by shrinking."""
    return strength / weight.shape[0] * (weight.pow(2).sum(dim=1) - 1).pow(2).sum()
