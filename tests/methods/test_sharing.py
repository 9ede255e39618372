import itertools
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import unseen.methods.clustering as clustering
from unseen.config import load_config
from unseen.data.base import Splits, table_from_labels
from unseen.errors import ConfigError
from unseen.methods import Batch
from unseen.methods.sharing import Sharing, task_steps
from unseen.methods.surrogate import (
    group_labels,
    negative_probabilities,
    random_group_batches,
    shared_feature_triplets,
    subtract_class_means,
    surrogate_batches,
)
from unseen.train.checkpoint import load_checkpoint
from unseen.train.components import build_components, build_method
from unseen.train.trainer import Trainer

TINY = ["model.channels=[4,8]", "model.embedding_dim=8", "data.image_size=12", "sampler.classes_per_batch=4",
        "sampler.samples_per_class=2", "train.threads=1", "evaluation.recall_at=[1,2]",
        "evaluation.metrics=[recall,map@r]"]
MIC = ["method.name=sharing", "method.variant=mic", "method.shared_dim=6", "method.num_shared_clusters=3",
       "method.kmeans_iterations=5"]
SHARING = ["method.name=sharing", "method.variant=sharing", "method.shared_dim=6"]
MARGIN = ["loss.name=MarginLoss", "miner.name=DistanceWeightedMiner"]
MULTI_SIMILARITY = ["loss.name=MultiSimilarityLoss", "miner.name=MultiSimilarityMiner"]


def make_config(*overrides, method=MIC):
    return load_config(None, [*TINY, *method, *overrides])


def make_method(*overrides, method=MIC, train=None, embed=None, num_classes=12, seed=0):
    """The method and the network it trains (with the shared head), from a seeded global RNG."""
    torch.manual_seed(seed)
    return build_method(make_config(*overrides, method=method), num_classes=num_classes, train=train, in_chans=1,
                        embed=embed)


def no_embedding(output):
    pytest.fail(f"the training set was embedded ({output}), so clustered, where it should not be")


def plan_at(method, step, epoch):
    """The plan of `epoch` starting at optimizer step `step`, as the trainer asks for it."""
    method.ctx.step = step
    return method.plan(epoch)


def given_clusters(method, assignment, epoch=0, step=0):
    """`assignment` as MIC's surrogate classes made at (`epoch`, `step`)."""
    method.assignment = np.asarray(assignment, dtype=np.int64)
    method.clustered_epoch, method.clustered_step = epoch, step


def as_batch(train, rows, stream):
    images = torch.from_numpy(train.images[rows]).float().unsqueeze(1) / 255
    return Batch(images, torch.from_numpy(train.labels[rows]), torch.from_numpy(rows), stream)


# -- MIC's surrogate labels ------------------------------------------------------------------------
def test_class_mean_subtraction_leaves_every_class_with_zero_mean():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=40)
    features = rng.normal(3.0, 2.0, size=(40, 7)).astype(np.float32)
    centred = subtract_class_means(features, labels)
    for c in np.unique(labels):
        np.testing.assert_allclose(centred[labels == c].mean(axis=0), 0.0, atol=1e-6)
        np.testing.assert_allclose(features[labels == c] - centred[labels == c],
                                   np.broadcast_to(features[labels == c].mean(axis=0), centred[labels == c].shape),
                                   atol=1e-5)


