"""`unseen benchmark`: the grid expands as the spec says, a killed benchmark resumes without redoing finished cells,
the summary's statistics match hand-computed values, and no selection ever reads a test metric."""

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

import unseen.benchmark.runner as runner_module
from unseen.benchmark import expand, load_spec, run_benchmark, summarize
from unseen.benchmark.spec import CONTROL, PILOT
from unseen.benchmark.summary import choose_knobs, method_rows, paired_gain, pilot_rows, read_cells
from unseen.config import validate_config
from unseen.errors import ConfigError

BASE = {"data": {"name": "folder", "image_size": 12, "val_fraction": 0.25, "preset": "small"},
        "model": {"channels": [4, 8], "embedding_dim": 8},
        "sampler": {"classes_per_batch": 2, "samples_per_class": 2},
        "train": {"validate_every": 2, "threads": 1}, "evaluation": {"metrics": ["recall", "map@r"],
                                                                      "recall_at": [1]}}
SPEC = {
    "name": "tiny",
    "config": "base.yaml",
    "seeds": [0, 1],
    "knob_seeds": [0],
    "arms": {"short": {"steps": 4, "set": {"data.jitter": False}}, "long": {"steps": 6}},
    "losses": {"ms": {"loss": {"name": "MultiSimilarityLoss"}, "miner": {"name": "MultiSimilarityMiner"}},
               "contrastive": {"loss": {"name": "ContrastiveLoss"}, "miner": {"name": None}}},
    "methods": {"baseline": {}, "ecaml": {"method": {"name": "ecaml"}},
                "mic": {"method": {"name": "sharing", "variant": "mic", "num_shared_clusters": 2}}},
    "knobs": {"ecaml": {"method.confusion_weight": [0.01, 0.1, 1.0]}},
    "controls": {CONTROL: ["mic"]},
    "grid": [{"arms": ["short", "long"], "losses": ["ms"]}, {"arms": ["short"], "losses": ["contrastive"],
                                                             "methods": ["baseline"]}],
    "pilot": {"steps": {"short": 8}, "losses": ["ms"], "set": {"schedule.name": "constant"}},
}


@pytest.fixture
def spec_file(tmp_path):
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for c in range(16):
        (root / f"class{c}").mkdir(parents=True)
        pattern = rng.integers(0, 256, size=(12, 12))
        for i in range(4):
            image = np.clip(pattern + rng.normal(0, 30, size=(12, 12)), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(root / f"class{c}" / f"{i}.png")
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "base.yaml").write_text(yaml.safe_dump({**BASE, "data": {**BASE["data"],
                                                                                  "root": str(root)}}))
    (tmp_path / "specs" / "tiny.yaml").write_text(yaml.safe_dump(SPEC, sort_keys=False))
    return tmp_path / "specs" / "tiny.yaml"


def test_the_grid_expands_to_valid_configs(spec_file):
    spec = load_spec(spec_file)
    cells = expand(spec)
    keys = [c.key for c in cells]
    assert len(keys) == len(set(keys))
    # short/ms and long/ms: seed 0 has baseline, 3 ecaml knob values, mic; seed 1 baseline and mic (knob unchosen)
    ms = [c for c in cells if c.loss == "ms" and c.method != PILOT]
    assert len(ms) == 2 * (5 + 2)
    assert {c.method for c in ms if c.seed == 0} == {"baseline", "mic", "ecaml[confusion_weight=0.01]",
                                                     "ecaml[confusion_weight=0.1]", "ecaml[confusion_weight=1.0]"}
    assert [c.key for c in cells if c.loss == "contrastive"] == ["short/contrastive/baseline/seed0",
                                                                "short/contrastive/baseline/seed1"]
    assert [c.key for c in cells if c.method == PILOT] == ["short/ms/pilot/seed0"]
    assert keys.index("short/ms/baseline/seed1") > keys.index("short/ms/mic/seed0")  # seed-major in a block
    for cell in cells:
        config = validate_config(cell.config)
        assert config.train.seed == cell.seed
        assert config.train.steps == {"short": 4, "long": 6}[cell.arm] or cell.method == PILOT
        assert config.data.jitter == (cell.arm != "short")
    knob = next(c for c in cells if c.method == "ecaml[confusion_weight=0.1]")
    assert validate_config(knob.config).method.kwargs["confusion_weight"] == 0.1
    pilot = validate_config(next(c for c in cells if c.method == PILOT).config)
    assert pilot.train.steps == 8 and pilot.schedule.name == "constant"

    later = expand(spec, chosen={("short", "ms", "ecaml"): 0.1}, class_steps={("short", "ms", "mic", 1): 3})
    assert "short/ms/ecaml[confusion_weight=0.1]/seed1" in [c.key for c in later]
    control = next(c for c in later if c.control_of == "mic")
    assert control.key == f"short/ms/{CONTROL}_of_mic/seed1" and validate_config(control.config).train.steps == 3
    assert validate_config(control.config).method.name == "baseline"


