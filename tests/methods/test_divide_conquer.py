import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import unseen.methods.clustering as clustering
from unseen.config import load_config
from unseen.data.base import Splits, table_from_labels
from unseen.data.samplers import BatchPlan
from unseen.errors import ConfigError
from unseen.methods import Batch
from unseen.train.checkpoint import load_checkpoint
from unseen.train.components import build_method
from unseen.train.trainer import Trainer

TINY = ["model.channels=[4,8]", "model.embedding_dim=8", "data.image_size=12", "sampler.classes_per_batch=4",
        "sampler.samples_per_class=2", "train.threads=1", "evaluation.recall_at=[1,2]",
        "evaluation.metrics=[recall,map@r]"]
METHOD = ["method.name=divide_conquer", "method.num_clusters=2", "method.kmeans_iterations=10", "method.kmeans_redo=1"]
BUDGET = 100  # steps, for methods built outside a run


def floats(parts: dict) -> dict[str, float]:
    """A LossOutput's parts (detached 0-dim tensors or floats) as floats, as the trainer logs them."""
    return {key: float(value) for key, value in parts.items()}


def make_config(*overrides, method=METHOD):
    return load_config(None, [*TINY, *method, *overrides])


def make_method(*overrides, method=METHOD, train=None, embed=None, total_steps=BUDGET, num_classes=12, seed=0):
    """The method and the network it trains, from a seeded global RNG."""
    torch.manual_seed(seed)
    return build_method(make_config(*overrides, method=method), num_classes=num_classes, train=train, in_chans=1,
                        total_steps=total_steps, embed=embed)


def no_embedding(output):
    pytest.fail(f"the training set was embedded ({output}), so clustered, where it should not be")


def plan_at(method, step, epoch):
    """The plan of `epoch` starting at optimizer step `step`, as the trainer asks for it."""
    method.ctx.step = step
    return method.plan(epoch)


def given_clusters(method, assignment, epoch=0):
    """`assignment` as the clusters made for `epoch` (so that its plan does not cluster again)."""
    method.assignment = np.asarray(assignment, dtype=np.int64)
    method.clustered_epoch = epoch
    method.clustered_step = 0


def same_plans(a, b):
    return (len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a.indices, b.indices, strict=True))
            and all(np.array_equal(x, y) for x, y in zip(a.seeds, b.seeds, strict=True)))


def streams(plan):
    return [plan.stream(b) for b in range(len(plan))]


def test_embedding_size_must_split_into_equal_slices_and_phases_must_be_in_order():
    with pytest.raises(ConfigError, match=r"^method\.num_clusters: 3 does not divide model\.embedding_dim 8"):
        make_method("method.num_clusters=3")
    with pytest.raises(ConfigError, match=r"^method \(divide_conquer\): unknown key 'num_cluster'"):
        make_method("method.num_cluster=2")
    with pytest.raises(ConfigError, match=r"^method\.full_embedding_from \(5 steps\) is after method\.finetune_from "
                                          r"\(4 steps\)"):
        make_method("method.full_embedding_from=5", "method.finetune_from=4")  # caught when the method is built
    method, _ = make_method("method.full_embedding_from=0.5", "method.finetune_from=0.25")
    with pytest.raises(ConfigError, match=r"^method\.full_embedding_from \(\d+ steps\) is after"):
        method.steps_per_epoch()  # shares of the budget: caught when the trainer sizes the plan, before any step
    _, model = make_method("method.num_clusters=4")
    assert model.heads["class"].slices == 4
    embedding = model(torch.randn(3, 1, 12, 12))["class"]
    torch.testing.assert_close(embedding.unflatten(1, (4, 2)).norm(dim=-1), torch.full((3, 4), 0.5))


