"""A benchmark spec: one YAML file that names a grid of arms × base losses × methods × seeds, and expands into cells,
each an ordinary training config. docs/protocol.md describes the protocol the shipped specs follow.

    config: omniglot-v2.yaml          # every cell starts from this config (relative to the spec)
    seeds: [0, 1, 2]
    arms:       {no_jitter: {steps: 3000, set: {data.jitter: false, ...}}, ...}
    losses:     {multisimilarity: {loss: {...}, miner: {...}}, ...}
    methods:    {baseline: {}, ecaml: {method: {name: ecaml}}, ...}     # config sections merged over the cell
    knobs:      {ecaml: {method.confusion_weight: [0.013, 0.13, 1.3]}} # chosen on validation R@1 per arm and loss
    knob_seeds: [0]                   # the seeds the knob grid runs on; the chosen value then runs on every seed
    controls:   {baseline_at_class_steps: [mic, sharing]}  # the baseline at each method's class-task steps
    grid:       [{arms: [no_jitter, data_poor, full], losses: [multisimilarity]}, {arms: [no_jitter], ...}]
    pilot:      {steps: {no_jitter: 4000}, losses: [multisimilarity], seeds: [0], set: {schedule.name: constant}}

A cell is identified by (arm, loss, method, seed); a method id with a knob value reads `ecaml[confusion_weight=0.13]`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unseen.config import merge, read_config_file, read_yaml
from unseen.errors import ConfigError

PILOT = "pilot"
CONTROL = "baseline_at_class_steps"


@dataclass(frozen=True)
class Cell:
    """One run of the grid: its place in the grid and its whole config (a plain mapping, validated when run)."""

    arm: str
    loss: str
    method: str
    seed: int
    config: dict[str, Any] = field(hash=False, compare=False)
    family: str = ""  # the method entry a knob or control cell belongs to
    knob: tuple[str, Any] | None = None
    control_of: str | None = None

    @property
    def key(self) -> str:
        return f"{self.arm}/{self.loss}/{self.method}/seed{self.seed}"


@dataclass(frozen=True)
class Spec:
    path: Path
    raw: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.raw.get("name", self.path.stem))

    @property
    def seeds(self) -> list[int]:
        return [int(s) for s in self.raw.get("seeds", [0])]

    @property
    def knob_seeds(self) -> list[int]:
        return [int(s) for s in self.raw.get("knob_seeds", self.seeds[:1])]

    @property
    def arms(self) -> dict[str, dict[str, Any]]:
        return dict(self.raw["arms"])

    @property
    def losses(self) -> dict[str, dict[str, Any]]:
        return dict(self.raw["losses"])

    @property
    def methods(self) -> dict[str, dict[str, Any]]:
        return {name: dict(entry or {}) for name, entry in self.raw["methods"].items()}

    @property
    def knobs(self) -> dict[str, tuple[str, list[Any]]]:
        """method -> (dotted key, values)."""
        knobs = {}
        for method, grid in (self.raw.get("knobs") or {}).items():
            ((key, values),) = grid.items()
            knobs[method] = (key, list(values))
        return knobs

    @property
    def controls(self) -> list[str]:
        return list((self.raw.get("controls") or {}).get(CONTROL, []))

    def base(self) -> dict[str, Any]:
        """The cell base config, its `extends:` chain resolved."""
        return read_config_file(self.path.parent / self.raw["config"])

    def grid(self) -> list[tuple[str, str, list[str]]]:
        """(arm, loss, methods) blocks of the grid, in the spec's order."""
        blocks = []
        for block in self.raw.get("grid") or [{}]:
            methods = list(block.get("methods", self.methods))
            for arm in block.get("arms", self.arms):
                for loss in block.get("losses", self.losses):
                    blocks.append((arm, loss, methods))
        return blocks


