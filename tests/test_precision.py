"""Mixed precision: under bf16 autocast (train.precision=bf16) the network and the methods' own linear heads may run in
bf16, but the metric terms (similarity matrices, the miners' choices, exp / logsumexp, masks and sentinel values)
stay in fp32. Each term is computed once in fp32 and once under `torch.autocast("cpu", dtype=torch.bfloat16)` from
the same fp32 inputs and weights: the two agree to ~1e-6, where bf16 similarities are off by ~1e-3..1e-2."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unseen.config import load_config
from unseen.methods import METHODS, Batch
from unseen.methods.s2sd import similarity_distillation
from unseen.train.components import build_method

RTOL, ATOL = 1e-5, 1e-6  # what fp32 similarities allow; bf16 similarities (8 bits of mantissa) miss it ~100-fold
TINY_MODEL = ["model.channels=[4,8]", "model.embedding_dim=16", "sampler.classes_per_batch=4",
              "sampler.samples_per_class=4"]
P, K = 8, 4  # classes × images of the embedding batches


def bf16_autocast() -> torch.autocast:
    return torch.autocast("cpu", dtype=torch.bfloat16)


def embeddings_batch(dim: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """P×K L2-normalized fp32 embeddings, each class a cluster (so that miners have hard and easy tuples to tell)."""
    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(P, dim, generator=generator)
    x = centers.repeat_interleave(K, dim=0) + 0.7 * torch.randn(P * K, dim, generator=generator)
    return F.normalize(x, dim=-1), torch.arange(P).repeat_interleave(K)


def assert_close(got: torch.Tensor | float, expected: torch.Tensor | float, what: str) -> None:
    got, expected = (v.detach() if isinstance(v, torch.Tensor) else v for v in (got, expected))
    assert float(got) == pytest.approx(float(expected), rel=RTOL, abs=ATOL), what


# -- the base losses and miners (config `loss:` / `miner:`, built by unseen.losses.factory) ----------------------------
# (loss overrides, miner overrides, does PML's own code run the term in bf16 under autocast?)
BASE_CASES = {
    "multi_similarity": (["loss.name=MultiSimilarityLoss"], ["miner.name=MultiSimilarityMiner"], True),
    "margin_learn_beta": (["loss.name=MarginLoss", "loss.learn_beta=true"], ["miner.name=DistanceWeightedMiner"],
                          False),  # LpDistance
    "triplet": (["loss.name=TripletMarginLoss"], ["miner.name=TripletMarginMiner"], False),  # LpDistance: cdist, fp32
    "triplet_cosine": (["loss.name=TripletMarginLoss", "loss.distance=CosineSimilarity"],
                       ["miner.name=TripletMarginMiner", "miner.distance=CosineSimilarity",
                        "miner.type_of_triplets=all"], True),
    "contrastive": (["loss.name=ContrastiveLoss"], ["miner.name=null"], False),
    "contrastive_cosine": (["loss.name=ContrastiveLoss", "loss.distance=CosineSimilarity", "loss.pos_margin=1",
                            "loss.neg_margin=0"], ["miner.name=null"], True),
    "proxy_anchor": (["loss.name=ProxyAnchorLoss"], ["miner.name=null"], True),
    "normalized_softmax": (["loss.name=NormalizedSoftmaxLoss"], ["miner.name=null"], True),
}


def baseline(*overrides: str):
    torch.manual_seed(0)  # the proxies
    method, _ = build_method(load_config(None, [*TINY_MODEL, "method.name=baseline", *overrides]), num_classes=P)
    return method


@pytest.mark.parametrize("case", sorted(BASE_CASES))
def test_base_loss_and_miner_run_in_fp32_under_autocast(case):
    loss_overrides, miner_overrides, pml_runs_bf16 = BASE_CASES[case]
    method = baseline(*loss_overrides, *miner_overrides)
    embeddings, labels = embeddings_batch()
    torch.manual_seed(1)  # DistanceWeightedMiner samples
    reference = method.base_objective(embeddings, labels)
    assert reference.dtype == torch.float32 and reference.item() > 0
    torch.manual_seed(1)
    with bf16_autocast():
        value = method.base_objective(embeddings, labels)
    assert value.dtype == torch.float32
    assert_close(value, reference, case)
    if pml_runs_bf16:  # the tolerance tells fp32 from bf16: PML's term alone, under autocast, misses it
        torch.manual_seed(1)
        with bf16_autocast():
            tuples = method.miner(embeddings, labels) if method.miner is not None else None
            raw = method.base_loss(embeddings, labels, tuples)
        assert raw.item() != pytest.approx(reference.item(), rel=RTOL, abs=ATOL)


def test_base_objective_keeps_float64():
    method = baseline()
    embeddings, labels = embeddings_batch()
    with bf16_autocast():
        assert method.base_objective(embeddings.double(), labels).dtype == torch.float64


MINER_CASES = {
    "multi_similarity": ["miner.name=MultiSimilarityMiner"],
    "distance_weighted": ["miner.name=DistanceWeightedMiner"],
    "triplet_cosine": ["miner.name=TripletMarginMiner", "miner.distance=CosineSimilarity", "miner.margin=0.1"],
    "pair_margin": ["miner.name=PairMarginMiner", "miner.distance=CosineSimilarity", "miner.pos_margin=0.6",
                    "miner.neg_margin=0.4"],
}


@pytest.mark.parametrize("case", sorted(MINER_CASES))
def test_the_miner_chooses_the_same_tuples_under_autocast(case):
    method = baseline(*MINER_CASES[case])
    embeddings, labels = embeddings_batch(seed=3)
    chosen = []

    def recording(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        tuples = method.miner(x, y)
        chosen.append(tuples)
        return tuples

    for autocast in (False, True):
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            method.base_objective(embeddings, labels, mine=recording)
    fp32, bf16 = chosen
    assert sum(len(t) for t in fp32) > 0
    assert all(torch.equal(a, b) for a, b in zip(fp32, bf16, strict=True)), case


def test_the_multi_similarity_miner_alone_chooses_other_pairs_in_bf16():
    """What the previous test guards against: PML's miner, under autocast, mines on bf16 similarities."""
    method = baseline("miner.name=MultiSimilarityMiner")
    embeddings, labels = embeddings_batch(seed=3)
    fp32 = method.miner(embeddings, labels)
    with bf16_autocast():
        bf16 = method.miner(embeddings, labels)
    assert not all(torch.equal(a, b) for a, b in zip(fp32, bf16, strict=True))


