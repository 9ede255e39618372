"""Checks on the files under the data root, so that bad data fails before training instead of during it.

Two parts:
- `DatasetFiles`, what every reader uses to parse its list files, find listed images that are missing and
  check the canonical counts, each failure one line naming the file and what was expected; a malformed line
  of a list file fails, or is left out and reported (`data.on_bad_row`), see `BadRowReport`;
- `scan_images` / `apply_bad_image_policy`: a fast, cached check that each image decodes (missing, empty,
  corrupt or truncated files), then fail with the list of bad files or skip them (`data.on_bad_image`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from unseen.data.base import Table, table_from_labels
from unseen.errors import DatasetError
from unseen.files import atomic_write

log = logging.getLogger(__name__)

SUBSET_HINT = "or set data.allow_subset=true to use the data as it is"
POLICIES = ("fail", "skip")
MAX_BAD_ROW_FRACTION = 0.01  # with on_bad_row=skip, a file with more bad rows than this is damaged, not dirty


def reader_options(config: Any, dataset: str, known: Iterable[str]) -> dict[str, Any]:
    """`config.options`, refusing keys the reader does not know (a typo must not silently fall back)."""
    options = dict(config.options or {})
    unknown = sorted(set(options) - set(known))
    if unknown:
        known_names = ", ".join(sorted(known)) or "none"
        raise DatasetError(f"data.options: unknown option '{unknown[0]}' for {dataset}; known: {known_names}")
    return options


@dataclass(frozen=True)
class DatasetFiles:
    """A reader's view of its files: the data root, what to tell people when files are missing or incomplete
    (`source`, e.g. "extract CUB_200_2011.tgz (https://...) into the data root"), `allow_subset`, and what a
    malformed line of a list file does (`on_bad_row`: fail, or skip it and report it)."""

    dataset: str
    root: Path
    source: str
    allow_subset: bool = False
    on_bad_row: str = "fail"

    def __post_init__(self) -> None:
        if self.on_bad_row not in POLICIES:
            raise DatasetError(f"data.on_bad_row: expected 'fail' or 'skip', got {self.on_bad_row!r}")

    @classmethod
    def of(cls, dataset: str, root: Path, source: str, config: Any) -> DatasetFiles:
        """The files of `dataset` under `root`, with the policies of the run's data config."""
        return cls(dataset, Path(root), source, config.allow_subset, config.on_bad_row)

    def show(self, path: str | Path) -> str:
        """`path` relative to the data root when it is inside it (as error messages print it)."""
        try:
            return Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def require(self, relative: str | Path) -> Path:
        """The existing path `root/relative`, or one line saying where it should be and where to get it."""
        path = self.root / relative
        if not path.exists():
            where = f"{self.show(path)}: not found under {self.root}"
            raise DatasetError(f"{where}; {self.source}, or set --data-root / UNSEEN_DATA")
        return path

    def read_rows(
        self,
        relative: str | Path,
        *,
        expected: str,
        types: Sequence[Callable[[str], Any]],
        header: str | None = None,
        count_line: bool = False,
        check: Callable[[tuple[Any, ...]], str | None] | None = None,
    ) -> list[tuple[Any, ...]]:
        """The whitespace-separated rows of a list file, each converted by `types` (a ValueError: malformed).
        `count_line`: line 1 holds the number of rows; `header`: the next line must be this header; `check`:
        why a well-formed row cannot be used, or None. Blank lines are ignored; lines are numbered as editors
        number them (split at \\n only), each decoded on its own, so one bad byte spoils one line, not the file.
        A bad row fails or is skipped and reported (`on_bad_row`, see `BadRows`)."""
        path = self.require(relative)
        shown = self.show(path)
        try:
            raw = path.read_bytes().split(b"\n")
        except OSError as error:
            raise DatasetError(f"{shown}: cannot read ({error})") from None
        lines = [_decode(line, first=number == 0) for number, line in enumerate(raw)]
        start, announced = 0, None
        if count_line:
            if lines[0] is None or not lines[0].strip().isdecimal():
                raise DatasetError(f"{shown}: line 1: expected the number of images")
            start, announced = 1, int(lines[0])
        if header is not None:
            if len(lines) <= start or lines[start] is None or lines[start].split() != header.split():
                raise DatasetError(f"{shown}: line {start + 1}: expected the header '{header}'")
            start += 1
        rows, bad = [], self.bad_rows(shown)
        for number, line in enumerate(lines[start:], start + 1):
            if line is None:
                bad.add(number, "not UTF-8 text")
                continue
            fields = line.split()
            if not fields:
                continue
            try:
                if len(fields) != len(types):
                    raise ValueError
                row = tuple(convert(field) for convert, field in zip(types, fields, strict=True))
            except ValueError:
                bad.add(number, f"expected '{expected}'")
                continue
            reason = check(row) if check is not None else None
            if reason is not None:
                bad.add(number, reason)
                continue
            rows.append(row)
        bad.finish(len(rows))
        listed = len(rows) + len(bad.lines)
        if announced is not None and announced != listed and not self.allow_subset:
            raise DatasetError(
                f"{shown}: line 1 announces {announced:,} images but the file lists {listed:,}; "
                f"{self.source}, {SUBSET_HINT}"
            )
        return rows

    def bad_rows(self, shown: str) -> BadRows:
        """A record of the bad rows of the file `shown`, under this reader's `on_bad_row` policy."""
        return BadRows(shown, self.on_bad_row, self.source)

    def present(self, paths: Sequence[str], listed_in: str) -> np.ndarray:
        """Mask of the `paths` that exist. Missing ones are an error naming them, unless `allow_subset`."""
        missing = find_missing(paths)
        if missing and not self.allow_subset:
            raise DatasetError(
                f"{self.dataset}: {len(missing):,} of {len(paths):,} images listed in {listed_in} are "
                f"missing, e.g. {self.show(missing[0])}; the data is incomplete: {self.source}, {SUBSET_HINT}"
            )
        if missing:
            log.warning("%s: %d listed images are missing; using the %d present (allow_subset)",
                        self.dataset, len(missing), len(paths) - len(missing))
        absent = set(missing)
        return np.array([path not in absent for path in paths], dtype=bool)

    def check_count(self, what: str, found: int, expected: int | None) -> None:
        """Refuse a count that differs from the canonical one, unless `allow_subset`."""
        if expected is None or found == expected or self.allow_subset:
            return
        raise DatasetError(
            f"{self.dataset}: found {found:,} {what}, the canonical split has {expected:,}; "
            f"the data is incomplete or not the official release: {self.source}, {SUBSET_HINT}"
        )

    def build(
        self,
        paths: Sequence[str],
        class_names: Sequence[str],
        in_train: Sequence[bool],
        *,
        listed_in: str,
        counts: dict[str, tuple[int | None, int]] | None = None,
        is_query: Sequence[bool] | None = None,
        is_gallery: Sequence[bool] | None = None,
    ) -> tuple[Table, Table]:
        """The train and test tables of the rows whose images exist, with class-disjointness checked and,
        when `counts` ({"train": (images, classes), "test": ...}) is given, the canonical counts.
        `is_query` / `is_gallery` apply to the test rows; training rows are always both."""
        paths, names = np.asarray(paths, dtype=str), np.asarray(class_names, dtype=str)
        in_train = np.asarray(in_train, dtype=bool)
        keep = self.present(paths, listed_in)
        shared = np.intersect1d(names[keep & in_train], names[keep & ~in_train])
        if len(shared):
            raise DatasetError(
                f"{self.dataset}: {len(shared):,} classes are in both train and test (e.g. '{shared[0]}'); "
                "the zero-shot protocol needs disjoint classes"
            )
        tables = []
        for name, rows in (("train", keep & in_train), ("test", keep & ~in_train)):
            if not rows.any():
                raise DatasetError(f"{self.dataset}: no {name} images in {listed_in}")
            roles = {
                role: None if mask is None or name == "train" else np.asarray(mask, dtype=bool)[rows]
                for role, mask in (("is_query", is_query), ("is_gallery", is_gallery))
            }
            table = table_from_labels(names[rows], paths=paths[rows], name=name, **roles)
            if counts is not None:
                images, classes = counts[name]
                self.check_count(f"{name} images", len(table), images)
                self.check_count(f"{name} classes", table.num_classes, classes)
            tables.append(table)
        return tables[0], tables[1]


