"""A tiny trained run (session-wide) and galleries of generated pattern images for the retrieval tests."""

from pathlib import Path

import pytest
from PIL import Image

import unseen
from products_run import train_tiny_run, write_patterns


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def embedder(tiny_run):
    return unseen.load(tiny_run)


@pytest.fixture
def gallery(tmp_path) -> Path:
    """tmp/gallery/gNN/I.png: 4 classes of 6 images, plus a text file named .png and a truncated JPEG."""
    folder = tmp_path / "gallery"
    written = write_patterns(folder, 4, seed=5, prefix="g")
    (folder / "g00" / "text.png").write_text("not an image at all")
    Image.open(written[0][0]).convert("RGB").save(folder / "g01" / "cut.jpg", quality=95)
    data = (folder / "g01" / "cut.jpg").read_bytes()
    (folder / "g01" / "cut.jpg").write_bytes(data[: len(data) // 2])
    return folder
