"""Data-parallel training in real processes: torchrun starts two gloo processes on the CPU (tests/train/ddp_worker.py),
and their runs are compared with one process that trains on the whole batch."""

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from unseen.config import load_config
from unseen.data.base import Splits
from unseen.data.samplers import ClassBalancedBatchSampler
from unseen.errors import ConfigError
from unseen.methods import METHODS, Batch
from unseen.train import distributed
from unseen.train.checkpoint import load_checkpoint
from unseen.train.step import TrainingStep
from unseen.train.trainer import Trainer

WORKER = Path(__file__).with_name("ddp_worker.py")

# 8 classes of 5 tiny images; P×K = 4×2, 4 images per process; 3 steps (into the second epoch), validated at 2 and 3.
# BatchNorm is frozen: in training mode each process normalizes over its own part (as DDP does), the one thing that
# differs from one process. SGD, so that an update is lr × the gradient: Adam would blow up the float noise of
# parameters whose gradient is 0 in exact arithmetic (the attention's score bias, under a softmax).
TINY = ["model.channels=[4,8]", "model.embedding_dim=8", "data.image_size=12", "sampler.classes_per_batch=4",
        "sampler.samples_per_class=2", "train.steps=3", "train.validate_every=2", "train.log_every=1",
        "train.threads=1", "evaluation.recall_at=[1,2]", "evaluation.metrics=[recall,map@r]",
        "model.freeze_batchnorm=true", "optimizer.name=sgd", "optimizer.lr=0.05"]

CASES = {
    "multi_similarity": ["method.name=baseline"],  # MultiSimilarityLoss with the MultiSimilarityMiner (the defaults)
    "proxy_anchor": ["method.name=baseline", "loss.name=ProxyAnchorLoss", "miner.name=null"],
    "ecaml": ["method.name=ecaml"],
    "class_adversarial": ["method.name=class_adversarial", "model.taps=[0]", "method.hidden_dim=16"],
    # proxies per learner: a cluster's batch leaves the other learner's proxies out of the step
    "divide_conquer": ["method.name=divide_conquer", "method.num_clusters=2", "method.kmeans_iterations=10",
                       "method.kmeans_redo=1", "loss.name=ProxyAnchorLoss", "miner.name=null"],
    "mic": ["method.name=sharing", "method.variant=mic", "method.num_shared_clusters=3", "method.shared_dim=6",
            "method.kmeans_iterations=5"],
    "sharing": ["method.name=sharing", "method.variant=sharing", "method.shared_dim=6"],
}
# A method registered later trains from its defaults, so it cannot skip the comparison.
CASES |= {name: [f"method.name={name}"] for name in METHODS
          if not any(f"method.name={name}" in overrides for overrides in CASES.values())}
NOT_COMPARED = {"images_per_s", "clustering_s", "wall_seconds"}  # wall-clock times


def launch(job: list[dict], where: Path) -> subprocess.CompletedProcess:
    """Two processes under torchrun (gloo, one thread each) running `job` in tests/train/ddp_worker.py."""
    path = where / f"job-{len(list(where.glob('job-*')))}.json"
    path.write_text(json.dumps(job))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER),
               str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ,
                          "OMP_NUM_THREADS": "1"})


def pickled(obj, path: Path) -> str:
    path.write_bytes(pickle.dumps(obj))
    return str(path)


def records(run_dir: Path, kind: str = "train") -> list[dict]:
    lines = (run_dir / "history.jsonl").read_text().splitlines()
    return [{k: v for k, v in r.items() if k not in NOT_COMPARED} for r in map(json.loads, lines) if r["kind"] == kind]


