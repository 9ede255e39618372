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


@app.command()
def benchmark(
    spec_or_action: Annotated[str, typer.Argument(
        metavar="SPEC | summarize", help="a benchmark spec (YAML) to run, or `summarize` followed by its folder")],
    folder: Annotated[Path | None, typer.Argument(help="summarize: the benchmark folder (its --out)")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="benchmark folder (default runs/benchmark-<spec>)")] = None,
    jobs: Annotated[int, typer.Option(help="cells trained at once (pack several on one GPU)")] = 1,
    device: Annotated[str | None, typer.Option(help="train.device of every cell, e.g. cuda")] = None,
    only: Annotated[list[str] | None, typer.Option(
        help="run only cells matching arm=, loss=, method= (with its knob values and controls) or seed= "
        "(repeatable)")] = None,
    markdown: Annotated[Path | None, typer.Option(help="summarize: write the tables to this Markdown file")] = None,
    figures: Annotated[Path | None, typer.Option(help="summarize: folder of the PNG figures")] = None,
    progress: Annotated[bool, typer.Option(help="progress bar")] = True,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="list the cells runnable now (finished, to resume, new) and the knob choices still pending; "
        "train nothing, write nothing")] = False,
) -> None:
    """Run a benchmark grid (finished cells are skipped, so it resumes), or summarize a finished folder."""
    from unseen.benchmark import cell_state, load_spec, run_benchmark, runnable, summarize

    if spec_or_action == "summarize":
        if folder is None:
            raise ConfigError("benchmark summarize: give the benchmark folder, e.g. unseen benchmark summarize runs/b")
        if not (folder / "spec.yaml").is_file():
            raise ConfigError(f"{folder}: not a benchmark folder (no spec.yaml; run `unseen benchmark SPEC` first)")
        spec = load_spec(folder / "spec.yaml")
        target = markdown or folder / "summary.md"
        command = "unseen " + " ".join(sys.argv[1:])
        text = summarize(spec, folder, figures or target.parent / "figures", target.parent, command)
        from unseen.files import write_text_atomic

        write_text_atomic(target, text)
        typer.echo(text)
        typer.echo(f"written: {target}")
        return
    spec_path = Path(spec_or_action)
    spec = load_spec(spec_path)
    folder = out or Path("runs") / f"benchmark-{spec_path.stem}"
    if dry_run:
        now = runnable(spec, folder, _cell_filter(only))
        states = [(cell_state(folder, cell), cell.key) for cell in now.cells]
        for state, key in states:
            typer.echo(f"{state:<8} {key}")
        counts = {s: sum(state == s for state, _ in states) for s in ("finished", "resume", "new")}
        typer.echo(f"{len(states)} cells runnable now in {folder}: {counts['finished']} finished, "
                   f"{counts['resume']} to resume, {counts['new']} new")
        for pending in now.pending_knobs:
            typer.echo(f"knob not chosen yet: {pending} (its other seeds and controls follow the choice)")
        return
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.yaml").write_text(spec_path.read_text())  # the spec travels with its cells, for summarize
    (folder / "spec.source").write_text(f"{spec_path}\n")
    result = run_benchmark(spec, folder, jobs=jobs, device=device, progress=progress, only=_cell_filter(only))
    typer.echo(f"{len(result['finished'])} cells run, {len(result['failed'])} failed; folder: {folder}")
    for key in result["failed"]:
        typer.echo(f"failed: {key}", err=True)
    if result["failed"]:
        raise typer.Exit(1)


def _cell_filter(only: list[str] | None):
    if not only:
        return None
    wanted: dict[str, set[str]] = {}
    for item in only:
        key, sep, value = item.partition("=")
        if not sep or key not in ("arm", "loss", "method", "seed"):
            raise ConfigError(f"--only: expected arm=, loss=, method= or seed=, got {item!r}")
        wanted.setdefault(key, set()).add(value)
    def matches(cell, key: str, values: set[str]) -> bool:  # a method matches its knob and control cells too
        names = {cell.method, cell.family, *([cell.control_of] if cell.control_of else [])} if key == "method" else \
            {str(getattr(cell, key))}
        return bool(names & values)

    return lambda cell: all(matches(cell, key, values) for key, values in wanted.items())


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


# Retrieval products (issue #14): index, search, cluster, serve, report. The substance is in unseen.retrieval and
# unseen.reporting; docs/products.md shows them in use.
index_app = typer.Typer(no_args_is_help=True, help="Build and grow gallery indexes of embedded images.")
app.add_typer(index_app, name="index")
Images = Annotated[Path, typer.Argument(help="a folder of images (recursively) or a CSV manifest (path[,label])")]
Progress = Annotated[bool, typer.Option(help="progress bars")]
Checkpoint = Annotated[str, typer.Option("--checkpoint", help="best or last")]
FolderLabels = Annotated[bool, typer.Option(help="label a folder's images by their first sub-folder")]


