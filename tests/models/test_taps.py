import pytest
import torch

from unseen.errors import ConfigError
from unseen.models.backbones import ConvNet, build_trunk, resolve_taps
from unseen.models.network import EmbeddingModel, build_model
from unseen.models.spec import ModelSpec

# Stage names, channels and map sizes (at 32×32 input) of the trunks, as docs/methods.md lists them.
TIMM_STAGES = {
    "resnet18": (("act1", 64, 16), ("layer1", 64, 8), ("layer2", 128, 4), ("layer3", 256, 2), ("layer4", 512, 1)),
    "efficientnet_b0": (("blocks.0", 16, 16), ("blocks.1", 24, 8), ("blocks.2", 40, 4), ("blocks.4", 112, 2),
                        ("blocks.6", 320, 1)),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The timm trunks run ~20× faster on one thread than on two contended cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=sorted(TIMM_STAGES))
def timm_trunk(request):
    torch.manual_seed(0)
    return request.param, build_trunk(request.param, in_chans=3).eval()


def test_convnet_taps_by_index_with_the_last_map():
    net = ConvNet(1, (8, 16, 32)).eval()
    x = torch.randn(2, 1, 28, 28)
    assert net.stage_names == ("block0", "block1", "block2") and net.stage_channels == (8, 16, 32)
    every = net.forward_intermediates(x)
    assert [tuple(m.shape) for m in every] == [(2, 8, 14, 14), (2, 16, 7, 7), (2, 32, 7, 7)]
    (only,) = net.forward_intermediates(x, indices=[1])
    assert torch.equal(only, every[1])
    last, picked = net.forward_intermediates(x, indices=[0, 2], intermediates_only=False)
    assert torch.equal(last, net.forward_features(x)) and torch.equal(picked[1], last)
    assert torch.equal(picked[0], every[0])


def test_timm_taps_have_the_documented_names_channels_and_shapes(timm_trunk):
    name, trunk = timm_trunk
    names, channels, sizes = zip(*TIMM_STAGES[name], strict=True)
    assert trunk.stage_names == names and trunk.stage_channels == channels
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        every = trunk.forward_intermediates(x)
        last, picked = trunk.forward_intermediates(x, indices=resolve_taps(names, [names[2], -2]),
                                                   intermediates_only=False)
        features = trunk.forward_features(x)
    assert [tuple(m.shape) for m in every] == [(2, c, s, s) for c, s in zip(channels, sizes, strict=True)]
    assert [tuple(m.shape) for m in picked] == [tuple(every[2].shape), tuple(every[3].shape)]
    assert torch.equal(picked[0], every[2]) and torch.equal(picked[1], every[3])
    assert torch.equal(last, features) and last.shape[1] == trunk.num_features  # EfficientNet: 1280, not 320


def test_taps_resolve_by_name_or_index_in_stage_order():
    names = ("block0", "block1", "block2", "block3")
    assert resolve_taps(names, []) == ()
    assert resolve_taps(names, ["block2", 1, -1]) == (1, 2, 3)


@pytest.mark.parametrize(("taps", "message"), [
    (["layer9"], r"^model\.taps: unknown stage 'layer9'; known: block0, block1, block2 \(or an index -3\.\.2\)$"),
    ([3], r"^model\.taps: stage index 3 out of range; known: block0, block1, block2"),
    (["block1", -2], r"^model\.taps: stage 'block1' is listed twice$"),
])
def test_bad_taps_are_config_errors_listing_the_stages(taps, message):
    with pytest.raises(ConfigError, match=message):
        resolve_taps(("block0", "block1", "block2"), taps)
    with pytest.raises(ConfigError, match=message):
        build_model(ModelSpec(backbone="convnet", in_chans=1, channels=(4, 8, 16), taps=taps))


def test_without_taps_the_embedder_is_unchanged():
    torch.manual_seed(0)
    model = build_model(ModelSpec(backbone="convnet", in_chans=1, channels=(4, 8), embedding_dim=6)).eval()
    assert list(model.state_dict()) == [*(f"trunk.{k}" for k in model.trunk.state_dict()),
                                        "heads.class.linear.weight", "heads.class.linear.bias"]
    assert [g["name"] for g in model.param_groups(1e-3, None, 0.0)] == ["backbone", "heads"]
    x = torch.randn(3, 1, 12, 12)
    features = model.trunk.forward_features(x).mean(dim=(2, 3))
    out, tapped = model(x), model(x, taps=True)
    assert torch.equal(out["features"], features) and torch.equal(out["class"], model.heads["class"](features))
    assert torch.equal(tapped["class"], out["class"]) and len(tapped["taps"]) == 2


@pytest.mark.parametrize("attention", ["none", "spatial", "spatial+channel"])
def test_tapped_embedder_fuses_pooled_taps_with_the_last_map(attention):
    torch.manual_seed(0)
    spec = ModelSpec(backbone="convnet", in_chans=1, channels=(4, 8, 16), embedding_dim=6, taps=["block1", 0],
                     attention=attention, extra_heads={"shared": 3})
    model = build_model(spec).eval()
    assert model.taps == (0, 1) and model.heads["class"].linear.in_features == 4 + 8 + 16
    assert model.heads["shared"].linear.in_features == 28
    x = torch.randn(3, 1, 12, 12)
    out, tapped = model(x), model(x, taps=True)
    every = model.trunk.forward_intermediates(x)
    fused = torch.cat([model.attention[0](every[0]), model.attention[1](every[1]), every[2].mean(dim=(2, 3))], 1)
    assert torch.equal(out["features"], every[2].mean(dim=(2, 3)))
    assert torch.allclose(out["class"], model.heads["class"](fused), atol=1e-6)
    assert torch.allclose(out["class"].norm(dim=1), torch.ones(3)) and out["shared"].shape == (3, 3)
    assert torch.equal(tapped["class"], out["class"]) and len(tapped["taps"]) == 3
    groups = {g["name"]: g["params"] for g in model.param_groups(1e-3, 1e-4, 0.0)}
    per_pool = {"none": 0, "spatial": 2, "spatial+channel": 6}[attention]  # score conv w, b; SE: 2 linear layers
    assert len(groups.get("attention", [])) == len(list(model.attention.parameters())) == 2 * per_pool
    assert sum(len(params) for params in groups.values()) == len(list(model.parameters()))


def test_tapped_timm_embedder_trains_the_attention(timm_trunk):
    _, trunk = timm_trunk
    model = EmbeddingModel(trunk, 8, taps=(2, 3), attention="spatial+channel")
    out = model(torch.randn(2, 3, 32, 32))
    assert out["features"].shape == (2, trunk.num_features) and out["class"].shape == (2, 8)
    out["class"][:, 0].sum().backward()
    assert all(p.grad is not None for p in model.attention.parameters())
    model.zero_grad(set_to_none=True)
