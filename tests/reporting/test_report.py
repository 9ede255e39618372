"""The run report: one self-contained HTML page with curves, metrics, a retrieval grid, a 2-D map and the config."""

import json
import re
import shutil
import sys

import pytest

from unseen.cli import main
from unseen.reporting.report import ReportError, render_report


def test_the_report_is_self_contained_and_shows_every_part(tiny_run, tmp_path):
    path = render_report(tiny_run, out=tmp_path / "report.html")
    page = path.read_text()
    assert not re.search(r"""(src|href)=['"]?(https?:|//|file:)""", page)  # opens offline: nothing outside
    images = re.findall(r"src='data:image/png;base64,", page)
    assert len(images) > 6 * 9  # 4 figures, 6 queries × (1 + 8) thumbnails
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    for text in ("training loss", "validation metrics", "for the figure only", "Protocol:", "Selection:",
                 metrics["selection"], f"{metrics['test']['recall@1']:.4f}", "Retrieval on the unseen test classes",
                 "t-SNE", "Resolved config", "train_dir: seen"):
        assert text in page, text
    grid = page.split("Retrieval on the unseen test classes")[1].split("Map of the test embeddings")[0]
    assert grid.count("class='query'") == 6 and grid.count("<td class='hit'>") + grid.count("<td class='miss'>") == 48


def test_no_test_trace_means_no_trace_figure(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "test_trace.jsonl").unlink()
    page = render_report(run, queries=2, k=3, map_classes=3).read_text()
    assert "for the figure only" not in page and (run / "report.html").is_file()


def test_missing_data_names_data_root(tiny_run, tmp_path, monkeypatch, capsys):
    with pytest.raises(ReportError, match=r"cannot read the run's test images from .*nowhere.*pass --data-root DIR"):
        render_report(tiny_run, data_root=tmp_path / "nowhere")
    monkeypatch.setattr(sys, "argv", ["unseen", "report", str(tiny_run), "--data-root", str(tmp_path / "nowhere")])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2 and "--data-root" in capsys.readouterr().err
    with pytest.raises(ReportError, match="not a run folder"):
        render_report(tmp_path)
