"""Every shipped config validates and builds what it names (loss, miner, method, backbone), so none can rot."""

from pathlib import Path

import pytest

from unseen.config import load_config
from unseen.train.components import check_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


def test_configs_are_shipped():
    assert any(path.name == "baseline.yaml" for path in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_config_validates_and_builds(path):
    config = load_config(path)
    check_config(config.model_copy(update={"model": config.model.model_copy(update={"pretrained": False})}))