def test_mic_clusters_class_normalized_early_features_then_the_shared_embedding(monkeypatch, pattern_table):
    train = pattern_table(12, 6, seed=0, name="train")
    rng = np.random.default_rng(0)
    outputs = {"tap:0": rng.normal(2.0, 1.0, size=(len(train), 10)), "shared": rng.normal(size=(len(train), 6))}
    asked, clustered = [], []

    def fake_kmeans(x, k, **kwargs):
        clustered.append(np.array(x))
        return np.arange(len(x)) % k if len(clustered) == 1 else (np.arange(len(x)) + 1) % k  # renamed clusters

    monkeypatch.setattr(clustering, "kmeans", fake_kmeans)
    method, _ = make_method("method.recluster_every=8", train=train,
                            embed=lambda output: asked.append(output) or outputs[output])
    assert method.steps_per_epoch() == 5  # 3 class steps + round(0.8 · 3) shared steps
    plan_at(method, 0, 0)
    assert asked == ["tap:0"] and (method.clustered_epoch, method.clustered_step) == (0, 0)
    unit = outputs["tap:0"] / np.linalg.norm(outputs["tap:0"], axis=1, keepdims=True)
    for c in range(12):  # the features k-means saw: L2-normalized, then each class's mean removed
        members = train.labels == c
        np.testing.assert_allclose(clustered[0][members].mean(axis=0), 0.0, atol=1e-6)
        np.testing.assert_allclose(clustered[0][members], unit[members] - unit[members].mean(axis=0), atol=1e-6)
    first = method.assignment.copy()
    plan_at(method, 0, 0)  # the same plan again (a resumed run)
    plan_at(method, 5, 1)  # 5 steps after the clustering, fewer than 8
    assert asked == ["tap:0"] and np.array_equal(method.assignment, first)
    plan_at(method, 10, 2)  # re-clustered on the shared embedding, no class normalization, ids matched
    assert asked == ["tap:0", "shared"] and (method.clustered_epoch, method.clustered_step) == (2, 10)
    np.testing.assert_array_equal(clustered[1], outputs["shared"])
    assert np.array_equal(method.assignment, first)
    plan_at(method, 15, 3)
    assert asked == ["tap:0", "shared"]
    plan_at(method, 20, 4)
    assert asked == ["tap:0", "shared", "shared"]


def test_the_clustering_is_reported_once_in_the_next_steps_parts(monkeypatch, pattern_table):
    train = pattern_table(12, 6, seed=0, name="train")
    in_one = (np.arange(72) % 6) < (train.labels % 3)  # class c: c mod 3 of its 6 images in cluster 1
    monkeypatch.setattr(clustering, "kmeans", lambda x, k, **kwargs: in_one.astype(np.int64))
    method, model = make_method(train=train, embed=lambda output: np.ones((len(train), 4)))
    plan = plan_at(method, 0, 0)
    batch = as_batch(train, plan.indices[0], plan.stream(0))
    parts = method.objective(model, batch).parts
    # purity: mean over classes of max(m, 6 − m) / 6 for m = 0, 1, 2 (four classes each) = (6 + 5 + 4) / 18;
    # cluster 0 holds all 12 classes, cluster 1 the 8 with m > 0 and 4 · (1 + 2) = 12 of the 72 rows; cluster 2: none
    assert parts["cluster_class_purity"] == pytest.approx(15 / 18, abs=1e-12)
    assert parts["cluster_classes_mean"] == pytest.approx(20 / 3, abs=1e-12)
    assert parts["cluster_smallest_share"] == 0.0 and parts["clustering_s"] >= 0
    assert set(method.objective(model, batch).parts) == {"base", "decorrelation"}


def test_surrogate_batches_keep_groups_in_clusters_with_label_noise():
    rng = np.random.default_rng(0)
    assignment = rng.integers(0, 6, size=300)
    batches = surrogate_batches(assignment, groups=5, group_size=4, num_batches=200, noise=0.2, rng=rng)
    assert [len(b) for b in batches] == [20] * 200
    labels = np.concatenate([group_labels(assignment, rows, 4) for rows in batches])
    rows = np.concatenate(batches)
    firsts = labels[::4]
    assert all(firsts[i] not in firsts[max(0, i - 2) : i] for i in range(len(firsts)))  # no repeat of the last two
    assert np.array_equal(assignment[rows[::4]], firsts)  # the first image of a group names it
    noisy = assignment[rows] != labels
    assert noisy.mean() == pytest.approx(0.2, abs=0.02)  # the expected rate over whole groups
    clean = surrogate_batches(assignment, groups=5, group_size=4, num_batches=20, noise=0.0,
                              rng=np.random.default_rng(1))
    for rows in clean:
        assert np.array_equal(assignment[rows], group_labels(assignment, rows, 4))
        assert all(len(set(group)) == 4 for group in rows.reshape(5, 4))  # distinct members


def test_random_groups_walk_through_shuffles_of_all_rows():
    batches = random_group_batches(30, groups=3, group_size=2, num_batches=7, rng=np.random.default_rng(0))
    assert [len(b) for b in batches] == [6] * 7
    order = np.concatenate(batches)
    assert sorted(order[:30]) == list(range(30))  # the first shuffle, then the next one
    assert len(set(order[30:])) == 12


