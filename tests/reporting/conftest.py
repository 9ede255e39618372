"""A tiny trained run on generated images, read back through its own folder data config."""

from pathlib import Path

import pytest

from products_run import train_tiny_run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("tiny"))
