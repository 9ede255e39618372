"""Writing files so that a crash never leaves half of one: every file unseen writes goes through `atomic_write`.

The data is written to a temporary file in the same folder, flushed and fsynced, then renamed over the
destination (`os.replace` is atomic on POSIX and Windows); on any error the temporary file is removed and the
previous version of the destination, if any, is left as it was.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """`with atomic_write(path) as file:` write to `file`; `path` appears, whole, only when the block succeeds.

    `file.name` is the temporary path, for checks that must read the data back before it is published."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        with open(temporary, mode) as file:  # opened by name, so `file.name` is the temporary path
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would have
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_write(path, "w") as file:
        file.write(text)


def write_json_atomic(path: str | Path, data: Any) -> None:
    """`data` as indented JSON with a final newline."""
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); silently skipped where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
