"""The README cannot lie: its two set-up commands are make targets, and its code blocks run, on tiny data."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unseen.config import load_config
from unseen.train.components import check_config

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BASH = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
PYTHON = re.findall(r"```python\n(.*?)```", README, flags=re.S)
# What makes the quick start tiny: a few steps on small images and batches (the commands are otherwise as written).
TINY = ["train.steps=2", "train.validate_every=1", "data.image_size=64", "data.num_workers=0",
        "sampler.classes_per_batch=2", "sampler.samples_per_class=2", "evaluation.batch_size=16", "train.threads=2"]


def commands(block: str) -> list[list[str]]:
    return [shlex.split(line, comments=True) for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def test_the_two_setup_commands_are_make_targets():
    assert re.search(r"^\s+make demo$", README, flags=re.M) and re.search(r"^\s+make test$", README, flags=re.M)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, flags=re.M) and re.search(r"^test:", makefile, flags=re.M)


def test_quick_start_commands_exist_and_its_configs_validate():
    used = [c for block in BASH for c in commands(block) if c and c[0] == "unseen"]
    assert {c[1] for c in used} <= {"train", "evaluate", "embed", "config", "benchmark", "index", "search",
                                    "cluster", "report", "serve"}
    for command in used:
        if command[1] in ("train", "config"):
            path = command[2] if command[1] == "train" else command[3]
            overrides = [a for a in command[3:] if "=" in a and not a.startswith("-") and "$" not in a]
            config = load_config(ROOT / path, overrides)
            check_config(config)


@pytest.fixture
def tiny_images(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for c in range(28):
        (root / f"class{c:02d}").mkdir(parents=True)
        colour = rng.integers(0, 256, size=3)
        for i in range(3):
            image = np.clip(colour + rng.normal(0, 25, size=(64, 64, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(root / f"class{c:02d}" / f"{i}.png")
    return root


@pytest.mark.slow
def test_the_quick_start_blocks_run(tmp_path, tiny_images):
    import timm

    weights = tmp_path / "resnet50.pth"
    torch.save(timm.create_model("resnet50.tv_in1k", pretrained=False, num_classes=0).state_dict(), weights)
    work = tmp_path / "work"
    work.mkdir()
    for name in ("configs", ".venv"):
        (work / name).symlink_to(ROOT / name)
    (quick_start,) = [block for block in BASH if "unseen train" in block]
    script = quick_start.replace("data.root=$IMAGES", "data.root=$IMAGES " + " ".join(TINY))
    env = {**os.environ, "IMAGES": str(tiny_images), "WEIGHTS": str(weights), "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(["bash", "-e", "-c", script], cwd=work, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "recall@1" in done.stdout and (work / "emb.npy").is_file()
    assert np.load(work / "emb.npy").shape == (84, 128)
    (python_block,) = PYTHON
    shown = subprocess.run([sys.executable, "-c", python_block], cwd=work, env=env, capture_output=True, text=True,
                           timeout=300)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("(84, 128) 128")

    (products,) = [block for block in BASH if "unseen index build" in block]
    script = "\n".join(line for line in products.splitlines() if not line.startswith("unseen serve"))  # tested apart
    env["QUERY"] = str(next(tiny_images.glob("class00/*.png")))
    done = subprocess.run(["bash", "-e", "-c", "source .venv/bin/activate\n" + script], cwd=work, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (work / "runs/mine/index").is_dir() and (work / "clusters" / "clusters.csv").is_file()
    assert (work / "runs/mine/report.html").is_file() and "class00" in done.stdout
