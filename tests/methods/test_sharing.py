import itertools
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import unseen.methods.clustering as clustering
from unseen.config import load_config
from unseen.data.base import Splits
from unseen.errors import ConfigError
from unseen.methods import Batch, EpochContext
from unseen.methods.baseline import Baseline
from unseen.methods.sharing import Sharing, task_steps
from unseen.methods.surrogate import (
    group_labels,
    negative_probabilities,
    random_group_batches,
    shared_feature_triplets,
    subtract_class_means,
    surrogate_batches,
)
from unseen.models.backbones import build_trunk
from unseen.models.network import EmbeddingModel
from unseen.train.checkpoint import load_checkpoint
from unseen.train.trainer import Trainer, build_components

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


def make_method(*overrides, method=MIC, num_classes=12):
    config = make_config(*overrides, method=method)
    return Sharing(config, num_classes=num_classes, embedding_dim=config.model.embedding_dim)




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
    method = make_method("method.recluster_every=2")
    rng = np.random.default_rng(0)
    outputs = {"tap:0": rng.normal(2.0, 1.0, size=(len(train), 10)), "shared": rng.normal(size=(len(train), 6))}
    asked, clustered = [], []

    def fake_kmeans(x, k, **kwargs):
        clustered.append(np.array(x))
        return np.arange(len(x)) % k if len(clustered) == 1 else (np.arange(len(x)) + 1) % k  # renamed clusters

    def context(epoch):
        return EpochContext(epoch, train, 0, embed=lambda output: asked.append(output) or outputs[output])

    monkeypatch.setattr(clustering, "kmeans", fake_kmeans)
    method.on_epoch_start(context(0))
    assert asked == ["tap:0"]
    unit = outputs["tap:0"] / np.linalg.norm(outputs["tap:0"], axis=1, keepdims=True)
    for c in range(12):  # the features k-means saw: L2-normalized, then each class's mean removed
        members = train.labels == c
        np.testing.assert_allclose(clustered[0][members].mean(axis=0), 0.0, atol=1e-6)
        np.testing.assert_allclose(clustered[0][members], unit[members] - unit[members].mean(axis=0), atol=1e-6)
    first = method.assignment.copy()
    method.on_epoch_start(context(1))  # not a clustering epoch
    assert asked == ["tap:0"] and np.array_equal(method.assignment, first)
    method.on_epoch_start(context(2))  # re-clustered on the shared embedding, no class normalization, ids matched
    assert asked == ["tap:0", "shared"]
    np.testing.assert_array_equal(clustered[1], outputs["shared"])
    assert np.array_equal(method.assignment, first)


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
    ours = make_method(method=method)
    baseline = Baseline(make_config(method=()), num_classes=12, embedding_dim=8)
    before = ours.batches(train, 0)
    ours.assignment = np.arange(len(train)) % 3
    after = ours.batches(train, 0)
    assert len(before) == len(after) and before.streams == after.streams
    iterations = len(baseline.sampler(train))
    shared = round((0.8 if method is MIC else 1.0) * iterations)
    assert after.streams.count("class") == iterations and after.streams.count("shared") == shared
    for epoch in (0, 1):
        plan, reference = ours.batches(train, epoch), baseline.batches(train, epoch)
        again = ours.batches(train, epoch)
        classes = [i for i, s in enumerate(plan.streams) if s == "class"]
        assert all(np.array_equal(plan.indices[b], r) for b, r in zip(classes, reference.indices, strict=True))
        assert all(np.array_equal(plan.seeds[b], r) for b, r in zip(classes, reference.seeds, strict=True))
        assert all(np.array_equal(a, b) for a, b in zip(plan.indices, again.indices, strict=True))
        assert all(len(rows) == len(seeds) == 8 for rows, seeds in zip(plan.indices, plan.seeds, strict=True))
    if method is MIC:  # shared batches: groups of one surrogate class (no noise in this check)
        quiet = make_method("method.random_cluster_p=0")
        quiet.assignment = ours.assignment
        plan = quiet.batches(train, 0)
        for rows, stream in zip(plan.indices, plan.streams, strict=True):
            if stream == "shared":
                assert all(len(set(quiet.assignment[g])) == 1 for g in rows.reshape(4, 2))


# -- the loss --------------------------------------------------------------------------------------
def tiny_embedder(method):
    torch.manual_seed(0)
    return EmbeddingModel(build_trunk("convnet", in_chans=1, channels=(4, 8)), 8, extra_heads=method.extra_heads())


@pytest.mark.parametrize("loss", [MARGIN, MULTI_SIMILARITY], ids=["margin", "multi_similarity"])
@pytest.mark.parametrize("method", [MIC, SHARING], ids=["mic", "sharing"])
def test_each_variant_composes_with_the_base_loss_on_both_tasks(method, loss, pattern_table):
    train = pattern_table(12, 6, seed=0, name="train")
    ours = make_method(*loss, "method.decorrelation_weight=0", method=method)
    model = tiny_embedder(ours)
    ours.attach(model)
    ours.assignment = np.arange(len(train)) % 3
    plan = ours.batches(train, 0)
    for stream, silent in (("class", "heads.shared."), ("shared", "heads.class.")):
        batch = as_batch(train, plan.indices[plan.streams.index(stream)], stream)
        model.zero_grad()
        result = ours.loss(model(batch.images), batch)
        assert torch.isfinite(result.total) and set(result.parts) == {"base" if stream == "class" else "shared",
                                                                        "decorrelation"}
        result.total.backward()
        grads = {n: q.grad for n, q in model.named_parameters()}
        assert all(g is None or g.abs().sum() == 0 for n, g in grads.items() if n.startswith(silent)), stream
        assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith("trunk."))
    weighted = make_method(*loss, "method.decorrelation_weight=100", method=method)
    weighted.assignment = ours.assignment
    batch = as_batch(train, plan.indices[0], "class")
    model.zero_grad()
    weighted.loss(model(batch.images), batch).total.backward()  # the decorrelation reaches the shared head and R
    assert model.heads["shared"].linear.weight.grad.abs().sum() > 0
    assert all(q.grad.abs().sum() > 0 for q in weighted.decorrelation.parameters())


