import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import unseen.methods.clustering as clustering
from unseen.config import load_config
from unseen.data.base import Splits, table_from_labels
from unseen.errors import ConfigError
from unseen.methods import Batch, EpochContext
from unseen.methods.baseline import Baseline
from unseen.methods.divide_conquer import DivideAndConquer
from unseen.models.backbones import build_trunk
from unseen.models.network import EmbeddingModel
from unseen.train.checkpoint import load_checkpoint
from unseen.train.trainer import Trainer

TINY = ["model.channels=[4,8]", "model.embedding_dim=8", "data.image_size=12", "sampler.classes_per_batch=4",
        "sampler.samples_per_class=2", "train.threads=1", "evaluation.recall_at=[1,2]",
        "evaluation.metrics=[recall,map@r]"]
METHOD = ["method.name=divide_conquer", "method.num_clusters=2", "method.kmeans_iterations=10", "method.kmeans_redo=1"]


def make_config(*overrides, method=METHOD):
    return load_config(None, [*TINY, *method, *overrides])


def make_method(*overrides, num_classes=12):
    config = make_config(*overrides)
    return DivideAndConquer(config, num_classes=num_classes, embedding_dim=config.model.embedding_dim)




def context(epoch, train, features):
    return EpochContext(epoch=epoch, train=train, seed=0, embed=lambda output: features)


def test_embedding_size_must_split_into_equal_slices():
    with pytest.raises(ConfigError, match=r"^method\.num_clusters: 3 does not divide model\.embedding_dim 8"):
        make_method("method.num_clusters=3")
    with pytest.raises(ConfigError, match=r"^method\.full_embedding_from \(5\) is after method\.finetune_from"):
        make_method("method.full_embedding_from=5", "method.finetune_from=4")
    with pytest.raises(ConfigError, match=r"^method \(divide_conquer\): unknown key 'num_cluster'"):
        make_method("method.num_cluster=2")
    assert make_method("method.num_clusters=4").class_slices() == 4