def test_steps_are_integers_or_shares_of_the_budget():
    train = table_from_labels(np.repeat(np.arange(12), 6), images=np.zeros((72, 2, 2), dtype=np.uint8))
    assert make_method(train=train)[0].steps_per_epoch() == 18  # two passes: round(2 · 72 / (4 · 2))
    assert make_method("method.recluster_every=5", train=train)[0].steps_per_epoch() == 5
    assert make_method("method.recluster_every=0.25", train=train, total_steps=40)[0].steps_per_epoch() == 10
    unknown, _ = make_method("method.recluster_every=0.25", train=train, total_steps=None)
    with pytest.raises(ConfigError, match=r"a method setting of 0\.25 \(a share of the budget\) needs the budget"):
        unknown.steps_per_epoch()

    method, _ = make_method("method.warmup=0.25", "method.full_embedding_from=0.5", "method.finetune_from=0.75",
                            total_steps=40)
    assert (method.warmup_step, method.full_embedding_step, method.finetune_step) == (10, 20, 30)
    assert [method.divided(s) for s in (0, 9, 10, 29, 30, 39)] == [False, False, True, True, False, False]
    assert method.phase(10) == "warmup"  # not clustered yet
    method.assignment = np.zeros(72, dtype=np.int64)
    assert [method.phase(s) for s in (9, 10, 19, 20, 29, 30)] == ["warmup", "divided", "divided", "full_embedding",
                                                                  "full_embedding", "conquer"]
    assert make_method("method.num_clusters=1")[0].phase(50) == "train"


def test_each_cluster_stream_stays_in_its_cluster_round_robin():
    # 21 classes × 4 images (class c: rows 4c..4c+3). Cluster 0: classes 0-15, bar row 0 (class 0); cluster 1:
    # classes 16-18 (3 < P = 4 classes); cluster 2: classes 19-20 (2 classes), bar row 76 (class 19); cluster 3: the
    # single images 0 and 76, so no class with 2 images: it sits the period out.
    labels = np.repeat(np.arange(21), 4)
    train = table_from_labels(labels, images=np.zeros((84, 2, 2), dtype=np.uint8))
    assignment = np.select([labels < 16, labels < 19], [0, 1], 2)
    assignment[[0, 76]] = 3
    method, _ = make_method("method.num_clusters=4", "method.recluster_every=9", train=train, embed=no_embedding)
    given_clusters(method, assignment)
    plan = plan_at(method, 0, 0)
    assert len(plan) == method.steps_per_epoch() == 9 and streams(plan) == ["cluster"] * 9
    clusters = [np.unique(assignment[rows]).tolist() for rows in plan.indices]
    assert clusters == [[0], [1], [2]] * 3
    for rows, seeds in zip(plan.indices, plan.seeds, strict=True):
        classes, counts = np.unique(labels[rows], return_counts=True)
        assert len(seeds) == len(rows)
        if assignment[rows[0]] == 0:
            assert len(classes) == 4 and set(counts) == {2} and 0 not in rows
        elif assignment[rows[0]] == 1:  # C = 3 classes × ⌊8 / 3⌋ = 2 images
            assert classes.tolist() == [16, 17, 18] and set(counts) == {2}
        else:  # C = 2 classes × ⌊8 / 2⌋ = 4 images; class 19 has 3 here, so one repeats
            assert classes.tolist() == [19, 20] and counts.tolist() == [4, 4] and 76 not in rows
            assert set(rows[labels[rows] == 19]) == {77, 78, 79}
    first = np.unique(np.concatenate([labels[r] for r in plan.indices[0:9:3]]))
    assert len(first) == 12  # cluster 0's stream visits distinct classes before repeating any
    assert same_plans(plan_at(method, 0, 0), plan)
    given_clusters(method, assignment, epoch=1)
    later = plan_at(method, 9, 1)
    assert [np.unique(assignment[rows]).tolist() for rows in later.indices] == clusters
    assert not all(np.array_equal(a, b) for a, b in zip(plan.indices, later.indices, strict=True))


def blob_features(train, seed=0):
    """Two well-separated groups of classes in feature space: classes < 6 and classes >= 6."""
    rng = np.random.default_rng(seed)
    centers = np.where(train.labels[:, None] < 6, 5.0, -5.0) * np.eye(16)[0]
    return (centers + rng.normal(0, 0.5, size=(len(train), 16))).astype(np.float32)


class Embedding:
    """A stand-in for the context's embedding of the training set: fixed vectors, every request recorded."""

    def __init__(self, vectors):
        self.vectors, self.asked = vectors, []

    def __call__(self, output):
        self.asked.append(output)
        return self.vectors


