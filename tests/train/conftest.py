import pytest

from unseen.config import load_config
from unseen.data.base import Splits


@pytest.fixture
def tiny_splits(pattern_table):
    return Splits(
        train=pattern_table(8, 5, seed=0, name="train"),
        val=pattern_table(4, 5, seed=1, name="val", offset=100),
        test=pattern_table(6, 5, seed=2, name="test", offset=200),
        dataset="patterns",
        protocol="generated patterns; class-disjoint train / val / test",
    )


@pytest.fixture
def tiny_config():
    def make(*overrides: str):
        return load_config(None, [
            "model.channels=[4,8]", "model.embedding_dim=8", "data.image_size=12",
            "sampler.classes_per_batch=4", "sampler.samples_per_class=2", "train.epochs=2",
            "train.validate_every=2", "train.threads=1", "evaluation.recall_at=[1,2]",
            "evaluation.metrics=[recall,map@r]", *overrides,
        ])

    return make