@dataclass(frozen=True)
class BadRow:
    """A line of a list file that cannot be used, and why (`expected '<id> <path>'`, `not UTF-8 text`, ...)."""

    line: int
    reason: str


@dataclass(frozen=True)
class BadRowReport:
    """The bad lines of one list file and what the policy did; `to_dict()` goes into the run's split summary."""

    file: str
    policy: str
    rows: int
    bad: tuple[BadRow, ...] = ()

    @property
    def skipped(self) -> int:
        return len(self.bad) if self.policy == "skip" else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "policy": self.policy,
            "rows": self.rows,
            "skipped": self.skipped,
            "bad": [{"line": bad.line, "reason": bad.reason} for bad in self.bad],
        }


_RECORDED: ContextVar[list[BadRowReport] | None] = ContextVar("unseen_bad_rows", default=None)


@contextmanager
def recording_bad_rows() -> Iterator[list[BadRowReport]]:
    """Collect the `BadRowReport` of every file that had rows skipped while the block runs (readers return
    tables only; this is how `build_splits` gets their reports without changing what a reader returns)."""
    reports: list[BadRowReport] = []
    token = _RECORDED.set(reports)
    try:
        yield reports
    finally:
        _RECORDED.reset(token)


class BadRows:
    """The bad rows of one file as a parser finds them. "fail": the first one is an error naming its line;
    "skip": they are left out, and `finish` refuses a file where more than 1% of the rows are bad (a damaged
    or foreign file, not a dirty one), else logs and records the report (see `recording_bad_rows`)."""

    def __init__(self, shown: str, policy: str, source: str) -> None:
        self.shown, self.policy, self.source = shown, policy, source
        self.lines: list[BadRow] = []

    def add(self, line: int, reason: str) -> None:
        if self.policy == "fail":
            raise DatasetError(
                f"{self.shown}: line {line}: {reason}; fix the line, or set data.on_bad_row=skip to leave such "
                "lines out"
            )
        self.lines.append(BadRow(line, reason))

    def finish(self, good: int) -> None:
        """Called once the file is parsed, with the number of `good` rows."""
        if not self.lines:
            return
        rows = good + len(self.lines)
        first = self.lines[0]
        if len(self.lines) > MAX_BAD_ROW_FRACTION * rows:
            raise DatasetError(
                f"{self.shown}: {len(self.lines):,} of {rows:,} rows are malformed (more than "
                f"{MAX_BAD_ROW_FRACTION:.0%}; e.g. line {first.line}: {first.reason}); the file is damaged or "
                f"not the official one: {self.source}"
            )
        report = BadRowReport(self.shown, self.policy, rows, tuple(self.lines))
        numbers = ", ".join(str(bad.line) for bad in self.lines[:10]) + (", ..." if len(self.lines) > 10 else "")
        log.warning("%s: skipping %d malformed lines (%s; data.on_bad_row=skip)", self.shown, len(self.lines), numbers)
        recorded = _RECORDED.get()
        if recorded is not None:
            recorded.append(report)


