import pytest
import torch

from unseen.evaluation.metrics import map_at_r, precision_at_1, r_precision, recall_at_k


def _reference(hits: list[list[bool]], num_relevant: list[int]) -> dict[str, float]:
    """Each metric computed the obvious way, one query at a time."""
    p1, rp, mapr = [], [], []
    for row, r in zip(hits, num_relevant, strict=True):
        p1.append(1.0 if row[0] else 0.0)
        rp.append(sum(row[:r]) / r)
        correct, total = 0, 0.0
        for i in range(r):
            if row[i]:
                correct += 1
                total += correct / (i + 1)
        mapr.append(total / r)
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    return {"precision@1": mean(p1), "r_precision": mean(rp), "map@r": mean(mapr)}


def test_hand_computed_values():
    # query 0: R=3, hits at positions 1 and 3 -> RP 2/3, MAP@R (1/1 + 2/3)/3 = 5/9
    # query 1: R=1, miss at 1 (a hit at 2 is past R) -> RP 0, MAP@R 0
    hits = torch.tensor([[True, False, True, False], [False, True, False, False]])
    num_relevant = torch.tensor([3, 1])
    assert precision_at_1(hits) == 0.5
    assert r_precision(hits, num_relevant) == pytest.approx((2 / 3 + 0) / 2, abs=1e-15)
    assert map_at_r(hits, num_relevant) == pytest.approx((5 / 9 + 0) / 2, abs=1e-15)
    assert recall_at_k(hits[:, :2].any(1)) == 1.0
    assert recall_at_k(hits[:, :1].any(1)) == 0.5


def test_metrics_equal_a_loop_reference():
    generator = torch.Generator().manual_seed(0)
    hits = torch.rand(300, 12, generator=generator) < 0.4
    num_relevant = torch.randint(1, 13, (300,), generator=generator)
    expected = _reference(hits.tolist(), num_relevant.tolist())
    assert precision_at_1(hits) == pytest.approx(expected["precision@1"], abs=1e-12)
    assert r_precision(hits, num_relevant) == pytest.approx(expected["r_precision"], abs=1e-12)
    assert map_at_r(hits, num_relevant) == pytest.approx(expected["map@r"], abs=1e-12)


def test_too_few_columns_for_r_is_refused():
    with pytest.raises(ValueError, match="R = 3"):
        map_at_r(torch.ones(2, 2, dtype=torch.bool), torch.tensor([1, 3]))
