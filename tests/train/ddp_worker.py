"""The torchrun worker of tests/train/test_distributed.py: every process trains the runs of a job file, in order.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/train/ddp_worker.py JOB.json

A job is a list of runs: {"run_dir", "overrides" (key=value strings, or one list per rank), "splits" (a pickled
Splits, or one per rank), "resume" (continue run_dir from its last checkpoint), "crash" (rank 0 dies right after
writing its first last.pt, as a killed run), "embed" (pickled Tables, each embedded by every process after training),
"plans" (how many epochs' plans to save)}. Each process writes run_dir/rank<r>.json: fit()'s results, or the error a
run stopped with; run_dir/embed<i>-rank<r>.npy; run_dir/plan<e>-rank<r>.npz: its part of epoch e's batches.
A run {"run_dir", "gather": true} instead gathers 3 + r rows from process r with `gather_rows`, backpropagates the
sum of the gathered rows times their position, and saves the gathered rows and the local gradient.
"""

import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import torch

import unseen.train.trainer as trainer_module
from unseen.config import load_config
from unseen.errors import UnseenError
from unseen.train import distributed
from unseen.train.trainer import Trainer


def load(path: str):
    return pickle.loads(Path(path).read_bytes())


def crash_after_the_first_checkpoint() -> None:
    real_save = trainer_module.save_checkpoint

    def save_then_die(state, path):
        real_save(state, path)
        if path.name == "last.pt":
            os._exit(17)

    trainer_module.save_checkpoint = save_then_die


def gather(run_dir: Path, rank: int) -> None:
    rows = torch.full((3 + rank, 2), float(rank), requires_grad=True)
    gathered = distributed.gather_rows(rows)
    (gathered * torch.arange(len(gathered)).float()[:, None]).sum().backward()
    np.savez(run_dir / f"gather-rank{rank}.npz", gathered=gathered.detach().numpy(), grad=rows.grad.numpy())


def train(run: dict) -> None:
    rank = int(os.environ["RANK"])
    run_dir = Path(run["run_dir"])
    if run.get("gather"):
        run_dir.mkdir(parents=True, exist_ok=True)
        return gather(run_dir, rank)
    splits = run["splits"][rank] if isinstance(run["splits"], list) else run["splits"]
    overrides = run.get("overrides", [])
    overrides = overrides[rank] if overrides and isinstance(overrides[0], list) else overrides
    try:
        if run.get("resume"):
            trainer = Trainer.resume(run_dir, progress=False, splits=load(splits))
        else:
            trainer = Trainer(load_config(None, overrides), run_dir, progress=False, splits=load(splits))
        if run.get("crash") and rank == 0:
            crash_after_the_first_checkpoint()
        result = trainer.fit()
        for i, table in enumerate(run.get("embed", [])):
            np.save(run_dir / f"embed{i}-rank{rank}.npy", trainer.c.embed(load(table)))
        for epoch in range(run.get("plans", 0)):
            part = distributed.shard(trainer.c.method.plan(epoch))
            np.savez(run_dir / f"plan{epoch}-rank{rank}.npz", rows=np.stack(part.indices), seeds=np.stack(part.seeds))
    except UnseenError as error:
        result = {"error": type(error).__name__, "message": str(error)}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    for run in json.loads(Path(sys.argv[1]).read_text()):
        train(run)
    distributed.stop()
