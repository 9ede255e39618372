"""The auxiliary ("shared") task of MIC and Sharing Matters: its surrogate labels, its batches and its triplets.

- MIC (Roth et al., ICCV 2019): surrogate labels are clusters of class-normalized early-layer features
  (`subtract_class_means`, then k-means); a batch is P groups of K images, each group from one surrogate cluster,
  with label noise (`surrogate_batches`).
- Sharing Matters (Milbich et al., TPAMI 2020): no clustering; a batch is P groups of K random images
  (`random_group_batches`); each anchor's positive is a member of its group (in general of another class) and its
  negative is drawn by distance-weighted sampling in the shared space, never from its group nor its true class
  (`shared_feature_triplets`).
"""

from __future__ import annotations

import numpy as np
import torch

NEGATIVE_CUTOFF = 0.5  # distances below it count as 0.5 in the sampling weights (Wu et al. 2017; both codes)


def subtract_class_means(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """x_i − mean{x_j : y_j = y_i}: the class information MIC removes before its first clustering (`mean` mode)."""
    features = np.asarray(features, dtype=np.float64)
    classes, inverse = np.unique(labels, return_inverse=True)
    sums = np.zeros((len(classes), features.shape[1]))
    np.add.at(sums, inverse, features)
    means = sums / np.bincount(inverse, minlength=len(classes))[:, None]
    return (features - means[inverse]).astype(np.float32)


def random_group_batches(
    num_rows: int, groups: int, group_size: int, num_batches: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """`num_batches` batches of `groups` × `group_size` table rows taken in order from shuffles of all rows
    (a new shuffle when one is used up); rows [g·K, (g+1)·K) of a batch form group g."""
    size = groups * group_size
    shuffles = -(-num_batches * size // num_rows)
    order = np.concatenate([rng.permutation(num_rows) for _ in range(shuffles)]) if shuffles else np.zeros(0, int)
    return list(order[: num_batches * size].reshape(num_batches, size))


def surrogate_batches(
    assignment: np.ndarray, groups: int, group_size: int, num_batches: int, noise: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """`num_batches` batches of `groups` groups of `group_size` rows, each group from one surrogate cluster.

    A group's cluster differs from those of the two groups before it (MIC's loader). Its first image is a member of
    the cluster (so `group_labels` can read the label back from the rows) and so are the others, drawn without
    replacement (with repeats from a cluster smaller than the group), except that each of them is, with probability
    noise·K/(K−1), replaced by a member of a random other cluster while it keeps the group's label: MIC's label
    noise (`random_cluster_p`), at the same expected rate over the whole group.
    """
    clusters, inverse = np.unique(assignment, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    members = np.split(order, np.cumsum(np.bincount(inverse))[:-1])
    swap = min(1.0, noise * group_size / (group_size - 1)) if len(clusters) > 1 else 0.0
    recent: list[int] = []
    batches = []
    for _ in range(num_batches):
        rows = []
        for _ in range(groups):
            allowed = np.setdiff1d(np.arange(len(clusters)), recent) if len(clusters) > 2 else np.arange(len(clusters))
            c = int(rng.choice(allowed))
            recent = [*recent[-1:], c]
            own = members[c]
            group = (rng.choice(own, size=group_size, replace=False) if len(own) >= group_size
                     else np.concatenate([rng.permutation(own), rng.choice(own, size=group_size - len(own))]))
            for i in np.flatnonzero(rng.random(group_size - 1) < swap) + 1:
                other = int(rng.choice(len(clusters) - 1))
                group[i] = rng.choice(members[other + (other >= c)])
            rows.append(group)
        batches.append(np.concatenate(rows))
    return batches


def group_labels(assignment: np.ndarray, rows: np.ndarray, group_size: int) -> np.ndarray:
    """The surrogate label of each image of a `surrogate_batches` batch: the cluster of its group's first image."""
    return np.repeat(assignment[rows[::group_size]], group_size)


def negative_probabilities(embeddings: torch.Tensor, groups: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """B×B: row a is the distribution of a's negative, distance-weighted (Wu et al. 2017) over the allowed ones.

    p(n | a) ∝ q(d_an)⁻¹ with q(d) ∝ d^(D−2) (1 − d²/4)^((D−3)/2) the density of distances between random points of
    the unit sphere in D dimensions, d clipped below at 0.5; 0 for n in a's group or of a's true class (Sharing
    Matters' `distanceweightedsampling_noise`). A row without allowed negatives is all zero. No gradient; float64,
    with autocast off.
    """
    with torch.autocast(embeddings.device.type, enabled=False):
        x = embeddings.detach().double()
        dim = x.shape[1]
        distances = torch.cdist(x, x).clamp(min=NEGATIVE_CUTOFF)
        log_weights = -(dim - 2) * distances.log() - (dim - 3) / 2 * (1 - distances.pow(2) / 4).clamp(min=1e-12).log()
        allowed = (groups[:, None] != groups[None, :]) & (classes[:, None] != classes[None, :])
        log_weights = log_weights.masked_fill(~allowed.to(x.device), -torch.inf)
        top = log_weights.max(dim=1, keepdim=True).values.clamp(min=-1e300)  # finite also for rows without negatives
        weights = (log_weights - top).exp()
        total = weights.sum(dim=1, keepdim=True)
        return weights / torch.where(total > 0, total, 1.0)


def shared_feature_triplets(
    embeddings: torch.Tensor, groups: torch.Tensor, classes: torch.Tensor, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sharing Matters' triplets as a PML indices tuple (anchors, positives, negatives): one per anchor, the positive
    a random other member of its group, the negative drawn from `negative_probabilities`. Anchors without a group
    mate or without an allowed negative are left out."""
    probabilities = negative_probabilities(embeddings, groups, classes).cpu().numpy()
    group = groups.cpu().numpy()
    anchors, positives, negatives = [], [], []
    for a in range(len(group)):
        mates = np.flatnonzero(group == group[a])
        mates = mates[mates != a]
        if len(mates) == 0 or probabilities[a].sum() == 0:
            continue
        anchors.append(a)
        positives.append(int(rng.choice(mates)))
        negatives.append(int(rng.choice(len(group), p=probabilities[a])))
    device = embeddings.device
    return tuple(torch.tensor(v, dtype=torch.long, device=device) for v in (anchors, positives, negatives))
