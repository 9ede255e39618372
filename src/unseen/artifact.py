"""The run artifact: a trained embedder loaded from its run folder (or one checkpoint file) alone.

    embedder = unseen.load("runs/omniglot", which="best")
    vectors = embedder.embed("photos/")            # N×D unit vectors, one per image file under the folder

A checkpoint carries the model spec, the weights, the training class names, the config and the commit, so
loading never reads, scans or splits a dataset, and a run folder can be moved or copied anywhere. Every problem
(a missing, unknown or truncated checkpoint; one whose spec is not the run's) is one CheckpointError naming the
file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from unseen.config import Config, load_config, validate_config
from unseen.data.base import Table
from unseen.data.folder import IMAGE_SUFFIXES
from unseen.data.transforms import Transform
from unseen.embedding import embed_table
from unseen.errors import CheckpointError, ConfigError, DatasetError, UnseenError
from unseen.models.network import EmbeddingModel, build_model
from unseen.models.spec import ModelSpec
from unseen.train.checkpoint import load_checkpoint
from unseen.train.components import eval_transform

ImageInput = str | Path | np.ndarray | Image.Image
PROGRESS_FROM = 2048  # images: a progress bar by default from this many on


@dataclass(frozen=True)
class EmbeddedFiles:
    """`embed_files`' result: the vectors of the files that decoded, those files, and the ones that did not
    (path, reason)."""

    vectors: np.ndarray
    paths: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]


class Embedder:
    """A trained network in eval mode with its eval transform: images in, L2-normalized embeddings out."""

    def __init__(self, model: EmbeddingModel, spec: ModelSpec, *, class_names: Sequence[str] = (),
                 config: Config | None = None, commit: str = "unknown", checkpoint: Path | None = None,
                 step: int | None = None, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.spec = spec
        self.transform: Transform = eval_transform(spec)
        self.class_names = tuple(class_names)
        self.config = config
        self.commit = commit
        self.checkpoint = checkpoint
        self.step = step
        self._fingerprint: str | None = None

    @property
    def embedding_dim(self) -> int:
        return self.spec.embedding_dim

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the checkpoint file (of the weights when built in memory): what an index records to refuse
        queries embedded by another network."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            if self.checkpoint is not None and self.checkpoint.is_file():
                with self.checkpoint.open("rb") as file:
                    for block in iter(lambda: file.read(1 << 20), b""):
                        digest.update(block)
            else:
                for key, value in sorted(self.model.state_dict().items()):
                    digest.update(key.encode())
                    digest.update(value.detach().cpu().contiguous().numpy().tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def embed(self, images: ImageInput | Sequence[ImageInput], *, batch_size: int = 256,
              progress: bool | None = None, num_workers: int = 0) -> np.ndarray:
        """N×D float32 unit vectors of `images`: a folder (every image file under it, recursively, in sorted path
        order), one image file, a list of files, a list of PIL images or H×W(×C) uint8 arrays, or an N×H×W(×C)
        uint8 array. An unreadable file is a DatasetError naming it (`embed_files` skips and lists them instead)."""
        table = self._table(images)
        show = len(table) >= PROGRESS_FROM if progress is None else progress
        return self.embed_table(table, batch_size=batch_size, progress=show, num_workers=num_workers)

    def embed_table(self, table: Table, *, batch_size: int = 256, progress: bool = False,
                    num_workers: int = 0) -> np.ndarray:
        """The embeddings of a sample table's images, in table order."""
        return embed_table(self.model, table, self.transform, batch_size=batch_size, device=self.device,
                           num_workers=num_workers, progress=progress, description=f"embed {table.name}")

    def embed_files(self, paths: Sequence[str | Path], *, batch_size: int = 256, progress: bool | None = None,
                    num_workers: int = 0) -> EmbeddedFiles:
        """Like `embed` on files, but a file that cannot be decoded is left out and reported, never fatal."""
        paths = [str(p) for p in paths]
        failed: list[tuple[str, str]] = []
        good: list[str] = []
        for path in paths:
            reason = _unreadable(path)
            if reason:
                failed.append((path, reason))
            else:
                good.append(path)
        vectors = self.embed(good, batch_size=batch_size, progress=progress, num_workers=num_workers) if good else \
            np.zeros((0, self.embedding_dim), dtype=np.float32)
        return EmbeddedFiles(vectors, tuple(good), tuple(failed))

    def _table(self, images: ImageInput | Sequence[ImageInput]) -> Table:
        if isinstance(images, str | Path):
            path = Path(images)
            if path.is_dir():
                files = image_files(path)
                if not files:
                    raise DatasetError(f"{path}: no image files ({' '.join(IMAGE_SUFFIXES)}) under it")
                return _files_table(files)
            if not path.is_file():
                raise DatasetError(f"{path}: no such image file or folder")
            return _files_table([str(path)])
        if isinstance(images, np.ndarray):
            return _arrays_table(list(images) if images.ndim in (3, 4) else [images])
        items = list(images)
        if not items:
            raise DatasetError("embed: no images given")
        if all(isinstance(item, str | Path) for item in items):
            return _files_table([str(item) for item in items])
        if all(isinstance(item, np.ndarray | Image.Image) for item in items):
            return _arrays_table([np.asarray(item) for item in items])
        raise TypeError("embed: expected a folder, image paths, PIL images or uint8 arrays (not a mix)")