def rank_results(run_dir: Path) -> list[dict]:
    """What fit() returned (or the error it raised) on each process, wall-clock times left out."""
    results = [json.loads((run_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    return [{k: v for k, v in result.items() if k not in NOT_COMPARED} for result in results]


def tensors(state: dict) -> dict[str, torch.Tensor]:
    """The float tensors of a checkpoint's model and method, by name."""
    return {f"{part}.{k}": v for part in ("model", "method") for k, v in state[part].items()
            if isinstance(v, torch.Tensor) and v.is_floating_point()}


@pytest.fixture(scope="module")
def splits(pattern_table):
    return Splits(train=pattern_table(8, 5, seed=0, name="train"), val=pattern_table(4, 5, seed=1, name="val"),
                  test=pattern_table(6, 5, seed=2, name="test"), dataset="patterns", protocol="generated patterns")


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, splits, pattern_table):
    """Every case trained by two processes, in one torchrun launch; the first also embeds a table of 35 rows (shards
    of 18 and 17) and saves its sampler shards; `local` is the baseline under train.distributed_loss=local."""
    root = tmp_path_factory.mktemp("two_processes")
    data = pickled(splits, root / "splits.pkl")
    odd = pickled(pattern_table(7, 5, seed=3, name="odd"), root / "odd.pkl")
    job = [{"run_dir": str(root / name), "overrides": [*TINY, *overrides], "splits": data}
           for name, overrides in CASES.items()]
    job[0] |= {"embed": [odd], "plans": 2}
    job.append({"run_dir": str(root / "local"), "overrides": [*TINY, "train.distributed_loss=local"], "splits": data})
    done = launch(job, root)
    assert done.returncode == 0, done.stderr[-4000:]
    return root


@pytest.mark.parametrize("case", CASES)
def test_two_processes_take_the_step_of_one_process_with_the_whole_batch(case, two_processes, splits, tmp_path):
    one = Trainer(load_config(None, [*TINY, *CASES[case]]), tmp_path, progress=False, splits=splits)
    one.fit()
    two = two_processes / case
    single, double = records(tmp_path), records(two)
    assert [r.keys() for r in double] == [r.keys() for r in single] and len(single) == 3
    for a, b in zip(single, double, strict=True):
        assert b == {k: pytest.approx(v, abs=1e-5) if isinstance(v, float) else v for k, v in a.items()}
    before = tensors(load_checkpoint(two / "checkpoints" / "last.pt"))
    after = tensors(load_checkpoint(tmp_path / "checkpoints" / "last.pt"))
    assert before.keys() == after.keys()
    for name, value in after.items():
        torch.testing.assert_close(before[name], value, atol=1e-5, rtol=0, msg=name)
    # D&C's and MIC's clusters (made once, on rank 0) and when they were made
    alone, shared = (load_checkpoint(run / "checkpoints" / "last.pt")["method"].get("_extra_state", {})
                     for run in (tmp_path, two))
    assert alone.keys() == shared.keys()
    for key, value in alone.items():
        assert torch.equal(value, shared[key]) if isinstance(value, torch.Tensor) else value == shared[key], key
    first, second = rank_results(two)
    assert first == second and first["steps"] == 3  # the same metrics on every process


def test_the_sampler_shards_one_global_stream_with_nothing_duplicated_or_dropped(two_processes, splits):
    sampler = ClassBalancedBatchSampler(splits.train.labels, classes_per_batch=4, samples_per_class=2, seed=0)
    for epoch in (0, 1):
        parts = [np.load(two_processes / "multi_similarity" / f"plan{epoch}-rank{r}.npz") for r in (0, 1)]
        plan = sampler.epoch(epoch)
        assert all(p["rows"].shape == (len(plan), 4) for p in parts)
        np.testing.assert_array_equal(np.concatenate([p["rows"] for p in parts], axis=1), np.stack(plan.indices))
        np.testing.assert_array_equal(np.concatenate([p["seeds"] for p in parts], axis=1), np.stack(plan.seeds))


def test_distributed_evaluation_is_the_single_process_evaluation(two_processes, splits, pattern_table, tmp_path):
    run = two_processes / "multi_similarity"
    one = Trainer(load_config(None, [*TINY, *CASES["multi_similarity"]]), tmp_path, progress=False, splits=splits)
    one.c.model.load_state_dict(load_checkpoint(run / "checkpoints" / "best.pt")["model"])  # what fit() ended with
    alone = one.c.embed(pattern_table(7, 5, seed=3, name="odd"))
    for rank in (0, 1):  # each of the 35 rows once, in table order, on every process
        np.testing.assert_array_equal(np.load(run / f"embed0-rank{rank}.npy"), alone)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"] == one.c.evaluate(splits.test) and metrics["val"] == one.c.evaluate(splits.val)


def test_the_local_loss_is_each_processs_loss_on_its_part_averaged(two_processes, splits, tmp_path, monkeypatch):
    one = Trainer(load_config(None, TINY), tmp_path, progress=False, splits=splits)
    halves = []
    take_step = one._step

    def step(batch):
        one.c.model.train()  # as the step will (BatchNorm frozen)
        with torch.no_grad():
            parts = [Batch(batch.images[s], batch.labels[s], batch.rows[s]) for s in (slice(0, 4), slice(4, 8))]
            halves.append(np.mean([one.c.method.objective(one.c.model, part).total.item() for part in parts]))
        return take_step(batch)

    monkeypatch.setattr(one, "_step", step)
    one.fit()
    local = records(two_processes / "local")
    assert local[0]["loss"] == pytest.approx(halves[0], abs=1e-5)  # later steps start from other weights
    assert local[0]["loss"] != pytest.approx(records(two_processes / "multi_similarity")[0]["loss"], abs=1e-3)


def test_a_killed_two_process_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path, splits):
    """Rank 0 dies right after its checkpoint at step 3, mid-way through a re-clustering period (D&C re-clusters
    every 2 steps); torchrun stops rank 1. A second launch resumes the run."""
    overrides = [*TINY, *CASES["divide_conquer"], "method.recluster_every=2", "train.steps=6",
                 "train.validate_every=3"]
    data = pickled(splits, tmp_path / "splits.pkl")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    first = launch([{"run_dir": str(straight), "overrides": overrides, "splits": data},
                    {"run_dir": str(killed), "overrides": overrides, "splits": data, "crash": True}], tmp_path)
    assert first.returncode != 0 and load_checkpoint(killed / "checkpoints" / "last.pt")["step"] == 3
    assert not (killed / "rank0.json").exists() and (straight / "rank0.json").exists()
    shutil.copytree(killed, tmp_path / "alone")
    second = launch([{"run_dir": str(killed), "splits": data, "resume": True}], tmp_path)
    assert second.returncode == 0, second.stderr[-4000:]
    expected, resumed = (tensors(load_checkpoint(run / "checkpoints" / "last.pt")) for run in (straight, killed))
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[name], resumed[name]) for name in expected)
    assert records(killed) == records(straight) and records(killed, "val") == records(straight, "val")
    assert rank_results(killed) == rank_results(straight)
    # Nothing in a checkpoint depends on the number of processes: one process continues it (up to float rounding).
    Trainer.resume(tmp_path / "alone", progress=False, splits=splits).fit()
    alone = tensors(load_checkpoint(tmp_path / "alone" / "checkpoints" / "last.pt"))
    for name, value in expected.items():
        torch.testing.assert_close(alone[name], value, atol=1e-5, rtol=0, msg=name)


