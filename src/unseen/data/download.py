"""Getting a dataset's files onto disk: atomic, checked downloads, and whether downloading is allowed at all.

A download goes to a temporary file beside its destination, is checked (byte count; every member's CRC for
a zip), and only then renamed into place, so an interrupted or corrupt download never looks like data.
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import zipfile
from pathlib import Path
from urllib.request import urlopen

from unseen.errors import DatasetError
from unseen.files import atomic_write

OFFLINE_VARIABLES = ("UNSEEN_OFFLINE", "HF_HUB_OFFLINE")

log = logging.getLogger(__name__)


def offline() -> bool:
    """True when UNSEEN_OFFLINE or HF_HUB_OFFLINE is set to 1/true/yes/on: readers then never download."""
    values = (os.environ.get(name, "").strip().lower() for name in OFFLINE_VARIABLES)
    return any(value in ("1", "true", "yes", "on") for value in values)


def fetch(url: str, dest: Path, *, timeout: float = 60.0) -> Path:
    """Download `url` to `dest` atomically (`files.atomic_write`) after checking its length and, for a .zip,
    every member's CRC. Any failure is one DatasetError line and leaves nothing at `dest`."""
    dest = Path(dest)
    log.info("downloading %s to %s", url, dest)
    try:
        with atomic_write(dest) as out:
            with urlopen(url, timeout=timeout) as response:
                announced = response.headers.get("Content-Length")
                shutil.copyfileobj(response, out, 1 << 20)
            out.flush()
            size = os.path.getsize(out.name)
            if announced is not None and size != int(announced):
                raise DatasetError(f"download of {url} failed: got {size} of {int(announced)} bytes")
            if dest.suffix == ".zip":
                _check_zip(Path(out.name), url)
    except (OSError, http.client.HTTPException, ValueError) as error:
        raise DatasetError(f"download of {url} failed: {error}") from None
    return dest


def _check_zip(path: Path, url: str) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
    except zipfile.BadZipFile:
        raise DatasetError(f"download of {url} failed: not a zip archive") from None
    if broken is not None:
        raise DatasetError(f"download of {url} failed: member {broken} has a bad CRC")