# -- Sharing Matters' triplets ---------------------------------------------------------------------
def slow_negative_probabilities(x, groups, classes):
    dim, size = x.shape[1], len(x)
    rows = []
    for a in range(size):
        weights = []
        for n in range(size):
            if groups[n] == groups[a] or classes[n] == classes[a]:
                weights.append(0.0)
                continue
            d = max(0.5, float(torch.linalg.norm(x[a] - x[n])))
            weights.append(d ** (2 - dim) * (1 - d * d / 4) ** (-(dim - 3) / 2))
        total = sum(weights)
        rows.append([w / total if total else 0.0 for w in weights])
    return torch.tensor(rows, dtype=torch.float64)


def test_negative_probabilities_are_distance_weighted_over_the_allowed_negatives():
    torch.manual_seed(0)
    x = F.normalize(torch.randn(10, 5, dtype=torch.float64), dim=-1)
    groups = torch.arange(10) // 2
    classes = torch.tensor([0, 1, 1, 2, 3, 0, 4, 4, 5, 1])
    expected = slow_negative_probabilities(x, groups, classes)
    torch.testing.assert_close(negative_probabilities(x, groups, classes), expected, rtol=1e-9, atol=1e-12)


def test_sampler_never_draws_a_negative_of_the_anchors_class_or_group():
    """Every class labelling of a 3 groups × 2 batch with up to 4 classes, up to renaming (187 of them)."""
    torch.manual_seed(0)
    x = F.normalize(torch.randn(6, 4), dim=-1)
    groups = torch.arange(6) // 2
    labellings = [c for c in itertools.product(range(4), repeat=6) if all(c[i] <= max(c[:i], default=-1) + 1
                                                                          for i in range(6))]
    assert len(labellings) == 187
    for seed, classes in enumerate(labellings):
        classes = torch.tensor(classes)
        excluded = (groups[:, None] == groups[None, :]) | (classes[:, None] == classes[None, :])
        probabilities = negative_probabilities(x, groups, classes)
        assert torch.all(probabilities[excluded] == 0)
        assert torch.all(probabilities[~excluded] > 0)
        anchors, positives, negatives = shared_feature_triplets(x, groups, classes, np.random.default_rng(seed))
        assert anchors.tolist() == [a for a in range(6) if not excluded[a].all()]  # one triplet per possible anchor
        assert torch.all(groups[positives] == groups[anchors]) and torch.all(positives != anchors)
        assert torch.all(groups[negatives] != groups[anchors])
        assert torch.all(classes[negatives] != classes[anchors])


# -- the batch plan --------------------------------------------------------------------------------
def test_task_steps_are_a_fixed_count_in_class_then_shared_order():
    steps = task_steps(10, (1.0, 0.3), np.random.default_rng(0))
    assert sum(t == "class" for t, _ in steps) == 10 and sum(t == "shared" for t, _ in steps) == 3
    assert steps == sorted(steps, key=lambda s: (s[1], s[0] != "class"))
    assert [i for t, i in steps if t == "class"] == list(range(10))


@pytest.mark.parametrize("method", [MIC, SHARING], ids=["mic", "sharing"])
def test_plan_length_is_known_before_clustering_and_the_class_batches_are_the_baselines(method, pattern_table):
    train = pattern_table(12, 6, seed=0, name="train")
    ours, _ = make_method(method=method, train=train, embed=no_embedding)
    baseline, _ = make_method(method=(), train=train)
    iterations = baseline.steps_per_epoch()
    shared = round((0.8 if method is MIC else 1.0) * iterations)
    assert ours.steps_per_epoch() == iterations + shared  # known without clustering
    if method is MIC:
        given_clusters(ours, np.arange(len(train)) % 3)
    for epoch in (0, 1):
        plan, reference = plan_at(ours, epoch * (iterations + shared), epoch), baseline.plan(epoch)
        again = ours.plan(epoch)
        assert len(plan) == ours.steps_per_epoch()
        assert plan.streams.count("class") == iterations and plan.streams.count("shared") == shared
        classes = [i for i, s in enumerate(plan.streams) if s == "class"]
        assert all(np.array_equal(plan.indices[b], r) for b, r in zip(classes, reference.indices, strict=True))
        assert all(np.array_equal(plan.seeds[b], r) for b, r in zip(classes, reference.seeds, strict=True))
        assert all(np.array_equal(a, b) for a, b in zip(plan.indices, again.indices, strict=True))
        assert all(len(rows) == len(seeds) == 8 for rows, seeds in zip(plan.indices, plan.seeds, strict=True))
    if method is MIC:  # shared batches: groups of one surrogate class (no noise in this check)
        quiet, _ = make_method("method.random_cluster_p=0", train=train, embed=no_embedding)
        given_clusters(quiet, ours.assignment)
        plan = plan_at(quiet, 0, 0)
        for rows, stream in zip(plan.indices, plan.streams, strict=True):
            if stream == "shared":
                assert all(len(set(quiet.assignment[g])) == 1 for g in rows.reshape(4, 2))


