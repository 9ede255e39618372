"""The `unseen` command line: each command a few lines that call into the package.

Errors meant for people (bad config, missing data, unreadable checkpoint) print one line and exit 2.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from unseen.errors import CheckpointError, ConfigError, UnseenError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Deep metric learning that generalizes to unseen classes.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect configs.")
app.add_typer(config_app, name="config")

Overrides = Annotated[
    list[str] | None, typer.Argument(help="key=value overrides, e.g. loss.alpha=2", show_default=False)
]
DataRoot = Annotated[
    Path | None, typer.Option("--data-root", help="data root (else $UNSEEN_DATA, else ~/.cache/unseen)")
]


def _with_data_root(overrides: list[str] | None, data_root: Path | None) -> list[str]:
    return [*(overrides or []), *([f"data.root={data_root}"] if data_root else [])]


@app.command()
def train(
    config: Annotated[Path | None, typer.Argument(help="YAML config (omit with --resume)")] = None,
    overrides: Overrides = None,
    out: Annotated[Path | None, typer.Option("--out", help="run directory (default runs/<config>-<time>)")] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="continue the run in this directory")] = None,
    data_root: DataRoot = None,
    progress: Annotated[bool, typer.Option(help="progress bars")] = True,
) -> None:
    """Train an embedding; evaluates on validation while training and on the test split at the end."""
    from unseen.config import load_config
    from unseen.train.inference import check_config
    from unseen.train.trainer import Trainer

    if resume is not None:
        if config is not None or overrides or out is not None:
            raise ConfigError(
                "--resume RUN_DIR continues a run with its own config; give no CONFIG, overrides or --out"
            )
        if not (resume / "checkpoints" / "last.pt").is_file():
            raise CheckpointError(f"{resume}: no checkpoints/last.pt to resume from")
        trainer = Trainer.resume(resume, progress=progress)
    else:
        if config is None:
            raise ConfigError("train: give a CONFIG file (e.g. configs/omniglot/baseline.yaml) or --resume RUN_DIR")
        cfg = load_config(config, _with_data_root(overrides, data_root))
        check_config(cfg)
        out = out or Path("runs") / f"{config.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        if (out / "checkpoints" / "last.pt").exists():
            raise CheckpointError(f"{out}: already holds a run; continue it with --resume {out} or pick another --out")
        trainer = Trainer(cfg, out, progress=progress)
    typer.echo(f"run dir: {trainer.run_dir}")
    results = trainer.fit()
    _print_metrics(f"test ({results['selection']})", results["test"])
    typer.echo(f"metrics: {trainer.run_dir / 'metrics.json'}")


@app.command()
def evaluate(
    run_dir: Annotated[Path | None, typer.Argument(help="run directory: evaluates its best checkpoint on test")] = None,
    embeddings: Annotated[Path | None, typer.Option("--embeddings", help="N×D .npy instead of a run")] = None,
    labels: Annotated[Path | None, typer.Option("--labels", help="N .npy of integer labels")] = None,
    query_mask: Annotated[Path | None, typer.Option("--query-mask", help="N .npy bool: rows used as queries")] = None,
    gallery_mask: Annotated[
        Path | None, typer.Option("--gallery-mask", help="N .npy bool: rows in the gallery")
    ] = None,
    recall_at: Annotated[str, typer.Option("--recall-at", help="comma-separated K")] = "1,2,4,8",
    checkpoint: Annotated[str, typer.Option(help="best or last")] = "best",
    json_out: Annotated[Path | None, typer.Option("--json", help="write the metrics here")] = None,
    data_root: DataRoot = None,
    progress: Annotated[bool, typer.Option(help="progress bars")] = True,
) -> None:
    """Metrics of a run's checkpoint on its test split, or of saved embeddings."""
    ks = _parse_ks(recall_at)
    if embeddings is not None or labels is not None:
        if run_dir is not None or embeddings is None or labels is None:
            raise ConfigError("evaluate: give either RUN_DIR or both --embeddings and --labels")
        from unseen.evaluation import evaluate_files

        metrics = evaluate_files(embeddings, labels, query_mask, gallery_mask, recall_at=ks, progress=progress)
        title = str(embeddings)
    else:
        if run_dir is None:
            raise ConfigError("evaluate: give a RUN_DIR or --embeddings E.npy --labels L.npy")
        from unseen.train.inference import load_run

        run = load_run(run_dir, checkpoint, data_root=data_root, recall_at=ks)
        metrics = run.components.evaluate(run.components.splits.test, progress=progress)
        title = f"{run_dir} ({checkpoint} checkpoint, test split)"
    _print_metrics(title, metrics)
    if json_out is not None:
        json_out.write_text(json.dumps(metrics, indent=2) + "\n")


@app.command()
def embed(
    run_dir: Annotated[Path, typer.Argument(help="run directory")],
    out: Annotated[Path, typer.Option("--out", help="where to write the N×D .npy")],
    split: Annotated[str, typer.Option(help="train, val or test")] = "test",
    checkpoint: Annotated[str, typer.Option(help="best or last")] = "best",
    data_root: DataRoot = None,
    progress: Annotated[bool, typer.Option(help="progress bars")] = True,
) -> None:
    """Embed a split with a run's checkpoint; labels go beside it as <out>.labels.npy."""
    from unseen.train.inference import load_run

    if split not in ("train", "val", "test"):
        raise ConfigError(f"--split: expected train, val or test, got {split!r}")
    run = load_run(run_dir, checkpoint, data_root=data_root)
    table = getattr(run.components.splits, split)
    vectors = run.components.embed(table, progress=progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, vectors)
    labels_path = out.with_name(out.stem + ".labels.npy")
    np.save(labels_path, table.labels)
    typer.echo(f"{out}: {vectors.shape[0]}×{vectors.shape[1]} embeddings; labels: {labels_path}")


@config_app.command("show")
def config_show(
    config: Annotated[Path, typer.Argument(help="YAML config")],
    overrides: Overrides = None,
) -> None:
    """Print the resolved, validated config."""
    from unseen.config import dump_config, load_config
    from unseen.train.inference import check_config

    cfg = load_config(config, overrides or [])
    check_config(cfg)
    typer.echo(dump_config(cfg), nl=False)


def _parse_ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(k) for k in text.split(",") if k.strip())
    except ValueError:
        raise ConfigError(f"--recall-at: expected comma-separated positive integers, got {text!r}") from None
    if not ks or min(ks) < 1:
        raise ConfigError(f"--recall-at: expected comma-separated positive integers, got {text!r}")
    return ks


def _print_metrics(title: str, metrics: dict[str, Any]) -> None:
    typer.echo(title)
    for key, value in metrics.items():
        typer.echo(f"  {key:<14} {value:.4f}" if isinstance(value, float) else f"  {key:<14} {value}")


def main() -> None:
    """Entry point: run the app; people-facing errors become one line on stderr and exit code 2."""
    try:
        app(standalone_mode=False)
    except UnseenError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted: the last checkpoint is intact; continue with `unseen train --resume RUN_DIR`",
                   err=True)
        sys.exit(130)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except Exception as error:
        import click

        if isinstance(error, click.ClickException):
            error.show()
            sys.exit(2)
        raise