def _decode(line: bytes, first: bool) -> str | None:
    """One line as text (a byte-order mark dropped from the first, a trailing \\r from any); None if not UTF-8."""
    try:
        return line.decode("utf-8-sig" if first else "utf-8").removesuffix("\r")
    except UnicodeDecodeError:
        return None


def find_missing(paths: Iterable[str]) -> list[str]:
    """The paths that do not exist, listing each directory once instead of one stat per file."""
    listings: dict[str, set[str]] = {}
    missing = []
    for path in paths:
        directory, name = os.path.split(path)
        if directory not in listings:
            try:
                listings[directory] = set(os.listdir(directory or "."))
            except (OSError, ValueError):  # ValueError: a NUL byte in a listed path
                listings[directory] = set()
        if name not in listings[directory] and not os.path.isfile(path):
            missing.append(path)
    return missing


@dataclass(frozen=True)
class BadImage:
    """An image that cannot be used, and why: missing, empty file, not an image, truncated, cannot decode."""

    path: str
    reason: str


@dataclass(frozen=True)
class BadImageReport:
    """What the scan of one table found and what the policy did; `to_dict()` goes into the run directory."""

    table: str
    policy: str
    checked: int
    bad: tuple[BadImage, ...] = ()

    @property
    def skipped(self) -> int:
        return len(self.bad) if self.policy == "skip" else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "policy": self.policy,
            "checked": self.checked,
            "skipped": self.skipped,
            "bad": [{"path": bad.path, "reason": bad.reason} for bad in self.bad],
        }


def check_image(path: str) -> str | None:
    """Why the image file at `path` cannot be used, or None. Cheap: PIL's header parse and verify() (every
    chunk CRC for PNG), the end-of-image marker for JPEG; a full decode only for other formats or a JPEG
    without the marker (a truncated file, or trailing bytes after a complete image)."""
    try:
        if os.path.getsize(path) == 0:
            return "empty file"
        with Image.open(path) as image:
            image_format = image.format
            image.verify()
    except FileNotFoundError:
        return "missing"
    except UnidentifiedImageError:
        return "not an image"
    except Exception as error:  # PIL signals corrupt structure with many exception types
        return _reason(error)
    if image_format == "PNG" or (image_format == "JPEG" and _ends_with_jpeg_marker(path)):
        return None
    try:
        with Image.open(path) as image:
            image.load()
    except Exception as error:
        return _reason(error)
    return None