def test_the_default_stream_runs_before_the_warmup_ends_and_from_the_conquer_on(pattern_table):
    train = pattern_table(12, 6, seed=0, name="train")
    embed = Embedding(blob_features(train))
    method, _ = make_method("method.warmup=3", "method.recluster_every=3", "method.finetune_from=9", train=train,
                            embed=embed, total_steps=12)
    default = method.sampler()
    warmup = plan_at(method, 0, 0)
    assert same_plans(warmup, default.stream(0, 3)) and streams(warmup) == ["class"] * 3 and embed.asked == []
    assert method.phase(0) == "warmup"
    divided = plan_at(method, 3, 1)
    assert streams(divided) == ["cluster"] * 3 and embed.asked == ["features"]
    assert same_plans(plan_at(method, 3, 1), divided) and embed.asked == ["features"]  # once per plan
    plan_at(method, 6, 2)
    assert embed.asked == ["features"] * 2
    assert method.phase(3) == method.phase(8) == "divided" and method.phase(9) == "conquer"
    conquer = plan_at(method, 9, 3)
    assert same_plans(conquer, default.stream(9, 3)) and streams(conquer) == ["class"] * 3
    assert embed.asked == ["features"] * 2

    # The conquer phase starting inside a period: its plan switches to the default stream there.
    method, _ = make_method("method.recluster_every=3", "method.finetune_from=5", train=train, embed=embed,
                            total_steps=12)
    switching = plan_at(method, 3, 1)
    assert streams(switching) == ["cluster", "cluster", "class"]
    assert same_plans(BatchPlan(switching.indices[2:], switching.seeds[2:]), method.sampler().stream(5, 1))


def as_batch(train, rows, stream="cluster"):
    images = torch.from_numpy(train.images[rows]).float().unsqueeze(1) / 255
    return Batch(images, torch.from_numpy(train.labels[rows]), torch.from_numpy(rows), stream)


def test_a_cluster_batch_moves_only_its_slice_of_the_embedding_layer_and_the_trunk(pattern_table):
    train = pattern_table(12, 6, seed=0, name="train")
    method, model = make_method(train=train, embed=no_embedding)
    given_clusters(method, np.arange(len(train)) % 2)
    plan = plan_at(method, 0, 0)
    rows = plan.indices[1]
    assert set(method.assignment[rows]) == {1} and plan.stream(1) == "cluster"
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD(list(model.parameters()) + list(method.parameters()), lr=0.5, momentum=0.0)
    method.objective(model, as_batch(train, rows)).total.backward()
    optimizer.step()
    after = dict(model.named_parameters())
    for name in ("heads.class.linear.weight", "heads.class.linear.bias"):
        assert torch.equal(after[name][:4], before[name][:4]), name  # slice 0: bit-identical
        assert not torch.equal(after[name][4:], before[name][4:]), name
    trunk = [n for n in before if n.startswith("trunk.")]
    assert any(not torch.equal(after[n], before[n]) for n in trunk)


def test_loss_is_the_base_loss_on_the_renormalized_slice_then_on_the_full_embedding(pattern_table):
    train = pattern_table(12, 6, seed=0, name="train")
    method, _ = make_method("method.full_embedding_from=2", "loss.name=ContrastiveLoss", "miner.name=null",
                            train=train, embed=no_embedding)
    given_clusters(method, np.arange(len(train)) % 2)
    rows = plan_at(method, 0, 0).indices[1]
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
    method.ctx.step = 1
    assert method.loss(out, batch).total.item() == pytest.approx(contrastive(slice_one), abs=1e-6)
    whole = contrastive(out["class"])
    assert method.loss(out, as_batch(train, rows, "class")).total.item() == pytest.approx(whole, abs=1e-6)
    method.ctx.step = 2
    assert method.loss(out, batch).total.item() == pytest.approx(whole, abs=1e-6)


def test_each_learner_has_its_own_loss_on_its_slice_size(pattern_table):
    train = pattern_table(12, 6, seed=0, name="train")
    method, model = make_method("loss.name=ProxyAnchorLoss", "miner.name=null", train=train, embed=no_embedding)
    (group,) = method.param_groups(model, lr=0.01, weight_decay=0.0)
    assert [tuple(p.shape) for p in group["params"]] == [(12, 8), (12, 4), (12, 4)]
    given_clusters(method, np.arange(len(train)) % 2)
    batch = as_batch(train, plan_at(method, 0, 0).indices[1])
    out = {"class": F.normalize(torch.randn(len(batch.labels), 2, 4), dim=-1).flatten(1) / 2**0.5}
    method.loss(out, batch).total.backward()
    base, first, second = group["params"]
    assert base.grad is None and first.grad is None and second.grad.abs().sum() > 0


