import pytest

from unseen.config import Config, dump_config, load_config, parse_overrides, validate_config
from unseen.errors import ConfigError


def test_defaults_validate():
    config = Config()
    assert config.loss.name == "MultiSimilarityLoss"
    assert config.sampler.classes_per_batch * config.sampler.samples_per_class == 128


def test_overrides_are_parsed_as_yaml_scalars_into_nested_sections():
    nested = parse_overrides(["loss.alpha=2", "loss.name=MarginLoss", "train.max_steps=10",
                              "evaluation.recall_at=[1,10]", "model.pretrained=/w/file.pth", "miner.name=null"])
    assert nested == {
        "loss": {"alpha": 2, "name": "MarginLoss"},
        "train": {"max_steps": 10},
        "evaluation": {"recall_at": [1, 10]},
        "model": {"pretrained": "/w/file.pth"},
        "miner": {"name": None},
    }


def test_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("loss:\n  name: TripletMarginLoss\n  margin: 0.1\ntrain:\n  epochs: 3\n")
    config = load_config(path, ["loss.margin=0.3", "train.seed=7"])
    assert config.loss.name == "TripletMarginLoss"
    assert config.loss.kwargs == {"margin": 0.3}
    assert (config.train.epochs, config.train.seed) == (3, 7)


def test_dump_round_trips(tmp_path):
    config = load_config(None, ["loss.alpha=3", "evaluation.recall_at=[1,5]"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(config))
    assert load_config(path) == config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.embeding_dim=64"], "config: unknown key 'model.embeding_dim'; did you mean 'model.embedding_dim'?"),
        (["modle.backbone=x"], "config: unknown key 'modle'; did you mean 'model'?"),
        (["model.embedding_dim=abc"], "config: model.embedding_dim: input should be a valid integer"),
        (["model.embedding_dim=-3"], "config: model.embedding_dim: input should be greater than 0, got -3"),
        (["optimizer.name=rmsprop"], "config: optimizer.name: input should be 'adam', 'adamw' or 'sgd', got 'rmsprop'"),
        (["train.precision=fp16"], "config: train.precision: input should be 'fp32' or 'bf16', got 'fp16'"),
        (["evaluation.metrics=[recall,nmii]"], "config: evaluation.metrics: unknown metric 'nmii'"),
        (["model=3"], "config: model: expected a section (a mapping of keys), got 3"),
        (["loss.alpha"], "override 'loss.alpha': expected key=value"),
    ],
)
def test_config_errors_are_one_line_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as error:
        load_config(None, overrides)
    text = str(error.value)
    assert text.startswith(message)
    assert "\n" not in text


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read config"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("data:\n  name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: line \d+: not valid YAML"):
        load_config(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: expected a mapping of sections"):
        load_config(listing)


def test_validate_config_names_the_source():
    with pytest.raises(ConfigError, match=r"^run/config\.yaml: unknown key 'train\.stepz'"):
        validate_config({"train": {"stepz": 3}}, source="run/config.yaml")


def test_extends_merges_over_the_parent_relative_to_the_file(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "parent.yaml").write_text(
        "loss:\n  name: MultiSimilarityLoss\n  alpha: 3\nmodel:\n  embedding_dim: 64\n  dropout: 0.1\n")
    (tmp_path / "child.yaml").write_text("extends: base/parent.yaml\nmodel:\n  embedding_dim: 32\n")
    config = load_config(tmp_path / "child.yaml")
    assert config.model.embedding_dim == 32 and config.model.dropout == 0.1
    assert config.loss.name == "MultiSimilarityLoss" and config.loss.kwargs == {"alpha": 3}


def test_a_section_whose_name_changes_is_replaced_whole(tmp_path):
    (tmp_path / "parent.yaml").write_text("loss:\n  name: MultiSimilarityLoss\n  alpha: 3\n")
    (tmp_path / "child.yaml").write_text("extends: parent.yaml\nloss:\n  name: MarginLoss\n  margin: 0.1\n")
    assert load_config(tmp_path / "child.yaml").loss.kwargs == {"margin": 0.1}
    override = load_config(tmp_path / "parent.yaml", ["loss.name=MarginLoss", "loss.learn_beta=true"])
    assert override.loss.name == "MarginLoss" and override.loss.kwargs == {"learn_beta": True}
    same = load_config(tmp_path / "parent.yaml", ["loss.name=MultiSimilarityLoss", "loss.beta=40"])
    assert same.loss.kwargs == {"alpha": 3, "beta": 40}


def test_extends_cycles_and_bad_parents_are_one_line_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match=r"a\.yaml: extends: cycle \(.*a\.yaml -> .*b\.yaml -> .*a\.yaml\)"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: /etc/unseen.yaml\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: extends: expected a path relative to this file"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read config"):
        load_config(tmp_path / "d.yaml")


def test_steps_are_integers_or_shares_of_the_budget():
    from unseen.config import resolve_steps

    config = load_config(None, ["train.validate_every=0.02", "schedule.milestones=[0.8, 100]"])
    assert config.train.validate_every == 0.02 and config.schedule.milestones == (0.8, 100)
    assert resolve_steps(0.02, 5000) == 100 and resolve_steps(100, 5000) == 100
    with pytest.raises(ConfigError, match="train.validate_every"):
        load_config(None, ["train.validate_every=1.5"])