def _index_summary(report: Any, out: Path) -> None:
    index = report.index
    typer.echo(f"{out}: {index.kind} index of {index.count} images ({index.dim}-d); {report.added} added in "
               f"{report.seconds:.1f} s" + (f", {report.already_indexed} already indexed" if report.already_indexed
                                            else ""))
    if report.skipped:
        typer.echo(f"skipped {len(report.skipped)} unreadable images, listed in {out / 'skipped.csv'}", err=True)
    if index.info.get("recall@10") is not None:
        typer.echo(f"recall@10 against exact search: {index.info['recall@10']:.4f} (on up to 1000 gallery images)")


def _interrupted(folder: Path) -> None:
    typer.echo(f"interrupted: the images embedded so far are kept in {folder / 'partial'}; run the same command "
               "again to continue", err=True)
    sys.exit(130)


@index_app.command("build")
def index_build(
    run_dir: Annotated[Path, typer.Argument(help="run directory (or a checkpoint file)")],
    images: Images,
    out: Annotated[Path, typer.Option("--out", help="the index folder to write")],
    kind: Annotated[str, typer.Option(help="flat (exact), ivf or hnsw (approximate, for large galleries)")] = "flat",
    nlist: Annotated[int | None, typer.Option(help="IVF cells (default 4·√N)")] = None,
    nprobe: Annotated[int | None, typer.Option(help="IVF cells searched per query (default nlist/16)")] = None,
    ef_search: Annotated[int | None, typer.Option(help="HNSW search breadth (default 64)")] = None,
    checkpoint: Checkpoint = "best",
    batch_size: Annotated[int, typer.Option(help="images per forward pass")] = 256,
    workers: Annotated[int, typer.Option(help="image-decoding worker processes")] = 0,
    folder_labels: FolderLabels = True,
    progress: Progress = True,
) -> None:
    """Embed a folder or manifest with a run's checkpoint and write a searchable index (resumable)."""
    import unseen
    from unseen.retrieval.index import build_index
    from unseen.retrieval.sources import list_items

    items = list_items(images, folder_labels=folder_labels)
    embedder = unseen.load(run_dir, checkpoint)
    try:
        report = build_index(embedder, items, out, kind=kind, nlist=nlist, nprobe=nprobe, ef_search=ef_search,
                             source=str(images), batch_size=batch_size, num_workers=workers, progress=progress,
                             log=typer.echo)
    except KeyboardInterrupt:
        _interrupted(out)
    _index_summary(report, out)


@index_app.command("add")
def index_add(
    index_dir: Annotated[Path, typer.Argument(help="an index folder")],
    images: Images,
    run: Annotated[Path | None, typer.Option("--run", help="the run folder, if it moved since the build")] = None,
    batch_size: Annotated[int, typer.Option(help="images per forward pass")] = 256,
    workers: Annotated[int, typer.Option(help="image-decoding worker processes")] = 0,
    folder_labels: FolderLabels = True,
    progress: Progress = True,
) -> None:
    """Append the images of a folder or manifest that the index does not hold yet (same checkpoint only)."""
    from unseen.retrieval.index import GalleryIndex, add_to_index, load_recorded_model
    from unseen.retrieval.sources import list_items

    items = list_items(images, folder_labels=folder_labels)
    embedder = load_recorded_model(GalleryIndex.load(index_dir), run)
    try:
        report = add_to_index(index_dir, embedder, items, source=str(images), batch_size=batch_size,
                              num_workers=workers, progress=progress, log=typer.echo)
    except KeyboardInterrupt:
        _interrupted(index_dir)
    _index_summary(report, index_dir)


@index_app.command("info")
def index_info(index_dir: Annotated[Path, typer.Argument(help="an index folder")]) -> None:
    """Print what an index holds and which checkpoint embedded it."""
    import json

    from unseen.retrieval.index import GalleryIndex

    info = GalleryIndex.load(index_dir).info
    typer.echo(json.dumps({key: value for key, value in info.items() if key != "manifest_sha256"}, indent=2))


@app.command()
def search(
    index_dir: Annotated[Path, typer.Argument(help="an index folder")],
    queries: Annotated[list[Path], typer.Argument(help="query image files or folders")],
    k: Annotated[int, typer.Option("-k", "--k", help="results per query")] = 10,
    json_lines: Annotated[bool, typer.Option("--json", help="one JSON object per query instead of a table")] = False,
    run: Annotated[Path | None, typer.Option("--run", help="the run folder, if it moved since the build")] = None,
) -> None:
    """The k most similar gallery images of each query: path, label, cosine similarity."""
    from unseen.retrieval.search import Searcher, format_json_lines, format_table

    results, skipped = Searcher.open(index_dir, run=run).search_files(queries, k)
    for path, reason in skipped:
        typer.echo(f"skipped {path}: {reason}", err=True)
    typer.echo(format_json_lines(results) if json_lines else format_table(results))


