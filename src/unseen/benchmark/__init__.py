"""`unseen benchmark`: a grid of arms × base losses × methods × seeds from one spec, each cell an ordinary run
folder, resumable; and its summary (tables of protocol v2 and figures)."""

from unseen.benchmark.report import summarize
from unseen.benchmark.runner import cell_state, run_benchmark, runnable
from unseen.benchmark.spec import Cell, Spec, expand, load_spec

__all__ = ["Cell", "Spec", "cell_state", "expand", "load_spec", "run_benchmark", "runnable", "summarize"]
