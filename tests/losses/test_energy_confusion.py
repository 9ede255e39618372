import pytest
import torch

from unseen.losses.energy_confusion import confusion_energy, different_class_pairs, row_norm_penalty


def pk_labels(p, k):
    return torch.arange(p).repeat_interleave(k)


UNEVEN = torch.tensor([0, 0, 0, 1, 2, 2, 2, 2, 2, 3, 3, 4])


SHUFFLED_UNEVEN = UNEVEN[torch.randperm(12, generator=torch.Generator().manual_seed(0))]


@pytest.mark.parametrize("labels", [pk_labels(6, 2), pk_labels(4, 4), pk_labels(3, 8), SHUFFLED_UNEVEN],
                         ids=["K=2", "K=4", "K=8", "uneven-shuffled"])
@pytest.mark.parametrize("pairs_per_anchor", [1, 3, 10, None])
def test_every_drawn_pair_is_different_class_and_each_anchor_draws_distinct_partners(labels, pairs_per_anchor):
    for seed in range(5):
        anchors, partners = different_class_pairs(labels, pairs_per_anchor, torch.Generator().manual_seed(seed))
        assert torch.all(labels[anchors] != labels[partners])
        for i in range(len(labels)):
            drawn = partners[anchors == i].tolist()
            available = int((labels != labels[i]).sum())
            assert len(drawn) == len(set(drawn)) == min(pairs_per_anchor or available, available)


def test_all_pairs_mode_gives_every_ordered_different_class_pair():
    anchors, partners = different_class_pairs(UNEVEN, None)
    expected = {(i, j) for i in range(12) for j in range(12) if UNEVEN[i] != UNEVEN[j]}
    assert set(zip(anchors.tolist(), partners.tolist(), strict=True)) == expected and len(anchors) == len(expected)


def test_the_draw_is_reproducible_from_the_generator_and_reaches_every_partner():
    labels = pk_labels(5, 2)
    first = different_class_pairs(labels, 2, torch.Generator().manual_seed(3))
    again = different_class_pairs(labels, 2, torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(200):
        anchors, partners = different_class_pairs(labels, 2, generator)
        seen |= set(zip(anchors.tolist(), partners.tolist(), strict=True))
    assert seen == {(i, j) for i in range(10) for j in range(10) if labels[i] != labels[j]}


def test_anchors_without_a_different_class_partner_get_no_pairs():
    anchors, partners = different_class_pairs(torch.zeros(4, dtype=torch.long), 10)
    assert anchors.numel() == partners.numel() == 0
    anchors, partners = different_class_pairs(torch.tensor([7]), None)
    assert anchors.numel() == 0


def test_energy_matches_a_slow_loop_reference():
    generator = torch.Generator().manual_seed(1)
    z = torch.randn(10, 5, generator=generator, dtype=torch.float64) * 3
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 3, 3])
    anchors, partners = different_class_pairs(labels, 4, generator)
    total = 0.0
    for i, j in zip(anchors.tolist(), partners.tolist(), strict=True):
        total += 0.5 * sum((z[i, d].item() - z[j, d].item()) ** 2 for d in range(5))
    assert confusion_energy(z, anchors, partners).item() == pytest.approx(total / len(anchors), abs=1e-6)


def test_penalty_value_and_gradient_match_their_analytic_forms():
    weight = torch.randn(6, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64).requires_grad_()
    strength = 0.5
    expected = 0.0
    for k in range(6):
        norm2 = sum(weight[k, d].item() ** 2 for d in range(4))
        expected += (norm2 - 1) ** 2
    value = row_norm_penalty(weight, strength)
    assert value.item() == pytest.approx(strength / 6 * expected, abs=1e-6)
    value.backward()
    rows = weight.detach()
    analytic = 4 * strength / 6 * (rows.pow(2).sum(dim=1, keepdim=True) - 1) * rows
    torch.testing.assert_close(weight.grad, analytic, rtol=0, atol=1e-12)
