"""The README's commands must stay true: its two set-up commands exist as make targets, and the quick
start's overrides are real, valid config keys."""

import re
import shlex
from pathlib import Path

from unseen.config import load_config
from unseen.train.components import check_config

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def commands() -> list[list[str]]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    joined = "\n".join(blocks).replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip()]


def test_the_two_setup_commands_are_make_targets():
    assert re.search(r"^\s+make demo$", README, flags=re.M) and re.search(r"^\s+make test$", README, flags=re.M)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, flags=re.M) and re.search(r"^test:", makefile, flags=re.M)


def test_quick_start_train_command_is_a_valid_config():
    train = next(c for c in commands() if c[:2] == [".venv/bin/unseen", "train"])
    config_file = ROOT / train[2]
    overrides = [arg for arg in train[3:] if "=" in arg and not arg.startswith("-")]
    config = load_config(config_file, overrides)
    assert config.data.name == "folder" and config.model.backbone == "resnet50"
    check_config(config.model_copy(update={"model": config.model.model_copy(update={"pretrained": False})}))


def test_quick_start_uses_only_existing_commands():
    used = {c[1] for c in commands() if c[0] == ".venv/bin/unseen"}
    assert used <= {"train", "evaluate", "embed", "config", "index", "search", "cluster", "serve", "report"}