def test_one_cluster_is_the_baseline(pattern_table):
    train = pattern_table(12, 6, seed=0, name="train")
    baseline, baseline_model = make_method(method=(), train=train)
    method, model = make_method("method.num_clusters=1", "method.recluster_every=3", train=train, embed=no_embedding)
    assert model.heads["class"].slices == 1 and not list(method.parameters())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), baseline_model.state_dict().values(),
                                                 strict=True))
    out = {"class": F.normalize(torch.randn(8, 8), dim=-1)}
    for epoch in (0, 1):
        ours, theirs = plan_at(method, 3 * epoch, epoch), baseline.plan(epoch)
        assert same_plans(ours, theirs) and streams(ours) == ["class"] * 3
        batch = as_batch(train, ours.indices[0], ours.stream(0))
        assert method.loss(out, batch).total.item() == baseline.loss(out, batch).total.item()
        assert floats(method.loss(out, batch).parts) == floats(baseline.loss(out, batch).parts)
    default, _ = make_method("method.num_clusters=1", train=train, embed=no_embedding)  # a period of 18 steps
    whole = plan_at(default, 0, 0)
    assert len(whole) == 18
    assert all(same_plans(BatchPlan(whole.indices[3 * e : 3 * e + 3], whole.seeds[3 * e : 3 * e + 3]),
                          baseline.plan(e)) for e in range(6))


CLUSTERING_REPORT = {"clustering_s", "cluster_smallest_share", "cluster_class_purity", "cluster_classes_mean"}


def test_clustering_is_deterministic_matched_and_reported_once(monkeypatch, pattern_table):
    train = pattern_table(12, 6, seed=0, name="train")
    features = blob_features(train)
    first, _ = make_method("method.recluster_every=3", train=train, embed=Embedding(features))
    second, _ = make_method("method.recluster_every=3", train=train, embed=Embedding(features))
    plan = plan_at(first, 0, 0)
    plan_at(second, 0, 0)
    assert np.array_equal(first.assignment, second.assignment)
    assert (first.clustered_epoch, first.clustered_step) == (0, 0)
    assert set(np.unique(first.assignment[train.labels < 6])) != set(np.unique(first.assignment[train.labels >= 6]))
    batch = as_batch(train, plan.indices[0])
    out = {"class": F.normalize(torch.randn(len(batch.labels), 8), dim=-1)}
    parts = first.loss(out, batch).parts
    assert CLUSTERING_REPORT <= set(parts) and parts["clustering_s"] >= 0
    assert parts["cluster_class_purity"] == 1.0 and parts["cluster_smallest_share"] == 0.5
    assert parts["cluster_classes_mean"] == 6.0  # each blob of 6 classes is one cluster
    assert not CLUSTERING_REPORT & set(first.loss(out, batch).parts)

    kept = first.assignment.copy()
    plan_at(first, 0, 0)  # the same plan again (a resumed run): not clustered again
    assert first.ctx.embed.asked == ["features"]
    monkeypatch.setattr(clustering, "kmeans", lambda *args, **kwargs: 1 - kept)  # the same clusters, renamed
    plan_at(first, 3, 1)
    assert first.ctx.embed.asked == ["features"] * 2 and (first.clustered_epoch, first.clustered_step) == (1, 3)
    assert np.array_equal(first.assignment, kept)


@pytest.mark.parametrize(("cluster_on", "output"), [("penultimate", "features"), ("embedding", "class")])
def test_clustering_reads_the_unit_pooled_features_or_the_embedding(cluster_on, output, monkeypatch, pattern_table):
    train = pattern_table(12, 6, seed=0, name="train")
    vectors = blob_features(train)
    embed, seen = Embedding(vectors), []
    monkeypatch.setattr(clustering, "kmeans", lambda x, k, **kwargs: seen.append(x) or np.arange(len(x)) % k)
    method, _ = make_method(f"method.cluster_on={cluster_on}", train=train, embed=embed)
    plan_at(method, 0, 0)
    assert embed.asked == [output]
    expected = vectors / np.linalg.norm(vectors, axis=1, keepdims=True) if output == "features" else vectors
    np.testing.assert_allclose(seen[0], expected, rtol=0, atol=1e-7)


