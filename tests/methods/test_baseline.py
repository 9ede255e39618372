import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses, miners

from unseen.config import load_config
from unseen.errors import ConfigError
from unseen.methods import METHODS, Batch, build_method


def test_baseline_is_exactly_the_configured_pml_loss_and_miner():
    config = load_config(None, ["loss.name=MultiSimilarityLoss", "loss.alpha=3", "miner.name=MultiSimilarityMiner",
                                "miner.epsilon=0.2"])
    method = build_method(config, num_classes=4, embedding_dim=8)
    embeddings = F.normalize(torch.randn(16, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    labels = torch.arange(4).repeat_interleave(4)
    out = method.loss({"class": embeddings}, Batch(torch.zeros(16, 1), labels, torch.arange(16)))
    reference = losses.MultiSimilarityLoss(alpha=3)(embeddings, labels,
                                                    miners.MultiSimilarityMiner(epsilon=0.2)(embeddings, labels))
    assert out.total.item() == pytest.approx(reference.item(), abs=1e-7)
    assert out.parts == {"base": pytest.approx(reference.item(), abs=1e-7)}


def test_loss_parameters_become_the_methods_optimizer_group():
    config = load_config(None, ["loss.name=ProxyAnchorLoss", "miner.name=null"])
    method = build_method(config, num_classes=5, embedding_dim=8)
    (group,) = method.param_groups(lr=0.01, weight_decay=0.1)
    assert group["name"] == "method" and group["lr"] == 0.01 and group["weight_decay"] == 0.0
    assert [tuple(p.shape) for p in group["params"]] == [(5, 8)]
    assert build_method(load_config(None, []), num_classes=5, embedding_dim=8).param_groups(0.01, 0.0) == []


def test_every_registered_method_builds_from_defaults():
    for name in METHODS:
        method = build_method(load_config(None, [f"method.name={name}"]), num_classes=4, embedding_dim=8)
        assert method.name == name


def test_unknown_method_keys_are_config_errors():
    with pytest.raises(ConfigError, match=r"^method \(baseline\): unknown key 'confusion_weight'; known keys: none"):
        build_method(load_config(None, ["method.confusion_weight=0.1"]), num_classes=4, embedding_dim=8)