def test_an_epoch_has_a_fixed_count_of_steps_of_each_task():
    # 22 classes, P = 4: I = ceil(22 / 4) = 6 iterations; round(0.5 · 6) = 3 class and round(0.7 · 6) = 4 shared steps
    labels = np.repeat(np.arange(22), 3)
    train = table_from_labels(labels, images=np.zeros((66, 2, 2), dtype=np.uint8))
    method, _ = make_method("method.class_task_p=0.5", "method.shared_task_p=0.7", method=SHARING, train=train,
                            num_classes=22)
    assert method.steps_per_epoch() == 7
    for epoch in (0, 1, 2):
        plan = plan_at(method, 7 * epoch, epoch)
        assert len(plan) == 7 and plan.streams.count("class") == 3 and plan.streams.count("shared") == 4
    mic, _ = make_method(train=train, num_classes=22)
    assert mic.steps_per_epoch() == 6 + 5  # round(0.8 · 6) = 5


def test_mic_reclusters_every_four_passes_unless_told(pattern_table):
    train = pattern_table(12, 6, seed=0, name="train")
    # 72 images in batches of 8: 9 iterations a pass, each of 1 + 0.8 steps: 4 · 9 · 1.8 = 64.8 steps
    assert make_method(train=train)[0].recluster_interval() == 65
    assert make_method("method.shared_task_p=0.5", "method.class_task_p=0.5", train=train)[0].recluster_interval() == 36
    assert make_method("method.recluster_every=7", train=train)[0].recluster_interval() == 7


# -- the loss --------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss", [MARGIN, MULTI_SIMILARITY], ids=["margin", "multi_similarity"])
@pytest.mark.parametrize("method", [MIC, SHARING], ids=["mic", "sharing"])
def test_each_variant_composes_with_the_base_loss_on_both_tasks(method, loss, pattern_table):
    train = pattern_table(12, 6, seed=0, name="train")
    ours, model = make_method(*loss, "method.decorrelation_weight=0", method=method, train=train,
                              embed=no_embedding)
    assert model.output_dims["shared"] == 6
    given_clusters(ours, np.arange(len(train)) % 3)
    plan = plan_at(ours, 0, 0)
    for stream, silent in (("class", "heads.shared."), ("shared", "heads.class.")):
        batch = as_batch(train, plan.indices[plan.streams.index(stream)], stream)
        model.zero_grad()
        result = ours.objective(model, batch)
        assert torch.isfinite(result.total) and set(result.parts) == {"base" if stream == "class" else "shared",
                                                                        "decorrelation"}
        result.total.backward()
        grads = {n: q.grad for n, q in model.named_parameters()}
        assert all(g is None or g.abs().sum() == 0 for n, g in grads.items() if n.startswith(silent)), stream
        assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith("trunk."))
    weighted, _ = make_method(*loss, "method.decorrelation_weight=100", method=method, train=train)
    given_clusters(weighted, ours.assignment)
    batch = as_batch(train, plan.indices[0], "class")
    model.zero_grad()
    weighted.objective(model, batch).total.backward()  # the decorrelation reaches the shared head and R
    assert model.heads["shared"].linear.weight.grad.abs().sum() > 0
    assert all(q.grad.abs().sum() > 0 for q in weighted.decorrelation.parameters())


