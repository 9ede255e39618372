import numpy as np
import pytest
import torch

from unseen.evaluation import EvaluationError
from unseen.evaluation import knn as knn_module
from unseen.evaluation.knn import knn, search


def _random(n, dim, seed, normalize=True, scale=1.0):
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)) * scale
    return torch.nn.functional.normalize(x, dim=1) if normalize else x


@pytest.mark.parametrize("k", [1, 7, 40])
@pytest.mark.parametrize("exclude_self", [True, False])
@pytest.mark.parametrize("normalize", [True, False])
def test_knn_equals_float64_brute_force(ranking, k, exclude_self, normalize):
    x = _random(150, 24, seed=k, normalize=normalize)
    sims, idx = knn(x, x, k, exclude_self=exclude_self)
    expected = [r[:k] for r in ranking(x.numpy(), x.numpy(), np.arange(150) if exclude_self else None)]
    assert torch.equal(idx, torch.tensor(expected))
    exact = (x.double()[:, None, :] * x.double()[idx]).sum(-1)
    torch.testing.assert_close(sims, exact, rtol=0, atol=1e-12)
    assert sims.dtype == torch.float64


def test_query_gallery_without_self(ranking):
    query, gallery = _random(40, 16, seed=1), _random(90, 16, seed=2)
    _, idx = knn(query, gallery, 5)
    assert idx.tolist() == [r[:5] for r in ranking(query.numpy(), gallery.numpy())]


def test_equal_similarities_are_ordered_by_lower_index():
    gallery = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.6, 0.8]])
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    sims, idx = knn(query, gallery, 4)
    assert idx.tolist() == [[1, 3, 4, 0], [0, 2, 4, 1]]
    assert sims[0].tolist() == [1.0, 1.0, pytest.approx(0.6, abs=1e-7), 0.0]


def test_self_is_excluded_by_index_so_a_duplicate_is_still_found():
    x = _random(20, 8, seed=3)
    x[7] = x[3]
    _, idx = knn(x, x, 1, exclude_self=True)
    assert idx[3, 0] == 7 and idx[7, 0] == 3
    assert (idx[:, 0] != torch.arange(20)).all()


@pytest.mark.parametrize("chunk_size", [1, 3, 64])
def test_chunked_result_equals_unchunked(chunk_size):
    x = _random(130, 12, seed=4)
    x[60:90] = x[0:30]  # duplicates make ties
    whole = knn(x, x, 9, exclude_self=True, chunk_size=10_000)
    chunked = knn(x, x, 9, exclude_self=True, chunk_size=chunk_size)
    assert torch.equal(whole[0], chunked[0]) and torch.equal(whole[1], chunked[1])


def test_near_ties_below_bf16_resolution_are_resolved_exactly(ranking):
    # 60 gallery rows that differ by far less than a bf16 ulp: their bf16 scores tie, so the candidate
    # window holds more items than the shortlist and the whole-row path must re-score them.
    base = _random(1, 64, seed=5)
    gallery = base + 1e-6 * _random(60, 64, seed=6, normalize=False)
    gallery = torch.cat([gallery, _random(40, 64, seed=7)])
    query = base + 1e-6 * _random(3, 64, seed=8, normalize=False)
    _, idx = knn(query, gallery, 3)
    assert idx.tolist() == [r[:3] for r in ranking(query.numpy(), gallery.numpy())]


def test_float32_scores_path_is_exact_too(monkeypatch, ranking):
    monkeypatch.setattr(knn_module, "_approx_dtype", lambda device: torch.float32)
    x = _random(80, 16, seed=9)
    x[40:50] = x[:10]
    _, idx = knn(x, x, 6, exclude_self=True)
    assert idx.tolist() == [r[:6] for r in ranking(x.numpy(), x.numpy(), np.arange(80))]


@pytest.mark.parametrize("scale,dim", [(1.0, 32), (1e3, 256), (1e-3, 1024)])
def test_score_error_stays_within_the_stated_bound(scale, dim):
    # |exact - o| <= a + u|o| is what the exactness argument rests on (docs/metrics.md).
    gallery = _random(300, dim, seed=10, normalize=False, scale=scale)
    gallery[::7] *= 50  # uneven norms
    query = _random(50, dim, seed=11, normalize=False, scale=scale)
    scorer = knn_module._Scorer(gallery, torch.device("cpu"))
    scores = scorer.scores(query).double()
    u = knn_module._BF16_UNIT_ROUNDOFF / (1 - knn_module._BF16_UNIT_ROUNDOFF)
    u = u if scorer.approx_t.dtype == torch.bfloat16 else 0.0
    exact = query.double() @ gallery.double().T
    bound = scorer.error_bound(query)[:, None] + u * scores.abs()
    assert ((exact - scores).abs() <= bound).all()


def test_found_within_equals_brute_force_first_match_rank(ranking, clustered):
    x, labels = clustered(60, 8, seed=12, sizes=(1, 6), noise=1.5)
    x[100:120] = x[:20]  # duplicates across classes create exact ties
    n, cutoffs = len(x), [1, 2, 3, 8, 30, 100, 10_000]
    ks = torch.randint(0, 4, (n,), generator=torch.Generator().manual_seed(0))
    found = search(
        torch.from_numpy(x),
        torch.from_numpy(x),
        ks,
        self_index=torch.arange(n),
        query_labels=torch.from_numpy(labels),
        gallery_labels=torch.from_numpy(labels),
        recall_at=cutoffs,
        chunk_size=37,
    )
    for i, order in enumerate(ranking(x, x, np.arange(n))):
        same = [j for j in order if labels[j] == labels[i]]
        rank = order.index(same[0]) + 1 if same else None
        assert found.found_within[i].tolist() == [rank is not None and rank <= c for c in cutoffs]
        assert found.indices[i].tolist() == order[: ks[i]] + [-1] * (3 - int(ks[i]))


def test_k_larger_than_the_gallery_raises():
    x = _random(5, 4, seed=13)
    with pytest.raises(EvaluationError, match="k: expected 0 <= k <= 4"):
        knn(x, x, 5, exclude_self=True)
    sims, idx = knn(x, x, 0)
    assert sims.shape == idx.shape == (5, 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_gives_the_cpu_answer(clustered):
    from unseen.evaluation import evaluate

    x, labels = clustered(400, 64, seed=14, sizes=(1, 8), noise=1.2)
    x[100:150] = x[:50]
    x, labels = torch.from_numpy(x), torch.from_numpy(labels)
    kwargs = dict(self_index=torch.arange(len(x)), query_labels=labels, gallery_labels=labels, recall_at=(1, 4, 50))
    cpu, gpu = search(x, x, 6, **kwargs), search(x.cuda(), x.cuda(), 6, **kwargs)
    assert torch.equal(cpu.indices, gpu.indices.cpu()) and torch.equal(cpu.found_within, gpu.found_within.cpu())
    torch.testing.assert_close(cpu.similarities, gpu.similarities.cpu(), rtol=0, atol=1e-12)
    metrics = ("recall", "precision@1", "r_precision", "map@r", "nmi", "f1")
    assert evaluate(x, labels, metrics=metrics) == evaluate(x, labels, metrics=metrics, device="cuda")
    scorer = knn_module._Scorer(x * 30, torch.device("cuda"))
    scores = scorer.scores(x.cuda())
    assert scores.dtype == torch.float32  # bf16 inputs, float32 output: no output rounding (u = 0)
    exact = (x.double() @ (x.double() * 30).T).cuda()
    assert ((exact - scores.double()).abs() <= scorer.error_bound(x.cuda())[:, None]).all()
