import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from unseen.config import load_config
from unseen.data.base import Splits
from unseen.errors import ConfigError
from unseen.losses.grl import dann_schedule
from unseen.methods import Batch
from unseen.methods.baseline import Baseline
from unseen.methods.class_adversarial import ClassAdversarial
from unseen.models.backbones import ConvNet, build_trunk, resolve_taps
from unseen.models.network import EmbeddingModel, build_model
from unseen.models.spec import ModelSpec
from unseen.train.checkpoint import load_checkpoint
from unseen.train.trainer import Trainer

DIM, CLASSES = 8, 5
METHOD = ["method.name=class_adversarial", "method.hidden_dim=16"]
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def config(*overrides, method=METHOD):
    return load_config(None, [f"model.embedding_dim={DIM}", *method, *overrides])


def adversarial(*overrides, num_classes=CLASSES):
    return ClassAdversarial(config(*overrides), num_classes=num_classes, embedding_dim=DIM)


def embedder(seed=0, taps=()):
    torch.manual_seed(seed)
    return EmbeddingModel(ConvNet(in_chans=1, channels=(4, 8)), DIM, taps=taps)


def pk_batch(p=CLASSES, k=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(p * k, 1, 12, 12, generator=generator)
    return Batch(images, torch.arange(p).repeat_interleave(k), torch.arange(p * k))


def model_grads(model):
    return [p.grad for p in model.parameters()]


def test_with_lambda_zero_it_is_the_base_loss_plus_an_independent_classifier():
    batch = pk_batch()
    reference_model = embedder()
    reference = Baseline(config(method=[]), num_classes=CLASSES, embedding_dim=DIM)
    base = reference.loss(reference_model(batch.images), batch).total
    base.backward()

    model = embedder()
    method = adversarial("method.adversary_weight=0", "method.schedule=constant")
    method.on_step(7, 10)
    classifier = copy.deepcopy(method.adversary)
    out = model(batch.images)
    result = method.loss(out, batch)
    result.total.backward()

    alone = F.cross_entropy(classifier(out["class"].detach()), batch.labels)
    alone.backward()
    assert result.parts["lambda"] == 0.0 and result.parts["base"] == base.item()
    assert result.total.item() == pytest.approx(base.item() + alone.item(), abs=1e-6)
    assert result.parts["adversary"] == alone.item()
    assert all(torch.equal(a, b) for a, b in zip(model_grads(model), model_grads(reference_model), strict=True))
    assert all(torch.equal(a.grad, b.grad)
               for a, b in zip(method.adversary.parameters(), classifier.parameters(), strict=True))


def test_the_embedding_gets_the_base_gradient_minus_lambda_times_the_adversarys():
    batch = pk_batch()
    method = adversarial("method.adversary_weight=0.3", "method.schedule=constant").double()
    embeddings = F.normalize(torch.randn(len(batch.labels), DIM, dtype=torch.float64), dim=1).requires_grad_()
    result = method.loss({"class": embeddings}, batch)
    (total_grad,) = torch.autograd.grad(result.total, embeddings)
    (base_grad,) = torch.autograd.grad(method.base_objective(embeddings, batch.labels), embeddings)
    adversary_loss = F.cross_entropy(method.adversary(embeddings), batch.labels)
    (adversary_grad,) = torch.autograd.grad(adversary_loss, embeddings)
    assert result.parts["adversary"] == pytest.approx(adversary_loss.item(), abs=1e-12)
    assert torch.allclose(total_grad, base_grad - 0.3 * adversary_grad, atol=1e-12)


def test_parts_report_the_adversarys_accuracy_slowly_recomputed():
    batch = pk_batch()
    method = adversarial()
    out = {"class": F.normalize(torch.randn(len(batch.labels), DIM), dim=1)}
    logits = method.adversary(out["class"])
    correct = sum(int(logits[i].argmax()) == int(batch.labels[i]) for i in range(len(batch.labels)))
    parts = method.loss(out, batch).parts
    assert set(parts) == {"base", "adversary", "adversary_accuracy", "lambda"}
    assert parts["adversary_accuracy"] == pytest.approx(correct / len(batch.labels))


def test_the_adversary_has_its_own_param_group():
    method = adversarial("loss.name=ProxyAnchorLoss", "miner.name=null", "method.adversary_lr=0.05")
    groups = {g["name"]: g for g in method.param_groups(lr=0.01, weight_decay=0.1)}
    assert set(groups) == {"method", "adversary"}
    assert [tuple(p.shape) for p in groups["method"]["params"]] == [(CLASSES, DIM)]  # the proxies
    assert groups["method"]["lr"] == 0.01 and groups["method"]["weight_decay"] == 0.0
    assert [tuple(p.shape) for p in groups["adversary"]["params"]] == [(16, DIM), (16,), (CLASSES, 16), (CLASSES,)]
    assert groups["adversary"]["lr"] == 0.05 and groups["adversary"]["weight_decay"] == 0.1
    (only,) = adversarial().param_groups(lr=0.01, weight_decay=0.0)
    assert only["name"] == "adversary" and only["lr"] == 0.01


def test_without_the_adversary_it_is_exactly_the_baseline():
    batch = pk_batch()
    out = {"class": F.normalize(torch.randn(len(batch.labels), DIM), dim=1)}
    method = adversarial("method.adversary=false")
    baseline = Baseline(config(method=[]), num_classes=CLASSES, embedding_dim=DIM)
    result, expected = method.loss(out, batch), baseline.loss(out, batch)
    assert torch.equal(result.total, expected.total) and result.parts == expected.parts
    assert method.adversary is None and method.param_groups(0.01, 0.0) == []


@pytest.mark.parametrize("adversary", ["true", "false"])
def test_building_the_method_leaves_the_global_rng_as_the_baselines(adversary):
    torch.manual_seed(3)
    adversarial(f"method.adversary={adversary}")
    after = torch.rand(3)
    torch.manual_seed(3)
    assert torch.equal(after, torch.rand(3))


def test_lambda_schedules():
    dann = adversarial("method.adversary_weight=0.5")
    assert dann.reversal.scale == 0.0  # p = 0 before the first step
    for step in (0, 25, 99):
        dann.on_step(step, 100)
        assert dann.reversal.scale == dann_schedule(step / 100, 0.5)
    constant = adversarial("method.adversary_weight=0.5", "method.schedule=constant")
    assert constant.reversal.scale == 0.5
    constant.on_step(60, 100)
    assert constant.reversal.scale == 0.5


@pytest.mark.parametrize(("override", "message"), [
    ("method.schedule=linear", r"^method \(class_adversarial\): schedule: input should be 'constant' or 'dann'"),
    ("method.adversary_weight=-1", r"^method \(class_adversarial\): adversary_weight: input should be greater"),
    ("method.adversarial=true", r"^method \(class_adversarial\): unknown key 'adversarial'; did you mean"),
])
def test_bad_keys_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        adversarial(override)


# The ablation cells of docs/methods.md, each one override away from configs/omniglot/class_adversarial.yaml.
ABLATION = {
    "both": ([], (1, 2, 3), True),
    "attention only": (["method.adversary=false"], (1, 2, 3), False),
    "adversary only": (["model.taps=[]"], (), True),
    "baseline": (["model.taps=[]", "method.adversary=false"], (), False),
    "taps without attention": (["model.attention=none"], (1, 2, 3), True),
}


@pytest.mark.parametrize("cell", sorted(ABLATION))
def test_each_ablation_cell_is_one_override_of_the_omniglot_config(cell):
    overrides, taps, has_adversary = ABLATION[cell]
    cfg = load_config(CONFIGS / "omniglot" / "class_adversarial.yaml", overrides)
    method = ClassAdversarial(cfg, num_classes=CLASSES, embedding_dim=cfg.model.embedding_dim)
    model = build_embedder(cfg.model, in_chans=1)
    assert model.taps == taps and (method.adversary is not None) == has_adversary
    attention = [name for name, _ in model.attention.named_parameters()]
    assert bool(attention) == (bool(taps) and cfg.model.attention != "none")


@pytest.mark.parametrize("path", sorted((CONFIGS / "paper").glob("class_adversarial_*.yaml")), ids=lambda p: p.name)
def test_paper_configs_tap_stages_of_their_backbone(path):
    cfg = load_config(path)
    assert cfg.method.name == "class_adversarial" and cfg.model.taps
    ClassAdversarial(cfg, num_classes=CLASSES, embedding_dim=cfg.model.embedding_dim)
    assert len(resolve_taps(trunk_stages(cfg.model.backbone), cfg.model.taps)) == len(cfg.model.taps)


_STAGES: dict[str, tuple[str, ...]] = {}


def trunk_stages(backbone):
    if backbone not in _STAGES:
        _STAGES[backbone] = build_trunk(backbone, in_chans=3).stage_names
    return _STAGES[backbone]


# -- whole runs ------------------------------------------------------------------------------------------------
TINY = ["model.channels=[4,8,8]", "model.embedding_dim=8", "data.image_size=12", "sampler.classes_per_batch=4",
        "sampler.samples_per_class=2", "train.threads=1", "train.epochs=2", "train.log_every=1",
        "evaluation.recall_at=[1,2]", "evaluation.metrics=[recall,map@r]"]




@pytest.fixture
def splits(pattern_table):
    return Splits(train=pattern_table(12, 4, seed=0, name="train"), val=pattern_table(4, 4, seed=1, name="val"),
                  test=pattern_table(6, 4, seed=2, name="test"), dataset="patterns", protocol="generated patterns")


def history(run_dir):
    records = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "images_per_s"} for r in records]