def _reason(error: Exception) -> str:
    return "truncated" if "truncated" in str(error).lower() else f"corrupt ({error})"


def _ends_with_jpeg_marker(path: str) -> bool:
    with open(path, "rb") as file:
        file.seek(max(0, os.path.getsize(path) - 64))
        return file.read().rstrip(b"\x00").endswith(b"\xff\xd9")


def scan_images(
    paths: Sequence[str], *, cache_dir: str | Path | None = None, progress: bool = False
) -> list[BadImage]:
    """The images among `paths` that cannot be used. Files already found good with the same size and
    modification time are not read again: the cache lives in `cache_dir` (default ~/.cache/unseen)."""
    cache = _ScanCache(paths, cache_dir)
    bad = []
    iterator: Iterable[str] = paths
    if progress:
        from tqdm import tqdm

        iterator = tqdm(paths, desc="checking images", unit="img")
    for path in iterator:
        try:
            stat = os.stat(path)
        except OSError as error:
            reason = "missing" if isinstance(error, FileNotFoundError) else f"cannot read ({error.strerror})"
            bad.append(BadImage(path, reason))
            continue
        signature = (stat.st_size, stat.st_mtime_ns)
        if cache.is_good(path, signature):
            continue
        reason = check_image(path)
        if reason is None:
            cache.add(path, signature)
        else:
            bad.append(BadImage(path, reason))
    cache.save()
    return bad


def apply_bad_image_policy(
    table: Table, policy: str, *, cache_dir: str | Path | None = None, progress: bool = False
) -> tuple[Table, BadImageReport]:
    """Scan a path table's images. "fail": one error listing the bad files; "skip": the table without them
    (classes left with no image disappear). In-memory tables have nothing to scan."""
    if policy not in ("fail", "skip"):
        raise DatasetError(f"data.on_bad_image: expected 'fail' or 'skip', got {policy!r}")
    if table.paths is None:
        return table, BadImageReport(table.name, policy, checked=0)
    bad = scan_images(table.paths, cache_dir=cache_dir, progress=progress)
    report = BadImageReport(table.name, policy, checked=len(table), bad=tuple(bad))
    if not bad:
        return table, report
    if policy == "fail":
        listed = "; ".join(f"{item.path} ({item.reason})" for item in bad[:10])
        more = f"; and {len(bad) - 10:,} more" if len(bad) > 10 else ""
        raise DatasetError(
            f"{len(bad):,} of {len(table):,} images of the {table.name} table cannot be used: "
            f"{listed}{more}; fix or remove them, or set data.on_bad_image=skip to leave them out"
        )
    log.warning("%s: skipping %d unusable images (data.on_bad_image=skip)", table.name, len(bad))
    unusable = {item.path for item in bad}
    return table.select(np.array([path not in unusable for path in table.paths]), name=table.name), report


class _ScanCache:
    """Good files as {path: [size, mtime_ns]}, one JSON file per common directory of the scanned paths.
    Bad files are never cached (they are re-checked until fixed); an unwritable cache is only skipped."""

    def __init__(self, paths: Sequence[str], cache_dir: str | Path | None) -> None:
        base = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
        common = os.path.commonpath([os.path.abspath(path) for path in paths]) if len(paths) else ""
        self.file = base / "image-scan" / f"{hashlib.sha1(common.encode()).hexdigest()[:16]}.json"
        self.entries: dict[str, list[int]] = {}
        self.changed = False
        try:
            self.entries = json.loads(self.file.read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError):
            pass

    def is_good(self, path: str, signature: tuple[int, int]) -> bool:
        return self.entries.get(path) == list(signature)

    def add(self, path: str, signature: tuple[int, int]) -> None:
        self.entries[path] = list(signature)
        self.changed = True

    def save(self) -> None:
        if not self.changed:
            return
        try:
            with atomic_write(self.file, "w") as out:
                json.dump({"version": 1, "files": self.entries}, out)
        except OSError as error:  # a cache: not written is only slower next time
            log.debug("image scan cache not written to %s: %s", self.file, error)


def _default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "unseen"