def test_shared_task_of_mic_is_the_loss_on_surrogate_labels_with_noise_kept(pattern_table):
    train = pattern_table(12, 6, seed=0, name="train")
    method, _ = make_method("loss.name=ContrastiveLoss", "miner.name=null", "method.decorrelation_weight=0",
                            train=train)
    method.assignment = np.arange(len(train)) % 3
    rows = np.array([0, 3, 1, 5, 2, 4, 6, 7])  # groups labelled 0, 1, 2, 0 by their first images; 3 and 7 are noise
    out = {"class": F.normalize(torch.randn(8, 8), dim=-1), "shared": F.normalize(torch.randn(8, 6), dim=-1)}
    labels = [0, 0, 1, 1, 2, 2, 0, 0]
    x = out["shared"]

    def contrastive():  # PML defaults: positives pulled below 0, negatives pushed beyond 1, mean of the non-zero
        pos, neg = [], []
        for i, j in itertools.permutations(range(8), 2):
            d = float(torch.linalg.norm(x[i] - x[j]))
            (pos if labels[i] == labels[j] else neg).append(d if labels[i] == labels[j] else max(0, 1 - d))
        return np.mean([v for v in pos if v > 0]) + np.mean([v for v in neg if v > 0])

    result = method.loss(out, as_batch(train, rows, "shared"))
    assert float(result.parts["shared"]) == pytest.approx(contrastive(), abs=1e-6)


def test_shared_task_of_sharing_is_the_loss_on_its_own_triplets_not_the_miners(pattern_table):
    train = pattern_table(12, 6, seed=0, name="train")
    method, _ = make_method("loss.name=TripletMarginLoss", "loss.margin=0.2", "miner.name=TripletMarginMiner",
                            "miner.margin=0.2", "method.decorrelation_weight=0", method=SHARING, train=train)
    rows = np.array([0, 1, 6, 12, 7, 2, 18, 19])  # classes 0 0 | 1 2 | 1 0 | 3 3 in groups of K = 2
    out = {"class": F.normalize(torch.randn(8, 8), dim=-1), "shared": F.normalize(torch.randn(8, 6), dim=-1)}
    batch = as_batch(train, rows, "shared")
    groups = torch.arange(8) // 2
    triplets = shared_feature_triplets(out["shared"], groups, batch.labels,
                                       np.random.default_rng([0, *rows.tolist()]))  # the draw of train.seed 0
    x = out["shared"]
    losses = []
    for a, p, n in zip(*(t.tolist() for t in triplets), strict=True):
        assert groups[p] == groups[a] and groups[n] != groups[a] and batch.labels[n] != batch.labels[a]
        losses.append(max(0.0, float(torch.linalg.norm(x[a] - x[p]) - torch.linalg.norm(x[a] - x[n])) + 0.2))
    expected = np.mean([v for v in losses if v > 0])  # PML's reduction: the mean of the non-zero
    assert len(losses) == 8 and float(method.loss(out, batch).parts["shared"]) == pytest.approx(expected, abs=1e-6)


def test_loss_adds_the_weighted_decorrelation_to_each_task(pattern_table):
    train = pattern_table(12, 6, seed=0, name="train")
    method, _ = make_method("method.decorrelation_weight=250", method=SHARING, train=train)
    out = {"class": F.normalize(torch.randn(8, 8), dim=-1), "shared": F.normalize(torch.randn(8, 6), dim=-1)}
    for stream in ("class", "shared"):
        result = method.loss(out, as_batch(train, np.arange(8), stream))
        task = float(result.parts["base" if stream == "class" else "shared"])
        expected = task + 250 * float(method.decorrelation(out["class"], out["shared"]).detach())
        assert result.total.item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="unknown batch stream 'other'"):
        method.loss(out, as_batch(train, np.arange(8), "other"))


# -- configuration ---------------------------------------------------------------------------------
@pytest.fixture
def splits(pattern_table):
    return Splits(train=pattern_table(12, 6, seed=0, name="train"), val=pattern_table(4, 5, seed=1, name="val"),
                  test=pattern_table(6, 5, seed=2, name="test"), dataset="patterns", protocol="generated patterns")


def test_configuration_errors(splits):
    with pytest.raises(ConfigError, match=r"^method\.num_shared_clusters: only for variant 'mic'"):
        make_method("method.num_shared_clusters=5", method=SHARING)
    with pytest.raises(ConfigError, match=r"both 0"):
        make_method("method.class_task_p=0", "method.shared_task_p=0")
    method = build_components(make_config("method.cluster_tap=2"), splits).method
    with pytest.raises(ConfigError, match=r"^method\.cluster_tap: tap:2: the backbone has 2 intermediate maps"):
        method.plan(0)