def test_without_taps_and_adversary_it_trains_exactly_like_the_baseline(tmp_path, splits):
    runs = {}
    for name, method in (("baseline", []), ("class_adversarial", [*METHOD, "method.adversary=false"])):
        Trainer(load_config(None, [*TINY, *method]), tmp_path / name, progress=False, splits=splits).fit()
        runs[name] = load_checkpoint(tmp_path / name / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(runs["baseline"][k], runs["class_adversarial"][k]) for k in runs["baseline"])
    assert history(tmp_path / "baseline") == history(tmp_path / "class_adversarial")


def test_a_run_with_attention_and_the_dann_ramped_adversary(tmp_path, splits):
    cfg = load_config(None, [*TINY, *METHOD, "model.taps=[block0,block1]", "model.attention=spatial+channel",
                             "method.adversary_weight=0.5"])
    trainer = Trainer(cfg, tmp_path, progress=False, splits=splits)
    assert [g["name"] for g in trainer.optimizer.param_groups] == ["backbone", "heads", "attention", "adversary"]
    metrics = trainer.fit()
    train = [r for r in history(tmp_path) if r["kind"] == "train"]
    assert [r["lambda"] for r in train] == [dann_schedule((r["step"] - 1) / trainer.total_steps, 0.5) for r in train]
    assert all(0 <= r["adversary_accuracy"] <= 1 for r in train)
    assert 0 <= metrics["test"]["recall@1"] <= 1
    state = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert any(key.startswith("attention.") for key in state["model"])
    assert any(key.startswith("adversary.") for key in state["method"])