def test_each_cluster_stream_stays_in_its_cluster_round_robin():
    # 24 classes × 4 images. Cluster 0: classes 0-19; cluster 1: classes 20-22 (fewer than P = 4) plus a
    # single image of classes 0 and 23 (dropped there); cluster 2: the rest of class 23 (one class: sits out).
    labels = np.repeat(np.arange(24), 4)
    train = table_from_labels(labels, images=np.zeros((96, 2, 2), dtype=np.uint8))
    assignment = np.where(labels < 20, 0, np.where(labels < 23, 1, 2))
    assignment[0] = 1
    assignment[92] = 1
    method = make_method("method.num_clusters=4")
    method.assignment = assignment
    plan = method.batches(train, 0)
    assert len(plan) == len(method.sampler(train)) == 6
    clusters = [np.unique(assignment[rows]).tolist() for rows in plan.indices]
    assert clusters == [[0], [1], [0], [1], [0], [1]]
    for rows, seeds in zip(plan.indices, plan.seeds, strict=True):
        classes, counts = np.unique(labels[rows], return_counts=True)
        assert set(counts) == {2} and len(seeds) == len(rows)
        if assignment[rows[0]] == 0:
            assert len(classes) == 4 and 0 not in rows
        else:
            assert classes.tolist() == [20, 21, 22]
    first = np.unique(np.concatenate([labels[r] for r in plan.indices[0:6:2]]))
    assert len(first) == 12  # cluster 0's stream visits distinct classes before repeating any
    again, later = method.batches(train, 0), method.batches(train, 1)
    assert all(np.array_equal(a, b) for a, b in zip(plan.indices, again.indices, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(plan.seeds, again.seeds, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(plan.indices, later.indices, strict=True))


def test_stream_is_the_default_one_before_clustering_and_in_the_finetune_phase(pattern_table):
    train = pattern_table(12, 6, seed=0, name="train")
    method = make_method("method.finetune_from=3")
    default = method.sampler(train)
    assert all(np.array_equal(a, b) for a, b in zip(method.batches(train, 0).indices, default.epoch(0).indices,
                                                    strict=True))
    method.assignment = np.arange(len(train)) % 2
    assert len(method.batches(train, 0)) == len(default)
    assert all(np.array_equal(a, b) for a, b in zip(method.batches(train, 3).indices, default.epoch(3).indices,
                                                    strict=True))


def tiny_embedder(slices):
    torch.manual_seed(0)
    return EmbeddingModel(build_trunk("convnet", in_chans=1, channels=(4, 8)), 8, class_slices=slices)


def as_batch(train, rows):
    images = torch.from_numpy(train.images[rows]).float().unsqueeze(1) / 255
    return Batch(images, torch.from_numpy(train.labels[rows]), torch.from_numpy(rows))


def test_a_cluster_batch_moves_only_its_slice_of_the_embedding_layer_and_the_trunk(pattern_table):
    train = pattern_table(12, 6, seed=0, name="train")
    model, method = tiny_embedder(slices=2), make_method()
    method.assignment = np.arange(len(train)) % 2
    plan = method.batches(train, 0)
    rows = plan.indices[1]
    assert set(method.assignment[rows]) == {1}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD(list(model.parameters()) + list(method.parameters()), lr=0.5, momentum=0.0)
    batch = as_batch(train, rows)
    method.loss(model(batch.images), batch).total.backward()
    optimizer.step()
    after = dict(model.named_parameters())
    for name in ("heads.class.linear.weight", "heads.class.linear.bias"):
        assert torch.equal(after[name][:4], before[name][:4]), name  # slice 0: bit-identical
        assert not torch.equal(after[name][4:], before[name][4:]), name
    trunk = [n for n in before if n.startswith("trunk.")]
    assert any(not torch.equal(after[n], before[n]) for n in trunk)


def test_loss_is_the_base_loss_on_the_renormalized_slice_then_on_the_full_embedding(pattern_table):
    train = pattern_table(12, 6, seed=0, name="train")
    method = make_method("method.full_embedding_from=2", "loss.name=ContrastiveLoss", "miner.name=null")
    method.assignment = np.arange(len(train)) % 2
    rows = method.batches(train, 0).indices[1]
    batch = as_batch(train, rows)
    out = {"class": F.normalize(torch.randn(len(rows), 2, 4), dim=-1).flatten(1) / 2**0.5}
    labels = batch.labels.tolist()

    def contrastive(x):  # PML defaults: positives pulled below 0, negatives pushed beyond 1, mean of the non-zero
        pos, neg = [], []
        for i in range(len(x)):
            for j in range(len(x)):
                if i != j:
                    d = float(torch.linalg.norm(x[i] - x[j]))
                    (pos if labels[i] == labels[j] else neg).append(d if labels[i] == labels[j] else max(0, 1 - d))
        return np.mean([v for v in pos if v > 0]) + np.mean([v for v in neg if v > 0])

    slice_one = out["class"][:, 4:] / out["class"][:, 4:].norm(dim=1, keepdim=True)
    assert float(method.loss(out, batch).total) == pytest.approx(contrastive(slice_one), abs=1e-6)
    method.epoch = 2
    assert float(method.loss(out, batch).total) == pytest.approx(contrastive(out["class"]), abs=1e-6)


def test_each_learner_has_its_own_loss_on_its_slice_size(pattern_table):
    train = pattern_table(12, 6, seed=0, name="train")
    method = make_method("loss.name=ProxyAnchorLoss", "miner.name=null")
    (group,) = method.param_groups(lr=0.01, weight_decay=0.0)
    assert [tuple(p.shape) for p in group["params"]] == [(12, 8), (12, 4), (12, 4)]
    method.assignment = np.arange(len(train)) % 2
    batch = as_batch(train, method.batches(train, 0).indices[1])
    out = {"class": F.normalize(torch.randn(len(batch.labels), 2, 4), dim=-1).flatten(1) / 2**0.5}
    method.loss(out, batch).total.backward()
    base, first, second = group["params"]
    assert base.grad is None and first.grad is None and second.grad.abs().sum() > 0


def test_one_cluster_is_the_baseline(pattern_table):
    train = pattern_table(12, 6, seed=0, name="train")
    torch.manual_seed(0)
    baseline = Baseline(make_config(method=()), num_classes=12, embedding_dim=8)
    torch.manual_seed(0)
    method = make_method("method.num_clusters=1", "method.recluster_every=1")
    assert method.class_slices() == 1 and not list(method.parameters())
    out = {"class": F.normalize(torch.randn(8, 8), dim=-1)}
    for epoch in (0, 1):
        method.on_epoch_start(EpochContext(epoch, train, 0, embed=lambda output: pytest.fail("clustered")))
        ours, theirs = method.batches(train, epoch), baseline.batches(train, epoch)
        assert all(np.array_equal(a, b) for a, b in zip(ours.indices, theirs.indices, strict=True))
        assert all(np.array_equal(a, b) for a, b in zip(ours.seeds, theirs.seeds, strict=True))
        batch = as_batch(train, ours.indices[0])
        assert method.loss(out, batch).total.item() == baseline.loss(out, batch).total.item()
        assert method.loss(out, batch).parts == baseline.loss(out, batch).parts


def blob_features(train, seed=0):
    """Two well-separated groups of classes in feature space: classes < 6 and classes >= 6."""
    rng = np.random.default_rng(seed)
    centers = np.where(train.labels[:, None] < 6, 5.0, -5.0) * np.eye(16)[0]
    return (centers + rng.normal(0, 0.5, size=(len(train), 16))).astype(np.float32)


def test_clustering_is_deterministic_matched_and_reported_once(monkeypatch, pattern_table):
    train = pattern_table(12, 6, seed=0, name="train")
    features = blob_features(train)
    first, second = make_method("method.recluster_every=2"), make_method("method.recluster_every=2")
    first.on_epoch_start(context(0, train, features))
    second.on_epoch_start(context(0, train, features))
    assert np.array_equal(first.assignment, second.assignment)
    assert set(np.unique(first.assignment[train.labels < 6])) != set(np.unique(first.assignment[train.labels >= 6]))
    batch = as_batch(train, first.batches(train, 0).indices[0])
    out = {"class": F.normalize(torch.randn(len(batch.labels), 8), dim=-1)}
    assert first.loss(out, batch).parts["clustering_s"] == first.last_clustering_seconds >= 0
    assert "clustering_s" not in first.loss(out, batch).parts

    kept = first.assignment.copy()
    first.on_epoch_start(context(1, train, -features))  # not a clustering epoch
    assert np.array_equal(first.assignment, kept)
    monkeypatch.setattr(clustering, "kmeans", lambda *args, **kwargs: 1 - kept)  # the same clusters, renamed
    first.on_epoch_start(context(2, train, features))
    assert np.array_equal(first.assignment, kept)


def test_assignment_survives_a_weights_only_checkpoint(pattern_table):
    train = pattern_table(12, 6, seed=0, name="train")
    method = make_method()
    method.on_epoch_start(context(0, train, blob_features(train)))
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    restored = make_method()
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert np.array_equal(restored.assignment, method.assignment)
    assert all(np.array_equal(a, b) for a, b in zip(restored.batches(train, 1).indices,
                                                    method.batches(train, 1).indices, strict=True))


@pytest.fixture
def splits(pattern_table):
    return Splits(train=pattern_table(12, 6, seed=0, name="train"), val=pattern_table(4, 5, seed=1, name="val"),
                  test=pattern_table(6, 5, seed=2, name="test"), dataset="patterns", protocol="generated patterns")


def history(run_dir, drop=("images_per_s", "clustering_s")):
    records = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in drop} for r in records]


