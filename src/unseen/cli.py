"""The `unseen` command line: each command a few lines that call into the package.

Errors meant for people (bad config, missing data, unreadable checkpoint) print one line and exit 2.
"""

from __future__ import annotations

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
    from unseen.train import distributed
    from unseen.train.components import check_config
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
        distributed.start(cfg)  # under torchrun: the processes name the run dir by rank 0's clock
        out = out or Path("runs") / f"{config.stem}-{distributed.agree(time.strftime('%Y%m%d-%H%M%S'))}"
        if (out / "checkpoints" / "last.pt").exists():
            raise CheckpointError(f"{out}: already holds a run; continue it with --resume {out} or pick another --out")
        trainer = Trainer(cfg, out, progress=progress)
    if distributed.is_main():
        typer.echo(f"run dir: {trainer.run_dir}")
    results = trainer.fit()
    if distributed.is_main():
        _print_metrics(f"test ({results['selection']})", results["test"])
        typer.echo(f"metrics: {trainer.run_dir / 'metrics.json'}")
    distributed.stop()


@app.command()
def evaluate(
    run_dir: Annotated[Path | None, typer.Argument(help="run directory: evaluates its best checkpoint on test")] = None,
    embeddings: Annotated[Path | None, typer.Option("--embeddings", help="N×D .npy instead of a run")] = None,
    labels: Annotated[Path | None, typer.Option("--labels", help="N .npy of integer labels")] = None,
    query_mask: Annotated[Path | None, typer.Option("--query-mask", help="N .npy bool: rows used as queries")] = None,
    gallery_mask: Annotated[
        Path | None, typer.Option("--gallery-mask", help="N .npy bool: rows in the gallery")
    ] = None,
    metrics: Annotated[str | None, typer.Option(
        "--metrics", help="only these, e.g. recall@1,map@r,nmi (clustering metrics are the slow part); "
        "default: the run's evaluation.metrics, or all for files")] = None,
    recall_at: Annotated[str | None, typer.Option("--recall-at", help="comma-separated K for recall@K")] = None,
    checkpoint: Annotated[str, typer.Option(help="best or last")] = "best",
    split: Annotated[str, typer.Option(help="train, val or test (a run only)")] = "test",
    json_out: Annotated[Path | None, typer.Option("--json", help="write the metrics here")] = None,
    data_root: DataRoot = None,
    progress: Annotated[bool, typer.Option(help="progress bars")] = True,
) -> None:
    """Metrics of a run's checkpoint on its test split (or another), or of saved embeddings."""
    from unseen.evaluation.catalog import parse_metric_names

    names, cutoffs = parse_metric_names(metrics) if metrics else (None, ())
    if recall_at is not None:
        cutoffs = tuple(sorted({*cutoffs, *_parse_ks(recall_at)}))
        names = names if names is None or "recall" in names else (*names, "recall")
    if embeddings is not None or labels is not None:
        if run_dir is not None or embeddings is None or labels is None:
            raise ConfigError("evaluate: give either RUN_DIR or both --embeddings and --labels")
        from unseen.evaluation import METRICS, evaluate_files, evaluation_notes_files

        cutoffs = cutoffs or (1, 2, 4, 8)
        notes = evaluation_notes_files(labels, query_mask, gallery_mask, recall_at=cutoffs)
        _print_warnings(notes)
        values = evaluate_files(embeddings, labels, query_mask, gallery_mask, recall_at=cutoffs,
                                metrics=names or METRICS, progress=progress)
        report: dict[str, Any] = {"metrics": values, "notes": notes, "protocol": notes["protocol"],
                                  "embeddings": str(embeddings)}
        title = str(embeddings)
    else:
        if run_dir is None:
            raise ConfigError("evaluate: give a RUN_DIR or --embeddings E.npy --labels L.npy")
        from unseen.evaluation.runs import evaluate_run

        report = evaluate_run(run_dir, which=checkpoint, split=split, metrics=names, recall_at=cutoffs or None,
                              data_root=data_root, progress=progress)
        _print_warnings(report["notes"])
        title = f"{run_dir} ({checkpoint} checkpoint, {split} split; {report['protocol']})"
    _print_metrics(title, report["metrics"])
    notes = report["notes"]
    typer.echo(f"queries without a positive: {notes['queries_without_positive']} "
               f"({notes['queries_without_positive_rule']}); ties: {notes['tie_break']}")
    if json_out is not None:
        from unseen.files import write_json_atomic

        write_json_atomic(json_out, report)


@app.command()
def embed(
    run_dir: Annotated[Path, typer.Argument(help="run directory (or a checkpoint file)")],
    images: Annotated[list[Path] | None, typer.Argument(
        help="image files or folders to embed; none: the run's --split", show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", help="where to write the N×D .npy")] = Path("embeddings.npy"),
    split: Annotated[str, typer.Option(help="train, val or test, when no images are given")] = "test",
    checkpoint: Annotated[str, typer.Option(help="best or last")] = "best",
    batch_size: Annotated[int, typer.Option(help="images per forward pass")] = 256,
    data_root: DataRoot = None,
    progress: Annotated[bool, typer.Option(help="progress bars")] = True,
) -> None:
    """Embed image files or folders with a run's checkpoint (paths beside it as <out>.paths.txt), or one of its
    splits (labels beside it as <out>.labels.npy)."""
    if images:
        import unseen
        from unseen.artifact import image_files

        files = [f for path in images for f in (image_files(path) if path.is_dir() else [str(path)])]
        result = unseen.load(run_dir, checkpoint).embed_files(files, batch_size=batch_size, progress=progress)
        vectors, beside = result.vectors, out.with_name(out.stem + ".paths.txt")
        beside.parent.mkdir(parents=True, exist_ok=True)
        beside.write_text("".join(f"{p}\n" for p in result.paths))
        for path, reason in result.failed:
            typer.echo(f"skipped {path}: {reason}", err=True)
    else:
        from unseen.evaluation.runs import embed_run_split

        vectors, labels = embed_run_split(run_dir, which=checkpoint, split=split, data_root=data_root,
                                          progress=progress)
        beside = out.with_name(out.stem + ".labels.npy")
        beside.parent.mkdir(parents=True, exist_ok=True)
        np.save(beside, labels)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, vectors)
    typer.echo(f"{out}: {vectors.shape[0]}×{vectors.shape[1]} embeddings; beside it: {beside}")


@config_app.command("show")
def config_show(
    config: Annotated[Path, typer.Argument(help="YAML config")],
    overrides: Overrides = None,
) -> None:
    """Print the resolved, validated config."""
    from unseen.config import dump_config, load_config
    from unseen.train.components import check_config

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


def _print_warnings(notes: dict[str, Any]) -> None:
    for warning in notes["warnings"]:
        typer.echo(f"warning: {warning}", err=True)


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
