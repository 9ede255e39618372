import pytest
import torch

from unseen.models.attention import AttentionPool


def trained_pool(attention="spatial", normalization="softmax", channels=6, seed=0):
    """A pool whose score is no longer zero (as after some training), in float64."""
    torch.manual_seed(seed)
    pool = AttentionPool(channels, attention, normalization).double()
    with torch.no_grad():
        pool.score.weight.normal_(0, 2.0)
        pool.score.bias.fill_(0.3)
    return pool


def maps(batch=3, channels=6, height=5, width=4, seed=1):
    return torch.randn(batch, channels, height, width, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


@pytest.mark.parametrize("attention", ["spatial", "spatial+channel"])
@pytest.mark.parametrize("normalization", ["softmax", "sigmoid"])
def test_weights_are_non_negative_and_sum_to_one_per_map(attention, normalization):
    x = maps() * 30  # large scores: the sigmoid normalization must not underflow
    _, weights = trained_pool(attention, normalization).attend(x)
    assert weights.shape == (3, 5, 4)
    assert (weights >= 0).all()
    assert torch.allclose(weights.sum(dim=(1, 2)), torch.ones(3, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("normalization", ["softmax", "sigmoid"])
def test_attended_pooling_matches_a_slow_reference(normalization):
    pool, x = trained_pool(normalization=normalization), maps()
    w, b = pool.score.weight.view(-1), pool.score.bias.item()
    expected = torch.zeros(3, 6, dtype=torch.float64)
    for n in range(3):
        positions = [(i, j) for i in range(5) for j in range(4)]
        scores = [float(w @ x[n, :, i, j]) + b for i, j in positions]
        if normalization == "softmax":
            raw = [torch.tensor(s).exp() for s in scores]
        else:
            raw = [torch.tensor(s).sigmoid() for s in scores]
        total = sum(raw)
        for (i, j), r in zip(positions, raw, strict=True):
            expected[n] += r / total * x[n, :, i, j]
    assert torch.allclose(pool(x), expected, atol=1e-10)


def test_channel_attention_gates_each_channel_before_the_spatial_weights():
    pool, x = trained_pool("spatial+channel"), maps()
    gates = pool.channel.gates(x)
    assert gates.shape == (3, 6) and ((gates > 0) & (gates < 1)).all()
    attended, weights = pool.attend(x)
    assert torch.allclose(attended, x * gates[:, :, None, None])
    assert torch.allclose(pool(x), (attended * weights[:, None]).sum(dim=(2, 3)))


def test_a_new_pool_is_the_global_average_and_learns():
    x = maps().float().requires_grad_()
    pool = AttentionPool(6)
    _, weights = pool.attend(x)
    assert torch.allclose(weights, torch.full_like(weights, 1 / 20))
    assert torch.allclose(pool(x), x.mean(dim=(2, 3)), atol=1e-6)
    (pool(x) ** 2).sum().backward()
    assert torch.count_nonzero(pool.score.weight.grad) > 0


def test_no_attention_is_exactly_the_global_average_without_parameters():
    pool, x = AttentionPool(6, "none"), maps()
    assert torch.equal(pool(x), x.mean(dim=(2, 3))) and not list(pool.parameters())


def test_unknown_modes_are_refused():
    with pytest.raises(ValueError, match="attention: expected none, spatial or spatial\\+channel"):
        AttentionPool(4, "channel")
    with pytest.raises(ValueError, match="normalization: expected softmax or sigmoid"):
        AttentionPool(4, "spatial", "sparsemax")