@app.command()
def cluster(
    run_dir: Annotated[Path, typer.Argument(help="run directory (or a checkpoint file)")],
    images: Images,
    out: Annotated[Path, typer.Option("--out", help="folder for clusters.csv, the contact sheets, index.html")],
    k: Annotated[str, typer.Option("--k", help="number of clusters, or auto (silhouette over --k-range)")] = "auto",
    k_range: Annotated[str, typer.Option("--k-range", help="MIN:MAX for --k auto")] = "2:30",
    checkpoint: Checkpoint = "best",
    batch_size: Annotated[int, typer.Option(help="images per forward pass")] = 256,
    folder_labels: FolderLabels = True,
    progress: Progress = True,
) -> None:
    """k-means on the embeddings of a folder or manifest: clusters.csv, a contact sheet per cluster, a page."""
    import unseen
    from unseen.retrieval.cluster import cluster_images
    from unseen.retrieval.sources import list_items

    if k != "auto" and not k.isdigit():
        raise ConfigError(f"--k: expected a positive integer or auto, got {k!r}")
    low, _, high = k_range.partition(":")
    if not (low.isdigit() and high.isdigit()):
        raise ConfigError(f"--k-range: expected MIN:MAX, e.g. 2:30, got {k_range!r}")
    items = list_items(images, folder_labels=folder_labels)
    report = cluster_images(unseen.load(run_dir, checkpoint), items, out, k=None if k == "auto" else int(k),
                            k_range=(int(low), int(high)), batch_size=batch_size, progress=progress,
                            source=str(images), log=typer.echo)
    typer.echo(f"{out}: {report.k} clusters of {len(report.paths)} images (K {report.criterion}); "
               f"{out / 'clusters.csv'}, {out / 'index.html'}")
    if report.scores:
        typer.echo("against the labels: " + ", ".join(f"{key} {value:.4f}" for key, value in report.scores.items()
                                                      if isinstance(value, float)))
    if report.skipped:
        typer.echo(f"skipped {len(report.skipped)} unreadable images, listed in {out / 'skipped.csv'}", err=True)


@app.command()
def serve(
    index_dir: Annotated[Path, typer.Argument(help="an index folder")],
    host: Annotated[str, typer.Option(help="address to bind; 127.0.0.1 keeps it on this machine")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    run: Annotated[Path | None, typer.Option("--run", help="the run folder, if it moved since the build")] = None,
    max_upload_mb: Annotated[float, typer.Option(help="largest accepted upload, in MB")] = 10.0,
    max_pixels: Annotated[int, typer.Option(help="largest accepted upload, in decoded pixels")] = 40_000_000,
    max_k: Annotated[int, typer.Option(help="largest k a request may ask for")] = 100,
    access_log: Annotated[bool, typer.Option(help="log every request")] = True,
) -> None:
    """The web page and JSON API over an index (FastAPI + uvicorn)."""
    from unseen.retrieval.search import Searcher
    from unseen.retrieval.server import Limits
    from unseen.retrieval.server import serve as run_server

    if max_upload_mb <= 0 or max_pixels <= 0 or max_k <= 0:
        raise ConfigError("--max-upload-mb, --max-pixels and --max-k: expected positive numbers")
    searcher = Searcher.open(index_dir, run=run)
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"warning: binding {host}: the page and API are reachable from other machines", err=True)
    typer.echo(f"serving {index_dir} ({searcher.index.count} images) on http://{host}:{port}/")
    run_server(searcher, host=host, port=port,
               limits=Limits(int(max_upload_mb * 2**20), max_pixels, max_k), access_log=access_log)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="run directory")],
    out: Annotated[Path | None, typer.Option("--out", help="where to write (default RUN_DIR/report.html)")] = None,
    checkpoint: Checkpoint = "best",
    data_root: DataRoot = None,
    queries: Annotated[int, typer.Option(help="queries in the retrieval grid")] = 8,
    k: Annotated[int, typer.Option("-k", "--k", help="results per query in the grid")] = 8,
    map_classes: Annotated[int, typer.Option(help="test classes drawn on the 2-D map")] = 20,
    progress: Progress = True,
) -> None:
    """One self-contained report.html: curves, metrics with the protocol, a retrieval grid, a 2-D map, the config."""
    from unseen.reporting.report import render_report

    path = render_report(run_dir, out=out, which=checkpoint, data_root=data_root, queries=queries, k=k,
                         map_classes=map_classes, progress=progress)
    typer.echo(f"report: {path}")
