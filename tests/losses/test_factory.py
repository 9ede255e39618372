import pytest
import torch
import torch.nn.functional as F

from unseen.errors import ConfigError
from unseen.losses import LOSSES, MINERS, build_loss, build_miner


def pk_batch(p=4, k=4, dim=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    embeddings = F.normalize(torch.randn(p * k, dim, generator=generator), dim=1).requires_grad_()
    return embeddings, torch.arange(p).repeat_interleave(k)


# Hyper-parameters some losses require, with no default to fall back on.
REQUIRED = {"RankedListLoss": {"margin": 0.4, "Tn": 10}}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_registered_loss_runs_forward_and_backward_on_a_pk_batch(name):
    embeddings, labels = pk_batch()
    loss = build_loss(name, REQUIRED.get(name, {}), num_classes=4, embedding_dim=16)
    value = loss(embeddings, labels)
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    assert embeddings.grad is not None


@pytest.mark.parametrize("name", sorted(MINERS))
def test_every_registered_miner_mines_a_pk_batch(name):
    embeddings, labels = pk_batch()
    tuples = build_miner(name, {})(embeddings, labels)
    if len(tuples) == 3:  # (anchor, positive, negative)
        anchors, positives, negatives = tuples
        assert len(anchors) == len(positives) == len(negatives)
        assert torch.all(labels[anchors] == labels[positives]) and torch.all(labels[anchors] != labels[negatives])
    else:  # (anchor, positive, anchor, negative) pairs
        a1, p, a2, n = tuples
        assert len(a1) == len(p) and len(a2) == len(n)
        assert torch.all(labels[a1] == labels[p]) and torch.all(labels[a2] != labels[n])


def test_keyword_arguments_and_named_objects_reach_the_loss():
    loss = build_loss("ContrastiveLoss", {"pos_margin": 0.1, "distance": "CosineSimilarity"},
                      num_classes=2, embedding_dim=8)
    assert loss.pos_margin == 0.1 and type(loss.distance).__name__ == "CosineSimilarity"
    proxies = build_loss("ProxyAnchorLoss", {}, num_classes=7, embedding_dim=8)
    assert tuple(proxies.proxies.shape) == (7, 8)


def test_margin_loss_value_matches_a_slow_reference():
    embeddings, labels = pk_batch(p=3, k=2, dim=4, seed=1)
    loss = build_loss("MarginLoss", {"margin": 0.2, "beta": 1.2}, num_classes=3, embedding_dim=4)
    terms = []
    n = len(labels)
    for a in range(n):
        for p in range(n):
            for q in range(n):
                if a != p and labels[a] == labels[p] and labels[a] != labels[q]:
                    d_ap = (embeddings[a] - embeddings[p]).norm()
                    d_an = (embeddings[a] - embeddings[q]).norm()
                    terms += [torch.relu(d_ap - 1.2 + 0.2), torch.relu(1.2 - d_an + 0.2)]
    terms = torch.stack(terms)
    expected = terms.sum() / (terms > 0).sum()
    assert loss(embeddings, labels).item() == pytest.approx(expected.item(), abs=1e-6)


def test_required_hyper_parameters_are_named():
    with pytest.raises(ConfigError, match=r"RankedListLoss rejected its arguments .*'margin' and 'Tn'"):
        build_loss("RankedListLoss", {}, num_classes=2, embedding_dim=2)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: build_loss("MultiSimilarityLos", {}, num_classes=2, embedding_dim=2),
         r"^loss\.name: unknown loss 'MultiSimilarityLos'; known: .*MultiSimilarityLoss"),
        (lambda: build_loss("MultiSimilarityLoss", {"alpah": 2}, num_classes=2, embedding_dim=2),
         r"^loss: MultiSimilarityLoss rejected its arguments .*it takes: alpha, beta, base"),
        (lambda: build_loss("ContrastiveLoss", {"distance": "Cosine"}, num_classes=2, embedding_dim=2),
         r"^loss\.distance: unknown 'Cosine'; known: .*CosineSimilarity"),
        (lambda: build_miner("HardMiner", {}), r"^miner\.name: unknown miner 'HardMiner'; known: .*BatchHardMiner"),
        (lambda: build_miner(None, {"epsilon": 0.1}), r"^miner: arguments \['epsilon'\] given but miner\.name is null"),
    ],
)
def test_errors_name_the_key_and_the_known_choices(call, message):
    with pytest.raises(ConfigError, match=message):
        call()
