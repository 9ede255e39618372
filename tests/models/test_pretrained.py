import pytest
import torch

from unseen.errors import ConfigError
from unseen.models.backbones import build_trunk


def test_offline_hub_request_names_the_local_file_option(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as error:
        build_trunk("resnet18", in_chans=3, pretrained=True)
    assert "offline" in str(error.value) and "model.pretrained=/path/to/resnet18" in str(error.value)


def test_local_weights_file_is_loaded_with_classifier_keys_ignored(tmp_path):
    source = build_trunk("resnet18", in_chans=3)
    state = {**source.model.state_dict(), "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": state}, path)
    loaded = build_trunk("resnet18", in_chans=3, pretrained=str(path))
    for key, value in source.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value)


def test_local_weights_errors(tmp_path):
    with pytest.raises(ConfigError, match="no weights file at"):
        build_trunk("resnet18", in_chans=3, pretrained=str(tmp_path / "none.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"garbage")
    with pytest.raises(ConfigError, match=r"junk\.pth: not a readable weights file"):
        build_trunk("resnet18", in_chans=3, pretrained=str(junk))
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(ConfigError, match=r"wrong\.pth: keys do not match the backbone: missing"):
        build_trunk("resnet18", in_chans=3, pretrained=str(wrong))