def image_files(folder: str | Path) -> list[str]:
    """Every image file under `folder` (recursively, hidden entries skipped), sorted by path."""
    folder = Path(folder)
    return sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _files_table(paths: list[str]) -> Table:
    return Table(labels=np.zeros(len(paths), dtype=np.int64), class_names=("",), paths=tuple(paths), name="images")


def _arrays_table(arrays: list[np.ndarray]) -> Table:
    if any(a.dtype != np.uint8 for a in arrays) or any(a.ndim not in (2, 3) for a in arrays):
        raise DatasetError("embed: arrays must be H×W or H×W×C uint8 images")
    if len({a.shape for a in arrays}) != 1:
        raise DatasetError("embed: arrays of different shapes; pass them as files, or resize them first")
    return Table(labels=np.zeros(len(arrays), dtype=np.int64), class_names=("",), images=np.stack(arrays),
                 name="images")


def _unreadable(path: str) -> str | None:
    """Why `path` cannot be used as an image, or None when it decodes."""
    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        return str(error).splitlines()[0] if str(error) else type(error).__name__
    return None


def checkpoint_path(run_or_checkpoint: str | Path, which: str = "best") -> Path:
    """The checkpoint file of a run folder (`best`, falling back to `last` for runs without validation), or the
    file itself."""
    path = Path(run_or_checkpoint)
    if path.is_file():
        return path
    if which not in ("best", "last"):
        raise ConfigError(f"which: expected 'best' or 'last', got {which!r}")
    if not path.is_dir():
        raise CheckpointError(f"{path}: no run folder or checkpoint file there")
    chosen = path / "checkpoints" / f"{which}.pt"
    if which == "best" and not chosen.exists() and (path / "checkpoints" / "last.pt").exists():
        return path / "checkpoints" / "last.pt"  # runs without validation classes only have `last`
    if not chosen.exists():
        raise CheckpointError(f"{chosen}: no checkpoint there ({path} is not a finished or running unseen run)")
    return chosen


def load(run_or_checkpoint: str | Path, which: str = "best", device: str | torch.device = "cpu") -> Embedder:
    """The embedder of a run folder's `best` (by validation) or `last` checkpoint, or of a checkpoint file."""
    path = checkpoint_path(run_or_checkpoint, which)
    state = load_checkpoint(path)
    spec = ModelSpec.from_dict(state["model_spec"], str(path))
    run_config = path.parent.parent / "config.yaml"
    if path.parent.name == "checkpoints" and run_config.is_file():
        _check_against_run(spec, run_config, path)
    try:
        model = build_model(spec)
        model.load_state_dict(state["model"])
    except (RuntimeError, ValueError, KeyError, UnseenError) as error:
        raise CheckpointError(f"{path}: weights do not fit its model spec ({str(error).splitlines()[0]})") from None
    try:
        config = validate_config(state["config"], source=str(path))
    except ConfigError:
        config = None  # a config from another version of unseen does not stop inference
    return Embedder(model, spec, class_names=state.get("class_names", ()), config=config,
                    commit=state.get("commit", "unknown"), checkpoint=path, step=state.get("step"), device=device)


def _check_against_run(spec: ModelSpec, run_config: Path, path: Path) -> None:
    """A checkpoint inside a run folder must be that run's: the network its config.yaml describes."""
    try:
        config: Any = load_config(run_config)
    except ConfigError:
        return
    expected = {"backbone": config.model.backbone, "embedding_dim": config.model.embedding_dim,
                "image_size": config.data.image_size, "preset": config.data.preset}
    differing = [f"{key}: {getattr(spec, key)!r} in the checkpoint, {value!r} in {run_config.name}"
                 for key, value in expected.items() if getattr(spec, key) != value]
    if differing:
        raise CheckpointError(f"{path}: a checkpoint of another model than its run's ({'; '.join(differing)})")
