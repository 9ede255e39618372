"""Run configuration: pydantic models for every section, YAML loading and dotted `key=value` overrides.

Every field is validated before any work starts; a bad key or value becomes one ConfigError line that
names the key and what was expected (`model.embedding_dim: expected a positive integer, got 'abc'`).
The `loss`, `miner` and `method` sections take the keyword arguments of whatever they name.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    StrictInt,
    ValidationError,
    field_validator,
)

from unseen.errors import ConfigError


class Section(BaseModel):
    """A config section: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class OpenSection(Section):
    """A section whose extra keys are keyword arguments of the thing it names (a loss, a miner, a method)."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DataConfig(Section):
    name: str = "omniglot"
    root: str | None = Field(None, description="data root; else $UNSEEN_DATA, else ~/.cache/unseen")
    image_size: PositiveInt = 28
    preset: Literal["small", "imagenet"] = "small"
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0, description="share of the training classes held out for "
                                "validation (seeded); ignored when val_groups is set")
    val_groups: tuple[str, ...] = Field(
        (), description="hold out these whole groups of classes (Omniglot: alphabets) for validation, so that "
        "validation is group-disjoint from training as the test is")
    train_groups: PositiveInt | tuple[str, ...] | None = Field(
        None, description="train on only these groups (names), or on this many of the remaining groups drawn "
        "with split_seed; null: every remaining group")
    split_seed: int = 0
    num_workers: int = Field(0, ge=0)
    jitter: bool = Field(True, description="the training jitter of the preset (small: random affine; imagenet: "
                         "random resized crop + flip); false: training images get the eval transform")
    augment_on: Literal["auto", "loader", "device"] = Field(
        "auto", description="where the training jitter runs: per image in the loader, or on the whole batch on the "
        "training device (small preset only); auto: device for small, loader for imagenet"
    )
    cache: Literal["auto", "tensors", "decoded", "none"] = Field(
        "auto", description="training images held in memory: tensors (the per-image transform applied once, batches "
        "gathered by index; needs a transform without randomness), decoded (files decoded once), none; auto: "
        "tensors when they fit in cache_max_gb, else decoded when that fits, else none")
    cache_max_gb: float = Field(2.0, ge=0, description="the largest training-image cache `auto` builds, in GiB")
    pin_memory: bool | Literal["auto"] = Field(
        "auto", description="page-locked batches for fast, non-blocking copies to the GPU; auto: with CUDA")
    download: bool = True
    allow_subset: bool = False
    on_bad_image: Literal["fail", "skip"] = "fail"
    on_bad_row: Literal["fail", "skip"] = Field(
        "fail", description="a malformed line of a list file: fail, or skip it and report it (fails past 1% of rows)"
    )
    options: dict[str, Any] = Field(default_factory=dict)


class ModelConfig(Section):
    backbone: str = "convnet"
    embedding_dim: PositiveInt = 128
    pretrained: bool | str = Field(False, description="true: weights from the hub; a path: a local weights file")
    channels: tuple[PositiveInt, ...] = Field((32, 64, 128, 256), description="ConvNet widths, one per block")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    freeze_batchnorm: bool = False
    taps: tuple[str | StrictInt, ...] = Field(
        (), description="intermediate stages (names or indices) pooled into the heads' input; empty: the last map only"
    )
    attention: Literal["none", "spatial", "spatial+channel"] = Field(
        "spatial", description="how each tap is pooled: plain average, spatial attention, or SE channel + spatial"
    )
    attention_normalization: Literal["softmax", "sigmoid"] = Field(
        "softmax", description="spatial weights: softmax over positions, or sigmoid scores divided by their sum"
    )


class LossConfig(OpenSection):
    name: str = "MultiSimilarityLoss"


class MinerConfig(OpenSection):
    name: str | None = "MultiSimilarityMiner"


class MethodConfig(OpenSection):
    name: str = "baseline"


class SamplerConfig(Section):
    classes_per_batch: int = Field(32, ge=2)
    samples_per_class: int = Field(4, ge=2)
    small_classes: Literal["repeat", "drop"] = Field(
        "repeat", description="classes with fewer than samples_per_class images (but 2+): repeat images or drop"
    )


class OptimizerConfig(Section):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    backbone_lr: float | None = Field(None, gt=0, description="lr of the trunk; default: lr")
    loss_lr: float | None = Field(
        None, gt=0, description="lr of the metric losses' own parameters (margins β, proxies); default: lr")
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    grad_clip: float | None = Field(None, gt=0, description="max global gradient norm")


# A point or length in optimizer steps: an integer counts steps, a number in (0, 1) is that share of the budget.
Fraction = Annotated[float, Field(gt=0, lt=1)]
Steps = NonNegativeInt | Fraction


def resolve_steps(value: int | float, total_steps: int) -> int:
    """`value` in steps: an integer as it is, a fraction of the budget `total_steps` rounded to a step."""
    return value if isinstance(value, int) else round(value * total_steps)


class ScheduleConfig(Section):
    name: Literal["constant", "cosine", "step"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="cosine: final lr / initial lr")
    milestones: tuple[Steps, ...] = Field(
        (), description="step: the lr is multiplied by gamma at each of these steps (or shares of the budget)")
    gamma: float = Field(0.1, gt=0)


class TrainConfig(Section):
    epochs: PositiveInt = Field(60, description="budget in epochs of the method's batch plan, when steps is null")
    steps: PositiveInt | None = Field(None, description="budget in optimizer steps; when set, epochs is ignored")
    validate_every: PositiveInt | Fraction = Field(
        0.1, description="validate (and checkpoint) every N steps, or every such share of the budget; and at the end")
    trace_test: bool = Field(
        False, description="also record test Recall@1 / MAP@R at each validation, to test_trace.jsonl, for figures "
        "only: nothing selects on it")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16: the network under bf16 autocast (the losses' similarities stay in fp32)")
    channels_last: bool = Field(False, description="the network and its inputs in channels-last memory format")
    compile: bool = Field(False, description="torch.compile the training step (forward and loss)")
    fused_optimizer: bool | Literal["auto"] = Field(
        "auto", description="the optimizer's fused kernel (adam, adamw, sgd); auto: with CUDA")
    seed: int = 0
    device: str = "auto"
    log_every: PositiveInt = 20
    threads: int | None = Field(None, ge=1, description="torch CPU threads; default: torch's choice")
    distributed_loss: Literal["global", "local"] = Field(
        "global", description="under torchrun: the loss of the whole batch, gathered from every process (global), "
        "or each process's loss on its own part (local)")


class EvaluationConfig(Section):
    recall_at: tuple[PositiveInt, ...] = (1, 2, 4, 8)
    metrics: tuple[str, ...] = ("recall", "precision@1", "r_precision", "map@r", "nmi", "f1")
    protocol: Literal["auto", "leave_one_out", "query_gallery", "vehicleid"] = Field(
        "auto", description="who queries whom: auto = the dataset's standard (VehicleID's random galleries for "
        "vehicleid, query -> gallery where the data marks queries, else leave-one-out)")
    vehicleid_repeats: PositiveInt = Field(10, description="vehicleid: random gallery draws averaged (mean ± std)")
    select_on: str = Field("recall@1", description="validation metric that picks the best checkpoint")
    batch_size: PositiveInt = 512

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, metrics: tuple[str, ...]) -> tuple[str, ...]:
        from unseen.evaluation.catalog import METRICS

        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric {unknown[0]!r}; known: {', '.join(METRICS.names())}")
        return metrics


class Config(Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    miner: MinerConfig = Field(default_factory=MinerConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (tuples as lists) that round-trips through YAML and through `Config.model_validate`."""
        return self.model_dump(mode="json")


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """`["loss.alpha=2", "model.pretrained=/w.pth"]` -> nested dict; values are parsed as YAML scalars/lists."""
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip() or any(not part for part in key.split(".")):
            raise ConfigError(f"override '{item}': expected key=value with a dotted key, e.g. loss.alpha=2")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override '{item}': '{part}' is set as a value and as a section")
            node = child
        node[parts[-1]] = value
    return nested


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; `update` wins. Non-dict values replace whole, and so does a section whose `name`
    changes: `loss: {name: MarginLoss}` over a multi-similarity `loss:` drops the multi-similarity arguments."""
    merged = dict(base)
    for key, value in update.items():
        old = merged.get(key)
        renamed = isinstance(value, Mapping) and isinstance(old, Mapping) and "name" in value and \
            value["name"] != old.get("name")
        if isinstance(value, Mapping) and isinstance(old, Mapping) and not renamed:
            merged[key] = merge(old, value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from `path`, or one ConfigError line naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config ({error.strerror or error})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f": line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(error, 'problem', error)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (data:, model:, ...), got {type(data).__name__}")
    return data


def read_config_file(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The raw mapping of a config file with its `extends:` chain resolved: `extends: ../omniglot/baseline.yaml`
    (relative to the file) is read first and this file's keys are merged over it. Cycles are refused."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, resolved))
        raise ConfigError(f"{path}: extends: cycle ({cycle})")
    raw = read_yaml(path)
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str) or not parent.strip():
        raise ConfigError(f"{path}: extends: expected the path of another config file, got {parent!r}")
    parent_path = Path(parent)
    if parent_path.is_absolute():
        raise ConfigError(f"{path}: extends: expected a path relative to this file, got {parent!r}")
    return merge(read_config_file(path.parent / parent_path, (*_chain, resolved)), raw)


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Defaults <- YAML file (with its `extends:` chain) <- `key=value` overrides, validated into a Config."""
    raw = read_config_file(path) if path is not None else {}
    raw = merge(raw, parse_overrides(overrides))
    return validate_config(raw, source=str(path) if path is not None else "config")


def validate_config(raw: Mapping[str, Any], source: str = "config") -> Config:
    """Validate a nested dict; the first problem becomes one line naming its dotted key."""
    try:
        return Config.model_validate(dict(raw))
    except ValidationError as error:
        raise ConfigError(f"{source}: {describe_validation_error(error)}") from None


def describe_validation_error(error: ValidationError, root: type[BaseModel] | None = None) -> str:
    """The first problem of `error` as `dotted.key: what was expected, got value` (keys relative to `root`)."""
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"unknown key '{key}'{_suggestion(first['loc'], root or Config)}"
    if first["type"] == "model_type" or first["type"] == "dict_type":
        return f"{key}: expected a section (a mapping of keys), got {first['input']!r}"
    got = first.get("input")
    message = first["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return f"{key}: {message[0].lower()}{message[1:]}, got {got!r}"


def _suggestion(loc: tuple[Any, ...], model: type[BaseModel]) -> str:
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    if not close:
        return f"; known keys: {', '.join(model.model_fields) or 'none'}"
    return f"; did you mean '{'.'.join(str(p) for p in loc[:-1] + (close[0],))}'?"


def dump_config(config: Config) -> str:
    """The resolved config as YAML (what `unseen config show` prints and the run dir stores)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