def test_shared_task_of_mic_is_the_loss_on_surrogate_labels_with_noise_kept(pattern_table):
    train = pattern_table(12, 6, seed=0, name="train")
    method = make_method("loss.name=ContrastiveLoss", "miner.name=null", "method.decorrelation_weight=0")
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
    assert result.parts["shared"] == pytest.approx(contrastive(), abs=1e-6)


def test_loss_adds_the_weighted_decorrelation_to_each_task(pattern_table):
    train = pattern_table(12, 6, seed=0, name="train")
    method = make_method("method.decorrelation_weight=250", method=SHARING)
    out = {"class": F.normalize(torch.randn(8, 8), dim=-1), "shared": F.normalize(torch.randn(8, 6), dim=-1)}
    for stream in ("class", "shared"):
        result = method.loss(out, as_batch(train, np.arange(8), stream))
        task = result.parts["base" if stream == "class" else "shared"]
        expected = task + 250 * float(method.decorrelation(out["class"], out["shared"]).detach())
        assert float(result.total) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="unknown batch stream 'other'"):
        method.loss(out, as_batch(train, np.arange(8), "other"))


# -- configuration ---------------------------------------------------------------------------------
def test_configuration_errors_and_param_groups():
    with pytest.raises(ConfigError, match=r"^method\.num_shared_clusters: only for variant 'mic'"):
        make_method("method.num_shared_clusters=5", method=SHARING)
    with pytest.raises(ConfigError, match=r"both 0"):
        make_method("method.class_task_p=0", "method.shared_task_p=0")
    with pytest.raises(ConfigError, match=r"^method\.cluster_tap: 2, but the backbone has 2 intermediate maps"):
        method = make_method("method.cluster_tap=2")
        method.attach(tiny_embedder(method))
    method = make_method(*MARGIN, "loss.learn_beta=true", "method.projection_lr=0.5", "method.loss_lr=0.25",
                         "method.projection_weight_decay=0.125")
    assert method.extra_heads() == {"shared": 6}
    losses, projection = method.param_groups(lr=1.0, weight_decay=0.01)
    assert (losses["lr"], losses["weight_decay"], len(losses["params"])) == (0.25, 0.0, 2)
    assert [tuple(q.shape) for q in losses["params"]] == [(12,), (3,)]  # β per class, β per surrogate class
    assert (projection["lr"], projection["weight_decay"]) == (0.5, 0.125)
    assert [tuple(q.shape) for q in projection["params"]] == [(512, 6), (512,), (8, 512), (8,)]
    (projection,) = make_method().param_groups(lr=1.0, weight_decay=0.01)
    assert projection["lr"] == 1.0


# -- training --------------------------------------------------------------------------------------
@pytest.fixture
def splits(pattern_table):
    return Splits(train=pattern_table(12, 6, seed=0, name="train"), val=pattern_table(4, 5, seed=1, name="val"),
                  test=pattern_table(6, 5, seed=2, name="test"), dataset="patterns", protocol="generated patterns")


def test_trunk_and_class_head_start_as_the_baselines(splits):
    torch.manual_seed(0)
    baseline = build_components(make_config(method=()), splits).model.state_dict()
    torch.manual_seed(0)
    ours = build_components(make_config(), splits).model.state_dict()
    assert {k for k in ours if not k.startswith("heads.shared.")} == set(baseline)
    assert all(torch.equal(baseline[k], ours[k]) for k in baseline)


def test_evaluation_uses_only_the_class_embedding(tmp_path, splits):
    trainer = Trainer(make_config("train.epochs=1"), tmp_path, progress=False, splits=splits)
    trainer.fit()
    c = trainer.c
    assert c.embed(splits.test).shape == (len(splits.test), 8)
    before = c.evaluate(splits.test)
    with torch.no_grad():
        for q in [*c.model.heads["shared"].parameters(), *c.method.parameters()]:
            q.normal_()
    assert c.evaluate(splits.test) == before


def history(run_dir):
    records = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("images_per_s", "clustering_s")} for r in records]


@pytest.mark.parametrize("method", [MIC, SHARING], ids=["mic", "sharing"])
def test_training_resumes_exactly(tmp_path, splits, interrupted_run, method):
    config = make_config("train.epochs=3", "train.eval_every=3", "train.log_every=1", "method.recluster_every=2"
                         if method is MIC else "method.decorrelation_weight=100", method=method)
    Trainer(config, tmp_path / "straight", progress=False, splits=splits).fit()
    assert interrupted_run(config, tmp_path / "resumed", splits) == [1]
    Trainer.resume(tmp_path / "resumed", progress=False, splits=splits).fit()
    straight = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    again = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    for part in ("model", "method"):
        assert all(torch.equal(straight[part][k], again[part][k]) for k in straight[part] if k != "_extra_state")
    extra = straight["method"]["_extra_state"]["assignment"], again["method"]["_extra_state"]["assignment"]
    assert (extra[0] is None and extra[1] is None) if method is SHARING else torch.equal(*extra)
    records = history(tmp_path / "straight")
    assert records == history(tmp_path / "resumed")
    assert {"base", "shared", "decorrelation"} <= set().union(*records)