def test_a_control_of_a_method_with_a_knob_follows_the_chosen_value(tmp_path):
    """Cells of a knob method are reported under their knob id: the control takes the chosen value's class steps,
    and waits until a value is chosen."""
    spec_path = tmp_path / "s.yaml"
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    spec_path.write_text(yaml.safe_dump({**SPEC, "knobs": {"mic": {"method.decorrelation_weight": [10, 100]}}},
                                        sort_keys=False))
    spec = load_spec(spec_path)
    steps = {("short", "ms", "mic[decorrelation_weight=10]", 0): 3,
             ("short", "ms", "mic[decorrelation_weight=100]", 0): 5}
    assert not [c for c in expand(spec, class_steps=steps) if c.control_of]
    chosen = {("short", "ms", "mic"): 100}
    (control,) = [c for c in expand(spec, chosen=chosen, class_steps=steps) if c.control_of]
    assert control.key == f"short/ms/{CONTROL}_of_mic/seed0" and validate_config(control.config).train.steps == 5


def test_bad_specs_are_one_line_errors(tmp_path):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({**SPEC, "grid": [{"arms": ["nope"]}]}, sort_keys=False))
    with pytest.raises(ConfigError, match=r"s\.yaml: grid: unknown arm 'nope'; known: short, long"):
        load_spec(tmp_path / "s.yaml")
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({**SPEC, "armz": {}}))
    with pytest.raises(ConfigError, match=r"t\.yaml: unknown key 'armz'"):
        load_spec(tmp_path / "t.yaml")


def test_a_killed_benchmark_resumes_without_redoing_finished_cells(spec_file, tmp_path, monkeypatch):
    spec = load_spec(spec_file)
    out = tmp_path / "out"
    only_baseline = lambda cell: cell.method == "baseline" and cell.loss == "ms" and cell.arm == "short"  # noqa: E731
    first = run_benchmark(spec, out, progress=False, only=only_baseline)
    assert first == {"finished": ["short/ms/baseline/seed0", "short/ms/baseline/seed1"], "failed": []}
    finished_metrics = (out / "short/ms/baseline/seed0/metrics.json").read_text()

    # seed 1 killed after its first checkpoint: metrics.json gone, last.pt kept -> it is continued, not restarted
    (out / "short/ms/baseline/seed1/metrics.json").unlink()
    calls = []
    real = runner_module.run_cell

    def recording(out_, cell, device=None):
        calls.append((cell.key, runner_module.train_command(out_, cell, device)[4:6]))
        return real(out_, cell, device)

    monkeypatch.setattr(runner_module, "run_cell", recording)
    second = run_benchmark(spec, out, progress=False, only=only_baseline)
    assert calls == [("short/ms/baseline/seed1", ["--resume", str(out / "short/ms/baseline/seed1")])]
    assert second["failed"] == [] and (out / "short/ms/baseline/seed1/metrics.json").is_file()
    assert (out / "short/ms/baseline/seed0/metrics.json").read_text() == finished_metrics