def test_similarity_distillation_runs_in_fp32_under_autocast():
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(32, 16, generator=generator), torch.randn(32, 64, generator=generator)
    reference = similarity_distillation(student, teacher, 0.5)
    with bf16_autocast():
        value = similarity_distillation(student, teacher, 0.5)
        s, t = F.normalize(student, dim=-1), F.normalize(teacher, dim=-1)
        bf16 = F.kl_div(F.log_softmax(s @ s.T / 0.5, dim=-1), F.log_softmax(t @ t.T / 0.5, dim=-1),
                        reduction="batchmean", log_target=True) * 0.25
    assert value.dtype == torch.float32
    assert_close(value, reference, "distillation")
    assert bf16.item() != pytest.approx(reference.item(), rel=RTOL, abs=ATOL)  # S = x xᵀ in bf16 misses it


# -- every registered method's whole loss, from the same network outputs --------------------------------------------
# What a method needs to be quick on a 16-image batch; a method not listed here runs from its defaults, so a new method
# is covered without any change. Extra cases exercise a method's other batch streams.
METHOD_OVERRIDES: dict[str, list[str]] = {
    "class_adversarial": ["method.hidden_dim=16"],
    "divide_conquer": ["method.num_clusters=2"],
    "s2sd": ["method.target_dims=[32,64]", "method.feature_distillation=true"],
    "sharing": ["method.num_shared_clusters=3", "method.shared_dim=6"],
}
STREAM_CASES = {
    "divide_conquer/cluster": ("divide_conquer", ["method.num_clusters=2"], "cluster"),
    "sharing/mic-shared": ("sharing", ["method.variant=mic", "method.num_shared_clusters=3", "method.shared_dim=6"],
                           "shared"),
    "sharing/sharing-shared": ("sharing", ["method.variant=sharing", "method.shared_dim=6"], "shared"),
    "class_adversarial/embedding": ("class_adversarial", ["method.hidden_dim=16", "method.placement=embedding",
                                                          "method.schedule=constant"], "class"),
}
METHOD_CASES = {name: (name, METHOD_OVERRIDES.get(name, []), "class") for name in METHODS} | STREAM_CASES


def fp32_heads(method: nn.Module) -> None:
    """Run the method's own linear heads in fp32 also under autocast (they may be bf16 in training: that is the
    speed), so that what is left to compare is the metric terms' own arithmetic."""
    for module in method.modules():
        if isinstance(module, nn.Linear):
            def forward(x: torch.Tensor, module: nn.Linear = module) -> torch.Tensor:
                with torch.autocast(x.device.type, enabled=False):
                    return F.linear(x.float(), module.weight, module.bias)
            module.forward = forward


def method_case(case: str):
    name, overrides, stream = METHOD_CASES[case]
    torch.manual_seed(0)
    config = load_config(None, [*TINY_MODEL, f"method.name={name}", *overrides])
    method, model = build_method(config, num_classes=P)
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(P * K, 1, 12, 12, generator=generator)
    rows = torch.arange(P * K)
    labels = torch.arange(P).repeat_interleave(K)
    if hasattr(method, "assignment"):  # clustered methods: row r in cluster r mod the clusters (one per batch for D&C)
        clusters = getattr(method.params, "num_clusters", None) or method.params.num_shared_clusters
        method.assignment = np.zeros(P * K, dtype=np.int64) if stream == "cluster" else np.arange(P * K) % clusters
    model.eval()
    with torch.no_grad():
        out = model(images)
    model.forward = lambda images: out  # objective's forward pass gives these fp32 outputs, under autocast too
    fp32_heads(method)
    return method, model, Batch(images, labels, rows, stream)


@pytest.mark.parametrize("case", sorted(METHOD_CASES))
def test_every_methods_terms_run_in_fp32_under_autocast(case):
    method, model, batch = method_case(case)
    torch.manual_seed(2)
    reference = method.objective(model, batch)
    torch.manual_seed(2)
    with bf16_autocast():
        result = method.objective(model, batch)
    assert result.total.dtype == torch.float32
    assert_close(result.total, reference.total, "total")
    assert result.parts.keys() == reference.parts.keys()
    for key, value in result.parts.items():
        if key != "clustering_s":
            assert_close(value, reference.parts[key], key)


@pytest.mark.parametrize("case", sorted(METHOD_CASES))
def test_parts_are_detached_tensors_read_at_logging_time(case):
    """No `float(tensor)` per part per step (a device sync each on a GPU): a part is a detached 0-dim tensor, or a
    float the method knew without the device (a schedule's λ, a clustering's statistics)."""
    method, model, batch = method_case(case)
    parts = method.objective(model, batch).parts
    assert any(isinstance(v, torch.Tensor) for v in parts.values())
    for key, value in parts.items():
        assert isinstance(value, float) or (isinstance(value, torch.Tensor) and value.dim() == 0
                                            and not value.requires_grad), key
