"""What to index or cluster: the images of a folder (recursively) or the rows of a CSV manifest, with optional labels.

A folder's images are labelled by their first sub-folder (the `<class>/<image>` layout the training reader uses);
images directly in the folder have no label. A CSV manifest has a header with a `path` column and optionally a
`label` column (other columns, such as a training manifest's `split`, are ignored); relative paths are relative
to the manifest's folder. A listed file that is missing is not an error here: it is skipped and listed with the
undecodable ones when embedding.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from unseen.artifact import image_files
from unseen.data.folder import IMAGE_SUFFIXES
from unseen.errors import DatasetError


@dataclass(frozen=True)
class Item:
    """One image to embed: its path (absolute) and its label ("" when unknown)."""

    path: str
    label: str = ""


def list_items(source: str | Path, *, folder_labels: bool = True) -> list[Item]:
    """The images of `source`: a folder (every image file under it, sorted by path) or a `.csv` manifest."""
    source = Path(source)
    if source.is_dir():
        root = source.resolve()
        files = image_files(root)
        if not files:
            raise DatasetError(f"{source}: no image files ({' '.join(IMAGE_SUFFIXES)}) under it")
        return [Item(path, _folder_label(root, Path(path)) if folder_labels else "") for path in files]
    if source.suffix.lower() == ".csv" and source.is_file():
        return read_manifest(source)
    if source.is_file():
        raise DatasetError(f"{source}: expected a folder of images or a .csv manifest with a path column")
    raise DatasetError(f"{source}: no such folder or manifest")


def _folder_label(root: Path, path: Path) -> str:
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else ""


def read_manifest(manifest: Path) -> list[Item]:
    """The rows of a CSV manifest with the columns `path[,label]` (a header row first)."""
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [column.strip().lower() for column in next(reader, [])]
            if "path" not in header:
                raise DatasetError(f"{manifest}: line 1: expected a header with a 'path' column (and optionally "
                                   f"'label'), got '{','.join(header)}'")
            path_at, label_at = header.index("path"), header.index("label") if "label" in header else None
            items = []
            for row in reader:
                if not any(field.strip() for field in row):
                    continue
                if len(row) != len(header):
                    raise DatasetError(f"{manifest}: line {reader.line_num}: expected {len(header)} fields "
                                       f"({','.join(header)}), got {len(row)}")
                path = row[path_at].strip()
                if not path:
                    raise DatasetError(f"{manifest}: line {reader.line_num}: empty path")
                label = row[label_at].strip() if label_at is not None else ""
                items.append(Item(str((manifest.parent / path).resolve()), label))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DatasetError(f"{manifest}: cannot read ({error})") from None
    if not items:
        raise DatasetError(f"{manifest}: no rows after the header")
    return items
