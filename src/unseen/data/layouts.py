"""Where a dataset's files sit under the data root: the layouts its official archives extract to, and older ones.

A reader lists its `Layout`s, best first. `locate` tries each one in each place its dataset folder can be —
a named folder under the data root (the root is the folder's parent) or the data root itself (the root is
the dataset folder) — and returns the first place where all its files are. When no place is complete, the
first place holding a layout's main file wins, so that the reader's own checks name the piece that is
missing; when not even a main file is anywhere, one error lists every place tried and what to get.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from unseen.data.scan import DatasetFiles
from unseen.errors import DatasetError

ROOT = ""  # in `Layout.folders`: the data root itself is the dataset folder


@dataclass(frozen=True)
class Layout:
    """One arrangement of a dataset's files. `files` maps a role ("list", "images") to a path inside the
    dataset folder, a trailing "/" for a folder; the first role is the main file. `folders`: the names the
    dataset folder may have under the data root, `ROOT` for the root itself."""

    description: str
    files: dict[str, str]
    folders: tuple[str, ...] = field(default=(ROOT,))

    def places(self, root: Path) -> list[Path]:
        """The dataset folders to try, in order."""
        return [root / name if name else root for name in self.folders]

    def complete(self, folder: Path) -> bool:
        return all(_exists(folder, relative) for relative in self.files.values())

    def started(self, folder: Path) -> bool:
        return _exists(folder, next(iter(self.files.values())))


@dataclass(frozen=True)
class Located:
    """The layout found and its dataset folder; `path(role)` is where that file is."""

    layout: Layout
    folder: Path

    def path(self, role: str) -> Path:
        return self.folder / self.layout.files[role].rstrip("/")


def locate(files: DatasetFiles, layouts: Sequence[Layout]) -> Located:
    """The first complete layout, else the first started one, else one error listing every place tried,
    with the reader's `source` (which archives to get and where to extract them)."""
    candidates = [(layout, folder) for layout in layouts for folder in layout.places(files.root)]
    for test in (Layout.complete, Layout.started):
        for layout, folder in candidates:
            if test(layout, folder):
                return Located(layout, folder)
    tried = "; ".join(_describe(layout) for layout in layouts)
    raise DatasetError(
        f"{files.dataset}: no dataset files under {files.root}; looked for {tried}; {files.source}, "
        "or set --data-root / UNSEEN_DATA"
    )


def _exists(folder: Path, relative: str) -> bool:
    path = folder / relative.rstrip("/")
    return path.is_dir() if relative.endswith("/") else path.is_file()


def _describe(layout: Layout) -> str:
    """`images.txt + images/ in CUB_200_2011/ or in the root itself (as CUB_200_2011.tgz extracts)`."""
    places = " or ".join(f"{name}/" if name else "the root itself" for name in layout.folders)
    return f"{' + '.join(layout.files.values())} in {places} ({layout.description})"