def test_training_resumes_exactly_through_every_phase(tmp_path, splits, interrupted_run):
    config = make_config("train.epochs=5", "train.eval_every=5", "train.log_every=1", "method.recluster_every=2",
                         "method.full_embedding_from=3", "method.finetune_from=4")
    Trainer(config, tmp_path / "straight", progress=False, splits=splits).fit()
    records = [json.loads(line) for line in (tmp_path / "straight" / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "clustering_s" in r] == [1, 7]  # epochs 0 and 2, 3 steps each

    assert interrupted_run(config, tmp_path / "resumed", splits) == [1]
    Trainer.resume(tmp_path / "resumed", progress=False, splits=splits).fit()
    straight = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    again = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert all(torch.equal(straight["model"][k], again["model"][k]) for k in straight["model"])
    assert history(tmp_path / "resumed") == history(tmp_path / "straight")


def test_one_cluster_trains_like_the_baseline(tmp_path, splits):
    runs = {}
    for name, method in (("baseline", ()), ("divide_conquer", (*METHOD, "method.num_clusters=1"))):
        config = make_config("train.epochs=2", method=method)
        Trainer(config, tmp_path / name, progress=False, splits=splits).fit()
        runs[name] = load_checkpoint(tmp_path / name / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(runs["baseline"][k], runs["divide_conquer"][k]) for k in runs["baseline"])
    assert history(tmp_path / "baseline", drop=("images_per_s",)) == history(tmp_path / "divide_conquer",
                                                                              drop=("images_per_s",))