def test_the_report_says_how_the_clusters_split_the_classes(monkeypatch, pattern_table):
    # 12 classes × 6 images; class c puts c mod 4 of its images in cluster 1, the rest in cluster 0.
    train = pattern_table(12, 6, seed=0, name="train")
    in_one = (np.arange(72) % 6) < (train.labels % 4)
    monkeypatch.setattr(clustering, "kmeans", lambda x, k, **kwargs: in_one.astype(np.int64))
    method, _ = make_method(train=train, embed=Embedding(blob_features(train)))
    plan_at(method, 0, 0)
    report = method.clustering_report()
    # purity: mean over classes of max(m, 6 − m) / 6 for m = 0, 1, 2, 3 (three classes each) = (6 + 5 + 4 + 3) / 24
    assert report["cluster_class_purity"] == pytest.approx(18 / 24, abs=1e-12)
    # cluster 0 holds all 12 classes, cluster 1 the 9 with m > 0; cluster 1 has 3 · (1 + 2 + 3) = 18 of 72 rows
    assert report["cluster_classes_mean"] == 10.5 and report["cluster_smallest_share"] == 0.25
    assert set(report) == CLUSTERING_REPORT and method.clustering_report() == {}


def test_assignment_survives_a_weights_only_checkpoint_and_the_plan_is_not_clustered_again(pattern_table):
    train = pattern_table(12, 6, seed=0, name="train")
    method, _ = make_method("method.recluster_every=3", train=train, embed=Embedding(blob_features(train)))
    plan = plan_at(method, 3, 1)
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    restored, _ = make_method("method.recluster_every=3", train=train, embed=no_embedding)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert np.array_equal(restored.assignment, method.assignment)
    assert (restored.clustered_epoch, restored.clustered_step) == (1, 3)
    assert same_plans(plan_at(restored, 3, 1), plan)


@pytest.fixture
def splits(pattern_table):
    return Splits(train=pattern_table(12, 6, seed=0, name="train"), val=pattern_table(4, 5, seed=1, name="val"),
                  test=pattern_table(6, 5, seed=2, name="test"), dataset="patterns", protocol="generated patterns")


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def history(run_dir, drop=("images_per_s", "clustering_s")):
    return [{k: v for k, v in r.items() if k not in drop} for r in records(run_dir)]


def test_training_resumes_exactly_through_every_phase(tmp_path, splits, interrupted_run):
    config = make_config("train.steps=15", "train.validate_every=5", "train.log_every=1", "method.warmup=3",
                         "method.recluster_every=3", "method.full_embedding_from=9", "method.finetune_from=12")
    Trainer(config, tmp_path / "straight", progress=False, splits=splits).fit()
    train = [r for r in records(tmp_path / "straight") if r["kind"] == "train"]
    assert [r["step"] for r in train if "clustering_s" in r] == [4, 7, 10]  # the plans at steps 3, 6 and 9
    assert [r["phase"] for r in train] == ["warmup"] * 3 + ["divided"] * 6 + ["full_embedding"] * 3 + ["conquer"] * 3

    assert interrupted_run(config, tmp_path / "resumed", splits) == [5]  # inside the period of steps 3-5
    Trainer.resume(tmp_path / "resumed", progress=False, splits=splits).fit()
    straight = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    again = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert all(torch.equal(straight["model"][k], again["model"][k]) for k in straight["model"])
    assert history(tmp_path / "resumed") == history(tmp_path / "straight")


def test_one_cluster_trains_like_the_baseline(tmp_path, splits):
    runs = {}
    for name, method in (("baseline", ()), ("divide_conquer", (*METHOD, "method.num_clusters=1",
                                                                 "method.recluster_every=3"))):
        config = make_config("train.steps=6", "train.validate_every=3", method=method)
        Trainer(config, tmp_path / name, progress=False, splits=splits).fit()
        runs[name] = load_checkpoint(tmp_path / name / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(runs["baseline"][k], runs["divide_conquer"][k]) for k in runs["baseline"])
    assert history(tmp_path / "baseline", drop=("images_per_s",)) == history(tmp_path / "divide_conquer",
                                                                              drop=("images_per_s",))
