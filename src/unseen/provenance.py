"""Where a result comes from: the commit of the code that produced it."""

from __future__ import annotations

import os
import subprocess
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@lru_cache(maxsize=1)
def commit() -> str:
    """The short git commit of this checkout, `+uncommitted changes` when tracked files differ from it.

    `$UNSEEN_COMMIT` wins (a copy of the tree without .git, e.g. on a remote machine, says it there); an
    installed package outside a git checkout is `unknown`."""
    if os.environ.get("UNSEEN_COMMIT"):
        return os.environ["UNSEEN_COMMIT"]
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True,
                                  timeout=10).stdout.strip()

        sha = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return sha + ("+uncommitted changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
