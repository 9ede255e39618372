"""Exact k-nearest-neighbour search by inner product, streamed over chunks of queries.

Each chunk of queries is scored against the whole gallery and dropped once its candidates are taken, so
memory is O(chunk × gallery), never O(queries × gallery). The chunk's scores come from a fast bfloat16
product whose error is bounded per query; every gallery item whose bounded score could change the answer
is re-scored in float64, and answers are ordered by (float64 similarity descending, gallery index
ascending). The result is identical to a float64 brute-force search, ties included: docs/metrics.md,
"Exactness of the bf16 stage", gives the argument. Same code on CPU and CUDA.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from unseen.evaluation.errors import EvaluationError

_BF16_UNIT_ROUNDOFF = 2.0**-8
_FP32_ULP = 2.0**-23  # per float32 addition; also covers accumulators that truncate (tensor cores)
_SLACK = 2.0**-16  # times |q|·max|g|: covers float64 re-scoring, float32 norms and thresholds, flushed subnormals
_PAIR_BLOCK = 4096  # pairs re-scored per step; on CUDA always this shape, so a pair always gets the same bits
_SHORTLIST = 128  # approximate best items kept per query: first matches found there need no full-row count
_CHUNK_BYTES_CPU = 2**29


@dataclass(frozen=True)
class Neighbours:
    """Exact nearest neighbours of each query, and whether a same-label item is among the first K."""

    similarities: torch.Tensor  # (Q, k) float64, descending; NaN beyond a query's own k
    indices: torch.Tensor  # (Q, k) int64 gallery rows, equal similarities by lower index; -1 beyond own k
    found_within: torch.Tensor | None  # (Q, len(recall_at)) bool: a same-label item among the K nearest


def knn(
    query: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    *,
    exclude_self: bool = False,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k gallery rows of each query by inner product: (similarities float64, indices int64).

    `exclude_self`: query row i is gallery row i and is left out of its own answer *by index*, so an
    identical duplicate of the query is still found. Equal similarities are ordered by lower gallery index.
    """
    if exclude_self and len(query) != len(gallery):
        raise EvaluationError(
            f"exclude_self: query has {len(query)} rows but gallery has {len(gallery)}; they must be the same rows"
        )
    self_index = torch.arange(len(query)) if exclude_self else None
    found = search(query, gallery, k, self_index=self_index, chunk_size=chunk_size, device=device, progress=progress)
    return found.similarities, found.indices


