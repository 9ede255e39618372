"""A table is evaluated under its protocol: the same call for validation, the final test and `unseen evaluate`."""

import numpy as np
import pytest

from unseen.data.base import table_from_labels
from unseen.errors import ConfigError
from unseen.evaluation import evaluate, evaluate_vehicleid
from unseen.evaluation.catalog import METRICS, parse_metric_names
from unseen.evaluation.table import choose_protocol, evaluate_table


def table(query=None, gallery=None):
    labels = np.repeat(np.arange(6), 4)
    return table_from_labels(labels, images=np.zeros((24, 2, 2), dtype=np.uint8), is_query=query, is_gallery=gallery,
                             name="test")


def vectors(seed=0):
    x = np.random.default_rng(seed).normal(size=(24, 5)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_auto_picks_each_datasets_protocol():
    assert choose_protocol("auto", table(), "cub") == "leave_one_out"
    assert choose_protocol("auto", table(), "vehicleid") == "vehicleid"
    split = table(query=np.arange(24) % 2 == 0, gallery=np.arange(24) % 2 == 1)
    assert choose_protocol("auto", split, "inshop") == "query_gallery"
    assert choose_protocol("leave_one_out", split, "inshop") == "leave_one_out"
    with pytest.raises(ConfigError, match="evaluation.protocol: query_gallery, but the test table marks no"):
        choose_protocol("query_gallery", table(), "cub")


def test_each_protocol_is_the_engines_own_call():
    x, t = vectors(), table()
    kwargs = {"metrics": ("recall", "map@r"), "recall_at": (1, 2)}
    assert evaluate_table(x, t, "leave_one_out", **kwargs) == evaluate(x, t.labels, **kwargs)
    split = table(query=np.arange(24) % 2 == 0, gallery=np.arange(24) % 2 == 1)
    assert evaluate_table(x, split, "query_gallery", **kwargs) == evaluate(x, split.labels, query=split.is_query,
                                                                           gallery=split.is_gallery, **kwargs)
    drawn = evaluate_table(x, t, "vehicleid", vehicleid_repeats=5, **kwargs)
    assert drawn == evaluate_vehicleid(x, t.labels, repeats=5, **kwargs)
    assert drawn["repeats"] == 5 and "recall@1_std" in drawn


def test_metric_names_parse_into_metrics_and_recall_cutoffs():
    assert parse_metric_names("recall@1,map@r,nmi,recall@4") == (("recall", "map@r", "nmi"), (1, 4))
    assert parse_metric_names(["f1", "recall"]) == (("f1", "recall"), ())
    known = "f1, map@r, nmi, precision@1, r_precision, recall@K"
    with pytest.raises(ConfigError, match=rf"--metrics: unknown metric 'mapr'; known: {known}$"):
        parse_metric_names("mapr")
    with pytest.raises(ConfigError, match=r"recall@K needs K >= 1"):
        parse_metric_names("recall@0")
    assert list(METRICS) == sorted(["recall", "precision@1", "r_precision", "map@r", "nmi", "f1"])


def test_the_vehicleid_paper_configs_report_the_vehicleid_protocol():
    from pathlib import Path

    from unseen.config import load_config

    for path in sorted((Path(__file__).resolve().parents[2] / "configs" / "paper").rglob("*vehicleid*.yaml")):
        config = load_config(path)
        assert config.data.name == "vehicleid" and config.evaluation.protocol in ("auto", "vehicleid")
        assert choose_protocol(config.evaluation.protocol, table(), config.data.name) == "vehicleid"