def fake_cell(out, key, *, val, test, map_r=0.5, steps=4, class_steps=None, trace=()):
    run = out / key
    run.mkdir(parents=True)
    metrics = {"val": {"recall@1": val}, "test": {"recall@1": test, "recall@4": test, "map@r": map_r,
                                                  "r_precision": 0.4, "nmi": 0.8, "f1": 0.3},
               "test_last": {"recall@1": test - 0.01}, "steps": steps, "commit": "abc", "wall_seconds": 60.0,
               "steps_by_stream": {"class": class_steps or steps}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    history = [{"kind": "val", "step": s, "recall@1": v} for s, v in trace]
    (run / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    return run


def test_summary_statistics_match_hand_computed_values(spec_file, tmp_path):
    spec = load_spec(spec_file)
    out = tmp_path / "out"
    for seed, (b, m) in enumerate([(0.80, 0.83), (0.82, 0.84)]):
        fake_cell(out, f"short/ms/baseline/seed{seed}", val=0.9, test=b, map_r=0.40)
        fake_cell(out, f"short/ms/mic/seed{seed}", val=0.9, test=m, map_r=0.41, steps=8, class_steps=5)
    rows = {r["id"]: r for r in method_rows(spec, read_cells(out), "short", "ms", {})}
    assert rows["mic"]["recall@1"] == [0.83, 0.84] and rows["mic"]["class_steps"] == [5]
    mean, se, verdict = rows["mic"]["gain"]
    # differences 0.03 and 0.02: mean 0.025, sample std 0.00707, SE 0.005 -> 0.025 > 2 × 0.005: helps
    assert mean == pytest.approx(0.025) and se == pytest.approx(0.005) and verdict == "helps"
    assert rows["mic"]["gain_map"][0] == pytest.approx(0.01)
    assert paired_gain([0.01, -0.01, 0.0])[2] == "no gain"
    assert paired_gain([-0.02, -0.03])[2] == "hurts"
    assert paired_gain([0.05])[1:] == (pytest.approx(math.nan, nan_ok=True), "one seed")
    text = summarize(spec, out, tmp_path / "figures", tmp_path, "unseen benchmark summarize out")
    assert "| mic | 2 | 0.8350 ± 0.0071 |" in text and "+2.50 ± 0.50 (helps)" in text
    for table in [block for block in text.split("\n\n") if block.startswith("|")]:  # well-formed tables
        widths = {line.count("|") for line in table.splitlines()}
        assert len(widths) == 1, table
    assert (tmp_path / "figures" / "curves-short-ms.png").is_file()
    assert (tmp_path / "figures" / "bars-short-ms.png").is_file()


def test_no_selection_reads_a_test_metric(spec_file, tmp_path):
    """Knob values are chosen on validation and pilots peak on validation: test numbers that point the other way
    change nothing."""
    spec = load_spec(spec_file)
    out = tmp_path / "out"
    for value, val, test in [(0.01, 0.70, 0.99), (0.1, 0.90, 0.10), (1.0, 0.80, 0.95)]:
        fake_cell(out, f"short/ms/ecaml[confusion_weight={value}]/seed0", val=val, test=test)
    records = read_cells(out)
    assert choose_knobs(spec, records)[("short", "ms", "ecaml")] == 0.1
    for record in records:  # swapping every test number for its opposite changes no choice
        record.metrics["test"] = {k: 1 - v for k, v in record.metrics["test"].items()}
    assert choose_knobs(spec, records)[("short", "ms", "ecaml")] == 0.1
    pilot = fake_cell(out, "short/ms/pilot/seed0", val=0.9, test=0.8, steps=8, trace=[(2, 0.6), (4, 0.9), (8, 0.8)])
    (pilot / "test_trace.jsonl").write_text("".join(json.dumps({"step": s, "recall@1": v}) + "\n"
                                                    for s, v in [(2, 0.99), (4, 0.5), (8, 0.7)]))
    (row,) = pilot_rows(read_cells(out))
    assert (row["val_peak_step"], row["test_at_val_peak"], row["test_end"]) == (4, 0.5, 0.7)
    assert (row["test_max_step"], row["test_max"]) == (2, 0.99)  # reported, not chosen


def test_a_chosen_knob_unlocks_the_other_seeds_and_controls_follow_their_method(spec_file, tmp_path, monkeypatch):
    spec = load_spec(spec_file)
    out = tmp_path / "out"
    ran = []

    def fake_run(out_, cell, device=None):
        ran.append(cell.key)
        score = {"ecaml[confusion_weight=1.0]": 0.95}.get(cell.method, 0.5)
        fake_cell(out_, cell.key, val=score, test=0.5, steps=6, class_steps=4 if cell.method == "mic" else None)
        return True

    monkeypatch.setattr(runner_module, "run_cell", fake_run)
    result = run_benchmark(spec, out, progress=False, only=lambda c: c.arm == "short" and c.loss == "ms")
    assert result["failed"] == []
    assert "short/ms/ecaml[confusion_weight=1.0]/seed1" in ran
    assert not any(k.startswith("short/ms/ecaml[confusion_weight=0.1]/seed1") for k in ran)
    assert f"short/ms/{CONTROL}_of_mic/seed1" in ran
    config = yaml.safe_load((out / "configs" / "short--ms--baseline_at_class_steps_of_mic--seed1.yaml").read_text()) \
        if (out / "configs").exists() else None
    assert config is None  # the fake runner writes no configs; the real one does (tested above)
    shutil.rmtree(out)


def test_a_dry_run_lists_each_cell_state_and_the_pending_knobs_and_writes_nothing(spec_file, tmp_path):
    out = tmp_path / "out"
    fake_cell(out, "short/ms/baseline/seed0", val=0.5, test=0.5)
    (out / "short/ms/baseline/seed1/checkpoints").mkdir(parents=True)
    (out / "short/ms/baseline/seed1/checkpoints/last.pt").write_bytes(b"")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    done = subprocess.run([sys.executable, "-m", "unseen", "benchmark", str(spec_file), "--out", str(out), "--dry-run",
                           "--only", "arm=short", "--only", "loss=ms"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    spec = load_spec(spec_file)
    cells = [c for c in expand(spec) if c.arm == "short" and c.loss == "ms"]  # nothing chosen: knob seeds only
    assert "finished short/ms/baseline/seed0" in lines and "resume   short/ms/baseline/seed1" in lines
    assert "new      short/ms/ecaml[confusion_weight=0.1]/seed0" in lines
    assert not any("ecaml[confusion_weight=0.1]/seed1" in line for line in lines)  # waits for the knob choice
    assert f"{len(cells)} cells runnable now in {out}: 1 finished, 1 to resume, {len(cells) - 2} new" in lines
    assert lines[-1] == "knob not chosen yet: short/ms/ecaml (its other seeds and controls follow the choice)"
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