def search(
    query: torch.Tensor,
    gallery: torch.Tensor,
    k: int | torch.Tensor,
    *,
    self_index: torch.Tensor | None = None,
    query_labels: torch.Tensor | None = None,
    gallery_labels: torch.Tensor | None = None,
    recall_at: Sequence[int] = (),
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> Neighbours:
    """Exact top-k of each query and, with labels, whether a same-label item is among its K nearest.

    `k`: one int, or one per query (answers past a query's own k are -1 / NaN). `self_index[i]`: the gallery
    row that *is* query i, left out of its answers and ranks (-1: none). `found_within[i, m]` is exact for
    any K, not only K <= k: the same pass counts the items ranked before the query's best same-label item.
    """
    device = torch.device(device) if device is not None else query.device
    n_query, n_gallery = len(query), len(gallery)
    if n_gallery == 0:
        raise EvaluationError("gallery: no rows")
    self_index = torch.full((n_query,), -1) if self_index is None else self_index
    self_index = self_index.to(device=device, dtype=torch.long)
    ks = torch.as_tensor(k, device=device, dtype=torch.long)
    k_max = int(ks.max()) if ks.numel() else 0
    ks = ks.expand(n_query).contiguous()
    available = n_gallery - (self_index >= 0).long()  # per query: a query that is a gallery row cannot retrieve it
    bad = ((ks < 0) | (ks > available)).nonzero().squeeze(1)
    if len(bad):
        i = int(bad[0])
        raise EvaluationError(
            f"k: expected 0 <= k <= {int(available[i])} (gallery rows query {i} can retrieve), got {int(ks[i])}"
        )
    scorer = _Scorer(gallery, device)
    query = query.to(device=device, dtype=torch.float32)
    if scorer.approx_t.dtype != torch.float32 and _band_too_wide(scorer, query, k_max):
        scorer = _Scorer(gallery, device, torch.float32)
    bound_a = torch.cat([scorer.error_bound(block) for block in query.split(8192)]) if n_query else None
    classes = None
    if query_labels is not None and gallery_labels is not None and len(recall_at):
        classes = _Classes(query_labels.to(device), gallery_labels.to(device), self_index, recall_at)
    list_length = min(n_gallery, max(2 * k_max + 16, _SHORTLIST if classes is not None else 0))
    step = chunk_size or _auto_chunk_size(n_gallery, device)
    parts = []
    with torch.no_grad():
        for start in tqdm(range(0, n_query, step), desc="k-NN", unit="chunk", disable=not progress):
            end = min(start + step, n_query)
            rows = torch.arange(start, end, device=device)
            chunk = _Chunk(scorer, query[start:end], rows, self_index[start:end], bound_a[start:end], list_length)
            sims, idx = chunk.top_k(ks[start:end], k_max)
            found = chunk.found_within(classes, idx) if classes is not None else None
            parts.append((sims, idx, found))
    if not parts:
        empty = torch.empty((0, k_max), device=device)
        found = None if classes is None else torch.empty((0, len(recall_at)), dtype=torch.bool, device=device)
        return Neighbours(empty.double(), empty.long(), found)
    sims, idx, found = (torch.cat(p) if p[0] is not None else None for p in zip(*parts, strict=True))
    return Neighbours(sims, idx, found)


class _Scorer:
    """The gallery on the device, its bf16 copy, the norms the error bound needs, and float64 re-scoring."""

    def __init__(self, gallery: torch.Tensor, device: torch.device, approx_dtype: torch.dtype | None = None):
        self.exact = gallery.to(device=device, dtype=torch.float32).contiguous()
        approx_dtype = approx_dtype or _approx_dtype(device)
        self.approx_t = self.exact.to(approx_dtype).T.contiguous()  # d × N: a few % faster than N × d
        norm, residual, approx_norm = [], [], []
        for block in self.exact.split(8192):
            block_approx = block.to(self.approx_t.dtype)
            norm.append(_norm(block))
            residual.append(_norm(block - block_approx.float()))
            approx_norm.append(_norm(block_approx))
        self.max_norm, self.max_residual = torch.cat(norm).max(), torch.cat(residual).max()
        self.max_approx_norm = torch.cat(approx_norm).max()
        dim = self.exact.shape[1]
        self._buffers = [torch.empty((_PAIR_BLOCK, dim), dtype=t, device=device) for t in (torch.float32,) * 2]
        self._buffers += [torch.empty((_PAIR_BLOCK, dim), dtype=torch.float64, device=device) for _ in range(2)]

    def scores(self, query: torch.Tensor) -> torch.Tensor:
        """Approximate similarities (chunk × gallery): bf16 inputs, float32 accumulation."""
        query_approx = query.to(self.approx_t.dtype)
        if query_approx.is_cuda:
            try:
                return torch.mm(query_approx, self.approx_t, out_dtype=torch.float32)
            except TypeError:  # torch before out_dtype: a bf16 output, whose rounding the bound covers (u)
                pass
        return query_approx @ self.approx_t

    def error_bound(self, query: torch.Tensor) -> torch.Tensor:
        """Per query a with |q·g - fl(q̃·g̃)| <= a for every gallery row g, before any output rounding.

        |q·g - q̃·g̃| <= |q - q̃||g| + |q̃||g - g̃| (inputs rounded to bf16), plus the float32 accumulation
        error γ_d |q̃||g̃| with γ_d = d·2⁻²³ / (1 - d·2⁻²³) (Higham, Accuracy and Stability, §3.1; one ulp per
        addition rather than half, so accumulators that truncate are covered too).
        """
        query_approx = query.to(self.approx_t.dtype)
        d = query.shape[1]
        gamma = d * _FP32_ULP / (1 - d * _FP32_ULP)
        approx_norm = _norm(query_approx)
        bound = _norm(query - query_approx.float()) * self.max_norm + approx_norm * self.max_residual
        bound += gamma * approx_norm * self.max_approx_norm
        return bound + _SLACK * _norm(query) * self.max_norm + 2.0**-100

    def exact_similarity(self, query: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """float64 inner products of the pairs (query[rows], gallery[cols]): float32 products are exact there."""
        q32, g32, q64, g64 = self._buffers
        out = torch.empty(len(rows), dtype=torch.float64, device=query.device)
        for start in range(0, len(rows), _PAIR_BLOCK):
            n = min(_PAIR_BLOCK, len(rows) - start)
            width = _PAIR_BLOCK if query.is_cuda else n  # CUDA reductions depend on shape; CPU ones do not
            torch.index_select(query, 0, rows[start : start + n], out=q32[:n])
            torch.index_select(self.exact, 0, cols[start : start + n], out=g32[:n])
            q64[:width].copy_(q32[:width]).mul_(g64[:width].copy_(g32[:width]))
            out[start : start + n] = q64[:width].sum(1)[:n]
        return out


class _Classes:
    """Labels made contiguous, each class's gallery rows, and the recall cut-offs, for first-match tests."""

    def __init__(
        self, query_labels: torch.Tensor, gallery_labels: torch.Tensor, self_index: torch.Tensor, recall_at
    ):
        _, inverse = torch.unique(torch.cat([query_labels, gallery_labels]), return_inverse=True)
        self.query, self.gallery = inverse[: len(query_labels)], inverse[len(query_labels) :]
        count = torch.bincount(self.gallery, minlength=int(inverse.max()) + 1)
        self.gallery_by_class = torch.argsort(self.gallery, stable=True)
        self.start, self.count = torch.cumsum(count, 0) - count, count
        has_self = self_index >= 0
        self_same = torch.zeros_like(has_self)
        self_same[has_self] = self.gallery[self_index[has_self]] == self.query[has_self]
        self.num_positives = count[self.query] - self_same.long()
        self.recall_at = torch.as_tensor(list(recall_at), dtype=torch.long, device=inverse.device)


class _Chunk:
    """One chunk of queries scored against the whole gallery, with its shortlist and error bounds.

    Exact similarity s and computed score o satisfy |s - o| <= a + u·|o|: a per query (`error_bound`),
    u = 2⁻⁸/(1 - 2⁻⁸) when the score was rounded to a bf16 output (|ŝ - o| <= 2⁻⁸|ŝ|), else 0.
    """

    def __init__(self, scorer, query, rows, self_cols, a, list_length):
        self.scorer, self.query, self.rows, self.self_cols, self.a = scorer, query, rows, self_cols, a
        self.scores = scorer.scores(query)
        has_self = (self_cols >= 0).nonzero().squeeze(1)
        self.scores[has_self, self_cols[has_self]] = float("-inf")
        self.u = _BF16_UNIT_ROUNDOFF / (1 - _BF16_UNIT_ROUNDOFF) if self.scores.dtype == torch.bfloat16 else 0.0
        self.values, self.cols = self.scores.topk(list_length, dim=1)

    def lower(self, o: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Lower bound of the exact similarity of items scored o (rows: chunk-local)."""
        return o - self.a[rows] - self.u * o.abs()

    def score_above(self, s: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Scores o above this have exact similarity > s (the inverse of `lower`), in float32."""
        z = s + self.a[rows]
        return torch.where(z >= 0, z / (1 - self.u), z / (1 + self.u)).float()

    def score_below(self, s: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Scores o below this have exact similarity < s (the inverse of the upper bound), in float32."""
        z = s - self.a[rows]
        return torch.where(z >= 0, z / (1 + self.u), z / (1 - self.u)).float()

    def top_k(self, ks: torch.Tensor, k_max: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-k: items whose upper bound reaches the k-th best lower bound are re-scored in float64."""
        n_rows, device = len(self.scores), self.scores.device
        sims = torch.full((n_rows, k_max), float("nan"), dtype=torch.float64, device=device)
        idx = torch.full((n_rows, k_max), -1, dtype=torch.long, device=device)
        rows = (ks > 0).nonzero().squeeze(1)
        if not len(rows):
            return sims, idx
        kth = self.values[rows, ks[rows] - 1].double()
        threshold = torch.full((n_rows,), float("inf"), device=device)
        threshold[rows] = self.score_below(self.lower(kth, rows), rows)
        within = self.values >= threshold[:, None]
        overflow = within[:, -1] & (self.values.shape[1] < self.scores.shape[1])  # window may pass the list
        within[overflow] = False
        cand_rows, cand_pos = within.nonzero(as_tuple=True)
        cand_cols = self.cols[cand_rows, cand_pos]
        if overflow.any():
            wide = overflow.nonzero().squeeze(1)
            wide_rows, wide_cols = (self.scores[wide] >= threshold[wide, None]).nonzero(as_tuple=True)
            cand_rows, cand_cols = torch.cat([cand_rows, wide[wide_rows]]), torch.cat([cand_cols, wide_cols])
        cand_sims = self.scorer.exact_similarity(self.query, cand_rows, cand_cols)
        order = _rank_order(cand_rows, cand_sims, cand_cols)
        cand_rows, cand_sims, cand_cols = cand_rows[order], cand_sims[order], cand_cols[order]
        count = torch.bincount(cand_rows, minlength=n_rows)
        position = torch.arange(len(cand_rows), device=device) - (torch.cumsum(count, 0) - count)[cand_rows]
        keep = position < ks[cand_rows]
        sims[cand_rows[keep], position[keep]] = cand_sims[keep]
        idx[cand_rows[keep], position[keep]] = cand_cols[keep]
        return sims, idx

    def found_within(self, classes: _Classes, idx: torch.Tensor) -> torch.Tensor:
        """(chunk, len(recall_at)) bool: is the first same-label item among the K nearest, for each cut-off K."""
        query_class = classes.query[self.rows]
        hits = (idx >= 0) & (classes.gallery[idx.clamp(min=0)] == query_class[:, None])
        has_hit = hits.any(1)
        rank = torch.where(has_hit, hits.int().argmax(1) + 1, 0) if idx.shape[1] else torch.zeros_like(query_class)
        found = has_hit[:, None] & (rank[:, None] <= classes.recall_at)
        todo = (~has_hit & (classes.num_positives[self.rows] > 0)).nonzero().squeeze(1)
        if len(todo):
            found[todo] = self._found_beyond_top_k(classes, query_class, todo)
        return found

    def _found_beyond_top_k(self, classes: _Classes, query_class: torch.Tensor, todo: torch.Tensor) -> torch.Tensor:
        """found_within for rows whose top-k holds no same-label item, by counting who ranks before the best one.

        Items whose bounds put them surely above (below) the best same-label item are counted (skipped) from
        their scores; the rest are re-scored in float64, but only in rows where that could change the answer
        for some cut-off. When the shortlist already ends surely below, only the shortlist is counted.
        """
        count = classes.count[query_class[todo]]
        pair_row = torch.repeat_interleave(todo, count)
        first_of_row = torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
        offset = torch.arange(len(pair_row), device=todo.device) - first_of_row
        pair_col = classes.gallery_by_class[torch.repeat_interleave(classes.start[query_class[todo]], count) + offset]
        keep = pair_col != self.self_cols[pair_row]
        pair_row, pair_col = pair_row[keep], pair_col[keep]
        pair_sim = self.scorer.exact_similarity(self.query, pair_row, pair_col)
        order = _rank_order(pair_row, pair_sim, pair_col)
        first = torch.ones_like(order, dtype=torch.bool)
        first[1:] = pair_row[order][1:] != pair_row[order][:-1]
        best_sim, best_col = pair_sim[order][first], pair_col[order][first]  # one per row of `todo`, in order

        in_shortlist = self.values[todo, -1] < self.score_below(best_sim, todo)
        if self.values.shape[1] == self.scores.shape[1]:
            in_shortlist[:] = True
        found = torch.empty((len(todo), len(classes.recall_at)), dtype=torch.bool, device=todo.device)
        for part in (in_shortlist, ~in_shortlist):
            if part.any():
                rows = todo[part]
                shortlisted = part is in_shortlist
                sub, sub_cols = (self.values[rows], self.cols[rows]) if shortlisted else (self.scores[rows], None)
                rank = self._rank(sub, sub_cols, rows, best_sim[part], best_col[part], classes.recall_at)
                found[part] = rank[:, None] <= classes.recall_at
        return found

    def _rank(self, sub, sub_cols, rows, best_sim, best_col, cutoffs) -> torch.Tensor:
        """Rank of the best same-label item, exact wherever it decides a cut-off (rows of `sub`: scores of
        gallery items `sub_cols`, or of every item). The rank lies in [low, high]: `low` counts the items
        surely before, `high` adds those in the band between the bounds (the best item itself is there)."""
        above = self.score_above(best_sim, rows)[:, None].expand_as(sub)
        below = self.score_below(best_sim, rows)[:, None].expand_as(sub)
        surely_before = (sub > above).sum(1, dtype=torch.int32).long()
        low, high = surely_before + 1, (sub >= below).sum(1, dtype=torch.int32).long()
        undecided = ((low[:, None] <= cutoffs) & (cutoffs < high[:, None])).any(1).nonzero().squeeze(1)
        if not len(undecided):
            return high
        band = (sub[undecided] >= below[undecided]) & (sub[undecided] <= above[undecided])
        amb_row, amb_pos = band.nonzero(as_tuple=True)
        amb_col = amb_pos if sub_cols is None else sub_cols[undecided[amb_row], amb_pos]
        keep = amb_col != best_col[undecided][amb_row]
        amb_row, amb_col = amb_row[keep], amb_col[keep]
        row_best_sim, row_best_col = best_sim[undecided][amb_row], best_col[undecided][amb_row]
        amb_sim = self.scorer.exact_similarity(self.query, rows[undecided][amb_row], amb_col)
        before = (amb_sim > row_best_sim) | ((amb_sim == row_best_sim) & (amb_col < row_best_col))
        high[undecided] = low[undecided] + torch.bincount(amb_row[before], minlength=len(undecided))
        return high


def _band_too_wide(scorer: _Scorer, query: torch.Tensor, k: int) -> bool:
    """Whether the bf16 stage would leave too many candidates to re-score (embeddings whose similarities crowd
    within the bf16 error bound, e.g. an untrained model's): then float32 scores, whose bound is ~2¹⁵ times
    tighter, are faster. Decided on a fixed sample of queries; either choice gives the same exact answer."""
    sample = query[torch.linspace(0, len(query) - 1, min(256, len(query)), device=query.device).long()]
    scores = scorer.scores(sample).float()
    a = scorer.error_bound(sample).float()[:, None]
    kth = scores.topk(min(max(k, 1), scores.shape[1]), dim=1).values[:, -1:]
    u = _BF16_UNIT_ROUNDOFF / (1 - _BF16_UNIT_ROUNDOFF)
    band = (scores >= kth - 2 * (a + u * kth.abs())).sum(1).float()
    return bool(band.median() > max(8 * k, 512))


def _rank_order(rows: torch.Tensor, sims: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Permutation sorting pairs by row, then similarity descending, then gallery index ascending."""
    order = torch.argsort(cols, stable=True)
    order = order[torch.argsort(sims[order], descending=True, stable=True)]
    return order[torch.argsort(rows[order], stable=True)]


def _norm(x: torch.Tensor) -> torch.Tensor:
    """Row norms in float32, as float64: their relative error (<= d·2⁻²⁴) is far inside the bound's slack."""
    return torch.linalg.vector_norm(x.float(), dim=1).double()


def _approx_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the hardware multiplies it fast (CUDA, CPUs with AMX or AVX512-BF16), float32 elsewhere."""
    if device.type == "cuda":
        return torch.bfloat16
    if device.type == "cpu":
        checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
        if any(getattr(torch.cpu, name, lambda: False)() for name in checks):
            return torch.bfloat16
    return torch.float32


def _auto_chunk_size(n_gallery: int, device: torch.device) -> int:
    """Query rows per chunk so that the chunk's scores and selection temporaries fit a memory budget."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = free // 4
    else:
        budget = min(_available_memory() // 8, _CHUNK_BYTES_CPU)
    return int(max(1, min(budget // (8 * n_gallery), 16384)))


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 2**30