def test_param_groups():
    method, model = make_method(*MARGIN, "loss.learn_beta=true", "method.projection_lr=0.5", "optimizer.loss_lr=0.25",
                                "method.projection_weight_decay=0.125")
    assert model.output_dims["shared"] == 6 and isinstance(method, Sharing)
    losses, projection = method.param_groups(model, lr=1.0, weight_decay=0.01)
    assert (losses["name"], losses["lr"], losses["weight_decay"], len(losses["params"])) == ("losses", 0.25, 0.0, 2)
    assert [tuple(q.shape) for q in losses["params"]] == [(12,), (3,)]  # β per class, β per surrogate class
    assert (projection["name"], projection["lr"], projection["weight_decay"]) == ("projection", 0.5, 0.125)
    assert [tuple(q.shape) for q in projection["params"]] == [(512, 6), (512,), (8, 512), (8,)]
    method, model = make_method()
    (projection,) = method.param_groups(model, lr=0.002, weight_decay=0.01)
    assert projection["lr"] == pytest.approx(50 * 0.002)  # the code's 50×
    method, model = make_method("method.projection_lr_multiplier=10")
    (projection,) = method.param_groups(model, lr=0.002, weight_decay=0.01)
    assert projection["lr"] == pytest.approx(10 * 0.002)


# -- training --------------------------------------------------------------------------------------
def test_trunk_and_class_head_start_as_the_baselines(splits):
    torch.manual_seed(0)
    baseline = build_components(make_config(method=()), splits).model.state_dict()
    torch.manual_seed(0)
    ours = build_components(make_config(), splits).model.state_dict()
    assert {k for k in ours if not k.startswith("heads.shared.")} == set(baseline)
    assert all(torch.equal(baseline[k], ours[k]) for k in baseline)


def test_evaluation_uses_only_the_class_embedding(tmp_path, splits):
    trainer = Trainer(make_config("train.epochs=1", "train.validate_every=5"), tmp_path, progress=False,
                      splits=splits)
    trainer.fit()
    c = trainer.c
    assert c.embed(splits.test).shape == (len(splits.test), 8)
    before = c.evaluate(splits.test)
    with torch.no_grad():
        for q in [*c.model.heads["shared"].parameters(), *c.method.parameters()]:
            q.normal_()
    assert c.evaluate(splits.test) == before


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def history(run_dir):
    return [{k: v for k, v in r.items() if k not in ("images_per_s", "clustering_s")} for r in records(run_dir)]


@pytest.mark.parametrize("method", [MIC, SHARING], ids=["mic", "sharing"])
def test_training_resumes_exactly(tmp_path, splits, interrupted_run, method):
    config = make_config("train.steps=15", "train.validate_every=7", "train.log_every=1",
                         "method.recluster_every=4" if method is MIC else "method.decorrelation_weight=100",
                         method=method)
    Trainer(config, tmp_path / "straight", progress=False, splits=splits).fit()
    clustered = [r["step"] for r in records(tmp_path / "straight") if "clustering_s" in r]
    assert clustered == ([1, 6, 11] if method is MIC else [])  # the plans of steps 0, 5 and 10 (4+ steps apart)
    assert interrupted_run(config, tmp_path / "resumed", splits) == [7]  # inside the plan of steps 5-9
    Trainer.resume(tmp_path / "resumed", progress=False, splits=splits).fit()
    straight = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    again = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    for part in ("model", "method"):
        assert all(torch.equal(straight[part][k], again[part][k]) for k in straight[part] if k != "_extra_state")
    extra = straight["method"]["_extra_state"], again["method"]["_extra_state"]
    if method is SHARING:
        assert extra[0]["assignment"] is None and extra[1]["assignment"] is None
    else:
        assert torch.equal(extra[0]["assignment"], extra[1]["assignment"])
        assert (extra[1]["clustered_epoch"], extra[1]["clustered_step"]) == (2, 10)
    records_ = history(tmp_path / "straight")
    assert records_ == history(tmp_path / "resumed")
    assert {"base", "shared", "decorrelation"} <= set().union(*records_)
