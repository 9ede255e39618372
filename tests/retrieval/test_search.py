"""`unseen index build/add/info` and `unseen search` on the command line: tables, JSON lines, one-line errors."""

import json
import sys

import pytest

from unseen.cli import main


def run(monkeypatch, capsys, *args):
    """(exit code, stdout, stderr) of `unseen ARGS`, in this process."""
    monkeypatch.setattr(sys, "argv", ["unseen", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def index(tmp_path, tiny_run, gallery, monkeypatch, capsys):
    code, out, err = run(monkeypatch, capsys, "index", "build", tiny_run, gallery, "--out", tmp_path / "index",
                         "--no-progress")
    assert code == 0, err
    assert f"{tmp_path / 'index'}: flat index of 24 images (8-d); 24 added" in out
    assert f"skipped 2 unreadable images, listed in {tmp_path / 'index' / 'skipped.csv'}" in err
    return tmp_path / "index"


def test_search_prints_a_table_of_path_label_similarity(index, gallery, monkeypatch, capsys):
    query = gallery / "g02" / "3.png"
    code, out, err = run(monkeypatch, capsys, "search", index, query, "-k", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"query: {query}" and lines[1].split() == ["rank", "cosine", "label", "path"]
    assert lines[2].split() == ["1", "1.0000", "g02", str(query)] and len(lines) == 5


def test_search_json_lines_for_a_folder_of_queries_skipping_unreadable_ones(index, gallery, monkeypatch, capsys):
    code, out, err = run(monkeypatch, capsys, "search", index, gallery / "g01", "--k", "2", "--json")
    assert code == 0, err
    results = [json.loads(line) for line in out.splitlines()]
    assert len(results) == 6 and "skipped" in err and "cut.jpg" in err
    for result in results:
        assert [hit["rank"] for hit in result["hits"]] == [1, 2]
        assert result["hits"][0]["path"] == result["query"] and result["hits"][0]["label"] == "g01"
        assert set(result["hits"][0]) == {"rank", "row", "path", "label", "similarity"}


def test_add_and_info(index, tmp_path, monkeypatch, capsys):
    from products_run import write_patterns

    write_patterns(tmp_path / "more", 2, seed=9, prefix="m")
    code, out, err = run(monkeypatch, capsys, "index", "add", index, tmp_path / "more", "--no-progress")
    assert code == 0, err and "36 images" in out
    code, out, _ = run(monkeypatch, capsys, "index", "info", index)
    info = json.loads(out)
    assert info["count"] == 36 and info["generation"] == 2 and info["kind"] == "flat"


def test_errors_are_one_line_and_exit_2(index, tmp_path, tiny_run, gallery, monkeypatch, capsys):
    code, _, err = run(monkeypatch, capsys, "search", tmp_path, gallery / "g00" / "0.png")
    assert code == 2 and err.startswith(f"error: {tmp_path}: not an unseen index (no index.json)")
    code, _, err = run(monkeypatch, capsys, "search", index, tmp_path / "nothing.png")
    assert code == 2 and "nothing.png: no such query image" in err
    code, _, err = run(monkeypatch, capsys, "index", "build", tiny_run, gallery, "--out", tmp_path / "x",
                       "--kind", "annoy", "--no-progress")
    assert code == 2 and "--kind: expected one of flat, ivf, hnsw, got 'annoy'" in err
    manifest = index / "manifest.1.csv"
    manifest.write_text(manifest.read_text() + "24,/elsewhere.png,x\n")
    code, _, err = run(monkeypatch, capsys, "search", index, gallery / "g00" / "0.png")
    assert code == 2 and "manifest.1.csv: changed since the index was written" in err and len(err.splitlines()) == 1