def test_processes_that_disagree_stop_with_one_line_naming_what_and_uneven_parts_gather(tmp_path, splits,
                                                                                        pattern_table):
    data = pickled(splits, tmp_path / "splits.pkl")
    other = pickled(Splits(**{**vars(splits), "train": pattern_table(8, 5, seed=9, name="train")}), tmp_path / "o.pkl")
    runs = {"config": {"overrides": [TINY, [*TINY, "train.seed=1"]], "splits": data},
            "data": {"overrides": TINY, "splits": [data, other]},
            "batch": {"overrides": [*TINY, "sampler.classes_per_batch=3", "sampler.samples_per_class=3"],
                      "splits": data}}
    job = [{"run_dir": str(tmp_path / name), **run} for name, run in runs.items()]
    done = launch([*job, {"run_dir": str(tmp_path / "gather"), "gather": True}], tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    expected = {
        "config": ("ConfigError", "train.seed: the processes disagree (rank 1: 1, rank 0: 0); give every process the "
                   "same config and overrides"),
        "data": ("DatasetError", "train table: the processes read different data (rank 1: 40 rows, rank 0: 40 rows, "
                 "other content); every process must read the same data (data.root, $UNSEEN_DATA)"),
        "batch": ("ConfigError", "sampler.classes_per_batch × sampler.samples_per_class = 9 images per batch do not "
                  "split evenly over 2 processes; make the batch a multiple of 2"),
    }
    for name, (error, message) in expected.items():
        assert rank_results(tmp_path / name) == [{"error": error, "message": message}] * 2, name
    # 3 rows from rank 0 and 4 from rank 1 (as D&C's smaller cluster batches may split): all 7 in rank order on both;
    # each process's gradient is its own rows' (their positions), times 2 processes.
    gathered = [np.load(tmp_path / "gather" / f"gather-rank{r}.npz") for r in (0, 1)]
    for part in gathered:
        np.testing.assert_array_equal(part["gathered"][:, 0], [0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(gathered[0]["grad"][:, 0], [0, 2, 4])
    np.testing.assert_array_equal(gathered[1]["grad"][:, 0], [6, 8, 10, 12])


def test_in_one_process_nothing_changes(splits):
    """Without torchrun every helper computes as it would without it, and the step is not wrapped."""
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main()
    assert distributed.once(lambda: 3) == 3 and distributed.agree("a") == "a" and distributed.main_first(lambda: 4) == 4
    x = torch.randn(3, 2, requires_grad=True)
    assert distributed.gather_rows(x) is x
    plan = ClassBalancedBatchSampler(splits.train.labels, 4, 2).epoch(0)
    assert distributed.shard(plan) is plan
    step = TrainingStep(torch.nn.Linear(1, 1), torch.nn.Identity())  # type: ignore[arg-type]
    assert distributed.wrap(step) is step
    assert distributed.embed_sharded(step, splits.test, lambda table: np.full(len(table), 7.0)).tolist() == [7.0] * 30


def test_a_batch_that_does_not_split_evenly_is_a_config_error():
    config = load_config(None, ["sampler.classes_per_batch=5", "sampler.samples_per_class=3"])
    distributed.check_batch(config, 5)
    with pytest.raises(ConfigError, match=r"^sampler.classes_per_batch × sampler.samples_per_class = 15 images per "
                                          r"batch do not split evenly over 2 processes"):
        distributed.check_batch(config, 2)
