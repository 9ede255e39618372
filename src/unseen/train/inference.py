"""Open a finished (or running) run for evaluation and embedding, and check configs without data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unseen.config import Config, load_config
from unseen.errors import CheckpointError, ConfigError
from unseen.methods import build_method
from unseen.train.checkpoint import load_checkpoint
from unseen.train.trainer import Components, build_components


@dataclass
class Run:
    components: Components
    checkpoint: dict[str, Any]


def load_run(
    run_dir: str | Path, checkpoint: str = "best", *, data_root: Path | None = None,
    recall_at: tuple[int, ...] | None = None,
) -> Run:
    """The run's config, data and model with the `best` (by validation) or `last` checkpoint's weights."""
    run_dir = Path(run_dir)
    if checkpoint not in ("best", "last"):
        raise ConfigError(f"--checkpoint: expected 'best' or 'last', got {checkpoint!r}")
    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"{run_dir}: not a run directory (no config.yaml)")
    path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    if checkpoint == "best" and not path.exists() and (run_dir / "checkpoints" / "last.pt").exists():
        path = run_dir / "checkpoints" / "last.pt"  # runs without validation classes only have `last`
    state = load_checkpoint(path)
    overrides = [f"data.root={data_root}"] if data_root else []
    if recall_at:
        overrides.append(f"evaluation.recall_at=[{','.join(map(str, recall_at))}]")
    config = load_config(run_dir / "config.yaml", overrides)
    components = build_components(config)
    try:
        components.model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not fit the run's model ({str(error).splitlines()[0]})") from None
    components.model.eval()
    return Run(components, state)


def check_config(config: Config) -> None:
    """Build what a config names that needs no data (loss, miner, method, backbone) to catch errors early."""
    from unseen.models.embedder import build_embedder

    method = build_method(config, num_classes=2, embedding_dim=config.model.embedding_dim)
    model = build_embedder(config.model.model_copy(update={"pretrained": False}), in_chans=3,
                           extra_heads=method.extra_heads(), class_slices=method.class_slices())
    method.attach(model)