def load_spec(path: str | Path) -> Spec:
    """Read and check a spec; every problem is one ConfigError naming the file and the key."""
    path = Path(path)
    raw = read_yaml(path)
    for key in ("config", "arms", "losses", "methods"):
        if key not in raw:
            raise ConfigError(f"{path}: benchmark spec without '{key}'")
    known = {"name", "description", "config", "seeds", "knob_seeds", "arms", "losses", "methods", "knobs", "controls",
             "grid", "pilot"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key '{unknown[0]}'; known: {', '.join(sorted(known))}")
    spec = Spec(path, raw)
    for method in spec.knobs:
        if method not in spec.methods:
            raise ConfigError(f"{path}: knobs: '{method}' is not among the methods")
    for method in spec.controls:
        if method not in spec.methods:
            raise ConfigError(f"{path}: controls: '{method}' is not among the methods")
    for arm, loss, methods in spec.grid():
        for kind, name, table in (("arm", arm, spec.arms), ("loss", loss, spec.losses)):
            if name not in table:
                raise ConfigError(f"{path}: grid: unknown {kind} '{name}'; known: {', '.join(table)}")
        for method in methods:
            if method not in spec.methods:
                raise ConfigError(f"{path}: grid: unknown method '{method}'; known: {', '.join(spec.methods)}")
    return spec


def _apply(config: dict[str, Any], settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge settings given as sections (`{method: {...}}`) or dotted keys (`{data.jitter: false}`)."""
    if not settings:
        return config
    for key, value in settings.items():
        for part in reversed(key.split(".")):
            value = {part: value}
        config = merge(config, value)
    return config


def cell_config(spec: Spec, arm: str, loss: str, method_settings: Mapping[str, Any], seed: int,
                extra: Mapping[str, Any] | None = None, steps: int | None = None) -> dict[str, Any]:
    """base <- the loss's sections <- the method's <- the arm's settings <- extra (knob, control) <- seed and steps."""
    arm_entry = spec.arms[arm]
    config = _apply(spec.base(), spec.losses[loss])
    config = _apply(config, method_settings)
    config = _apply(config, arm_entry.get("set"))
    config = _apply(config, extra)
    return _apply(config, {"train.seed": seed, "train.steps": steps or int(arm_entry["steps"])})


def knob_id(method: str, key: str, value: Any) -> str:
    return f"{method}[{key.rsplit('.', 1)[-1]}={value}]"


def expand(spec: Spec, chosen: Mapping[tuple[str, str, str], Any] | None = None,
           class_steps: Mapping[tuple[str, str, str, int], int] | None = None) -> list[Cell]:
    """Every cell runnable now, seed-major within each grid block (a grid cut short still covers each method):
    plain methods on every seed; a method with a knob on `knob_seeds` for each value, and on every other seed for
    the value `chosen[(arm, loss, method)]` once known; a control once its method's reported cell (the chosen
    knob value's, for a method with a knob) has its class steps (`class_steps[(arm, loss, cell id, seed)]`); the
    pilot cells."""
    chosen, class_steps = chosen or {}, class_steps or {}
    cells: list[Cell] = []
    for arm, loss, methods in spec.grid():
        for seed in spec.seeds:
            for method in methods:
                settings = spec.methods[method]
                reported = method  # the cell id whose class steps a control of this method matches
                if method in spec.knobs:
                    key, values = spec.knobs[method]
                    picked = chosen.get((arm, loss, method))
                    reported = knob_id(method, key, picked) if picked is not None else None
                    runs = values if seed in spec.knob_seeds else ([picked] if picked is not None else [])
                    for value in runs:
                        config = cell_config(spec, arm, loss, settings, seed, {key: value})
                        cells.append(Cell(arm, loss, knob_id(method, key, value), seed, config, method, (key, value)))
                else:
                    cells.append(Cell(arm, loss, method, seed, cell_config(spec, arm, loss, settings, seed),
                                      method))
                if method in spec.controls and (arm, loss, reported, seed) in class_steps:
                    steps = class_steps[(arm, loss, reported, seed)]
                    config = cell_config(spec, arm, loss, spec.methods.get("baseline", {}), seed, steps=steps)
                    cells.append(Cell(arm, loss, f"{CONTROL}_of_{method}", seed, config, "baseline",
                                      control_of=method))
    pilot = spec.raw.get("pilot")
    if pilot:
        for arm, steps in pilot["steps"].items():
            for loss in pilot.get("losses", list(spec.losses)[:1]):
                for seed in pilot.get("seeds", [0]):
                    config = cell_config(spec, arm, loss, spec.methods.get("baseline", {}), seed, pilot.get("set"),
                                         steps=int(steps))
                    cells.append(Cell(arm, loss, PILOT, seed, config, PILOT))
    return cells
