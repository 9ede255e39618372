import pytest
import torch

from unseen.errors import ConfigError
from unseen.models.backbones import ConvNet, TimmTrunk, build_trunk
from unseen.models.network import build_model
from unseen.models.spec import ModelSpec


def test_convnet_surface_and_tap_shapes():
    net = ConvNet(1, (8, 16, 32))
    maps = net.forward_intermediates(torch.zeros(2, 1, 28, 28))
    assert [tuple(m.shape) for m in maps] == [(2, 8, 14, 14), (2, 16, 7, 7), (2, 32, 7, 7)]
    assert net.num_features == 32 and net.stage_names == ("block0", "block1", "block2")
    assert torch.equal(net.forward_features(torch.zeros(2, 1, 28, 28)), maps[-1])


def test_embedder_outputs_unit_class_embedding_and_extra_heads():
    model = build_model(ModelSpec(backbone="convnet", in_chans=1, channels=(8, 16), embedding_dim=12,
                                  extra_heads={"shared": 6}))
    out = model(torch.randn(3, 1, 28, 28))
    assert out["features"].shape == (3, 16)
    assert out["class"].shape == (3, 12) and out["shared"].shape == (3, 6)
    assert torch.allclose(out["class"].norm(dim=1), torch.ones(3))
    assert "taps" not in out and len(model(torch.randn(3, 1, 28, 28), taps=True)["taps"]) == 2


def test_param_groups_split_trunk_and_heads():
    model = build_model(ModelSpec(backbone="convnet", in_chans=1, channels=(8,), embedding_dim=4))
    groups = model.param_groups(lr=1e-3, backbone_lr=1e-4, weight_decay=0.0)
    assert [(g["name"], g["lr"]) for g in groups] == [("backbone", 1e-4), ("heads", 1e-3)]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_freeze_batchnorm_keeps_running_stats():
    model = build_model(ModelSpec(backbone="convnet", in_chans=1, channels=(4,), freeze_batchnorm=True)).train()
    bn = model.trunk.blocks[0][1]
    before = bn.running_mean.clone()
    model(torch.randn(4, 1, 8, 8) + 5)
    assert not bn.training and torch.equal(bn.running_mean, before)


def test_timm_trunk_by_name_and_unknown_names():
    trunk = build_trunk("resnet18", in_chans=3)
    assert isinstance(trunk, TimmTrunk) and trunk.num_features == 512
    assert trunk.forward_features(torch.zeros(1, 3, 64, 64)).shape == (1, 512, 2, 2)
    with pytest.raises(ConfigError, match="model.backbone: unknown backbone 'resnet_5O'"):
        build_trunk("resnet_5O", in_chans=3)
    with pytest.raises(ConfigError, match="model.pretrained: the small 'convnet' has no pretrained weights"):
        build_trunk("convnet", in_chans=1, pretrained=True)


def test_sliced_class_head_normalizes_each_slice_and_keeps_unit_norm():
    model = build_model(ModelSpec(backbone="convnet", in_chans=1, channels=(8,), embedding_dim=12, class_slices=3))
    z = model(torch.randn(5, 1, 16, 16))["class"]
    slices = z.view(5, 3, 4)
    assert torch.allclose(slices.norm(dim=-1), torch.full((5, 3), 3**-0.5))
    assert torch.allclose(z.norm(dim=1), torch.ones(5))
