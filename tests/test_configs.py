"""Every shipped config validates and builds what it names (loss, miner, method, backbone), and every shipped
benchmark spec expands into valid cells, so none can rot."""

from pathlib import Path

import pytest
import yaml

from unseen.benchmark import expand, load_spec
from unseen.config import load_config, validate_config
from unseen.train.components import check_config

ALL = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))
SPECS = [p for p in ALL if "arms" in (yaml.safe_load(p.read_text()) or {})]
CONFIGS = [p for p in ALL if p not in SPECS]


def test_configs_are_shipped():
    assert any(path.name == "baseline.yaml" for path in CONFIGS) and SPECS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_config_validates_and_builds(path):
    config = load_config(path)
    check_config(config.model_copy(update={"model": config.model.model_copy(update={"pretrained": False})}))


@pytest.mark.parametrize("path", SPECS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_benchmark_spec_expands_into_valid_cells(path):
    spec = load_spec(path)
    built = set()
    for cell in expand(spec):
        config = validate_config(cell.config, source=cell.key)
        if (cell.family, cell.loss, cell.arm) not in built:  # one build per method, loss and arm
            built.add((cell.family, cell.loss, cell.arm))
            check_config(config.model_copy(update={"model": config.model.model_copy(update={"pretrained": False})}))
