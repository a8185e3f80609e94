"""AZ-NAS (lightning_nas.zc.az_nas): each component against hand-computed values, the rank aggregation, determinism
and a Spearman check against NAS-Bench-201's CIFAR-10 accuracies."""

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import nn

from lightning_nas.space.nb201 import NB201_DATA, cell_from_nb201, read_nb201_csv
from lightning_nas.zc import (
    AZ_NAS_COMPONENTS,
    Probe,
    ProxyError,
    az_nas_aggregate,
    az_nas_blocks,
    az_nas_cell,
    az_nas_components,
    probe_network,
)
from lightning_nas.zc.az_nas import expressivity_score, progressivity_score

torch.set_num_threads(1)

NB201_CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"


def whitened(b: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """B×C×H×W features whose B·H·W samples have exactly zero mean and identity covariance (population)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b * h * w, c, generator=gen, dtype=torch.float64)
    x = x - x.mean(0)
    chol = torch.linalg.cholesky(x.T @ x / x.shape[0])
    x = torch.linalg.solve_triangular(chol, x.T, upper=False).T
    return x.reshape(b, h, w, c).permute(0, 3, 1, 2).contiguous()


class Scale(nn.Module):
    """Multiplies channel ``i`` by ``factors[i]`` (a diagonal linear block)."""

    def __init__(self, factors):
        super().__init__()
        self.register_buffer("factors", torch.tensor(factors, dtype=torch.float64).view(1, -1, 1, 1))

    def forward(self, x):
        return x * self.factors.to(x.dtype)


class Orthogonal(nn.Module):
    """A 1×1 convolution by ``gain`` × a random orthogonal matrix."""

    def __init__(self, channels: int, seed: int, gain: float = 1.0):
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(channels, channels, generator=torch.Generator().manual_seed(seed)))
        self.register_buffer("weight", (gain * q).view(channels, channels, 1, 1))

    def forward(self, x):
        return F.conv2d(x, self.weight.to(x.dtype))


class Chain(nn.Module):
    def __init__(self, *blocks):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


# ---- expressivity ----------------------------------------------------------------------------------------------
def test_expressivity_isotropic_features_reach_log_c():
    assert expressivity_score(whitened(4, 16, 8, 8)) == pytest.approx(math.log(16), abs=1e-6)
    anisotropic = whitened(4, 16, 8, 8) * torch.linspace(0.5, 2.0, 16, dtype=torch.float64).view(1, -1, 1, 1)
    assert expressivity_score(anisotropic) < math.log(16) - 0.05


def test_expressivity_rank_one_features_score_zero():
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(4 * 8 * 8, 1, generator=gen, dtype=torch.float64)
    direction = torch.randn(1, 12, generator=gen, dtype=torch.float64)
    feature = (a @ direction + 3.0).reshape(4, 8, 8, 12).permute(0, 3, 1, 2)
    assert expressivity_score(feature) == pytest.approx(0.0, abs=1e-6)


def test_expressivity_two_channel_hand_computed():
    # samples (±1, 0), (0, ±2): covariance diag(0.5, 2) → p = (0.2, 0.8); rotated by 45° and shifted, which
    # changes neither the eigenvalues nor (after centring) anything else
    samples = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]], dtype=torch.float64)
    rot = torch.tensor([[1.0, -1.0], [1.0, 1.0]], dtype=torch.float64) / math.sqrt(2)
    samples = samples @ rot.T + torch.tensor([5.0, -3.0], dtype=torch.float64)
    expected = -(0.2 * math.log(0.2) + 0.8 * math.log(0.8))  # 0.5004…
    as_batch = samples.view(4, 2, 1, 1)  # B=4 positions of 1×1
    as_map = samples.T.reshape(1, 2, 2, 2)  # one 2×2 map, channels first
    as_vectors = samples  # N×C
    for feature in (as_batch, as_map, as_vectors):
        assert expressivity_score(feature) == pytest.approx(expected, abs=1e-7)


# ---- progressivity ---------------------------------------------------------------------------------------------
def test_progressivity_is_the_smallest_consecutive_increase():
    assert progressivity_score([1.0, 3.0, 2.5, 4.0]) == -0.5
    assert progressivity_score([0.0, 1.0, 3.0]) == 1.0
    with pytest.raises(ProxyError, match="at least 2 blocks"):
        progressivity_score([1.0])


def test_components_of_a_hand_built_block_chain():
    # whitened 4-channel input; the blocks keep 4, 3, 2, 2 channels: s_E = log 4, log 3, log 2, log 2
    blocks = [Scale([2, 2, 2, 2]), Scale([1, 1, 1, 0]), Scale([1, 1, 0, 0]), Scale([1, 1, 1, 1.5])]
    x = whitened(8, 4, 8, 8)
    out = az_nas_components(Chain(*blocks), x, blocks=blocks, flops=123)
    per_block = [math.log(4), math.log(3), math.log(2), math.log(2)]
    assert az_nas_blocks(Chain(*blocks), x, blocks=blocks).expressivity == pytest.approx(per_block, abs=1e-6)
    assert out["expressivity"] == pytest.approx(sum(per_block), abs=1e-6)
    assert out["progressivity"] == pytest.approx(math.log(2 / 3), abs=1e-6)  # the middle step, not the first
    assert out["complexity"] == 123.0
    assert set(out) == set(AZ_NAS_COMPONENTS)


# ---- trainability ----------------------------------------------------------------------------------------------
def _chain_stats(second: nn.Module, x: torch.Tensor):
    first = Orthogonal(x.shape[1], seed=0)
    model = Chain(first, second)
    return az_nas_blocks(model, x, blocks=[first, second]), az_nas_components(model, x, blocks=[first, second])


def test_trainability_orthogonal_block_is_best_and_scaled_block_worse():
    x = torch.randn(16, 8, 32, 32, generator=torch.Generator().manual_seed(0))
    ortho, ortho_components = _chain_stats(Orthogonal(8, seed=1), x)
    scaled, scaled_components = _chain_stats(Orthogonal(8, seed=1, gain=10.0), x)
    assert ortho.sigma[0] == pytest.approx(1.0, abs=0.1)
    assert ortho_components["trainability"] == pytest.approx(0.0, abs=0.01)  # −σ − 1/σ + 2 ≤ 0, = 0 at σ = 1
    assert scaled.sigma[0] == pytest.approx(10.0, rel=0.1)
    assert scaled_components["trainability"] == pytest.approx(-scaled.sigma[0] - 1 / scaled.sigma[0] + 2, rel=1e-4)
    assert scaled_components["trainability"] < ortho_components["trainability"] - 5
    stretched, _ = _chain_stats(Scale([1, 1, 1, 1, 1, 1, 1, 3]), x)  # σ is the *largest* singular value
    assert stretched.sigma[0] == pytest.approx(3.0, rel=0.1)


def test_trainability_folds_strided_blocks():
    x = torch.randn(16, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    # space-to-depth is a permutation: folded back, its Jacobian is the identity (σ ≈ 1, not flagged as identity;
    # the estimate is the top eigenvalue of 16 channels' Rademacher second moment over 4,096 positions, ≈ 1.1)
    stats, _ = _chain_stats(nn.PixelUnshuffle(2), x)
    assert stats.sigma[0] == pytest.approx(1.0, abs=0.15)
    assert stats.trainability[0] > -0.02
    # 2×2 average pooling: per output position J = ¼ [I I I I], σ = ¼ · √4 = ½
    stats, _ = _chain_stats(nn.AvgPool2d(2), x)
    assert stats.sigma[0] == pytest.approx(0.5, abs=0.06)


def test_identity_block_scores_minus_infinity_as_in_the_authors_code():
    x = torch.randn(4, 8, 16, 16, generator=torch.Generator().manual_seed(0))
    stats, components = _chain_stats(nn.Identity(), x)
    assert math.isnan(stats.sigma[0]) and stats.trainability[0] == -math.inf
    assert components["trainability"] == -math.inf


# ---- aggregation -----------------------------------------------------------------------------------------------
def test_aggregate_hand_computed():
    pool = [{"a": 1.0, "b": 5.0}, {"a": 3.0, "b": 5.0}, {"a": 2.0, "b": 1.0}]
    # ranks a: 1, 3, 2; b: 2.5, 2.5, 1 (tie averaged); M = 3
    expected = [math.log(1 / 3) + math.log(2.5 / 3), math.log(3 / 3) + math.log(2.5 / 3),
                math.log(2 / 3) + math.log(1 / 3)]
    assert az_nas_aggregate(pool, keys=("a", "b")) == pytest.approx(expected, abs=1e-12)
    assert az_nas_aggregate(pool, keys=("a",)) == pytest.approx([math.log(1 / 3), 0.0, math.log(2 / 3)])
    assert az_nas_aggregate([]) == []
    with pytest.raises(ValueError, match="lack 'c'"):
        az_nas_aggregate(pool, keys=("a", "c"))


def test_aggregate_is_order_invariant_and_nan_is_worst():
    rng = np.random.default_rng(0)
    pool = [{k: float(rng.normal()) for k in AZ_NAS_COMPONENTS} for _ in range(7)]
    pool[2]["trainability"] = pool[5]["trainability"]  # a tie
    scores = az_nas_aggregate(pool)
    perm = rng.permutation(len(pool))
    assert az_nas_aggregate([pool[i] for i in perm]) == pytest.approx([scores[i] for i in perm], abs=1e-12)
    pool[3]["expressivity"] = math.nan
    with_nan = az_nas_aggregate(pool, keys=("expressivity",))
    assert with_nan[3] == pytest.approx(math.log(1 / 7)) and min(with_nan) == with_nan[3]


# ---- α_x of real cells -----------------------------------------------------------------------------------------
def test_az_nas_cell_is_deterministic_and_leaves_nothing_behind():
    cell = cell_from_nb201(NB201_CELL)
    probe = Probe.from_source("gaussian", seed=0, batch_size=8)
    first, second = az_nas_cell(cell, probe), az_nas_cell(cell, probe)
    assert first == second
    assert set(first) == set(AZ_NAS_COMPONENTS) and all(math.isfinite(v) for v in first.values())
    assert az_nas_cell(cell, probe, seed=1)["trainability"] != first["trainability"]  # the seed is used

    model = probe_network(cell, probe).eval()
    buffers = [b.clone() for b in model.buffers()]
    out = az_nas_components(model, probe.x)
    assert not model.training and all(torch.equal(a, b) for a, b in zip(buffers, model.buffers(), strict=True))
    assert all(p.grad is None for p in model.parameters())
    assert len(az_nas_blocks(model, probe.x).expressivity) == 1 + 17  # the stem and α_x's 17 cells
    assert out["complexity"] == first["complexity"] > 0


def test_unknown_blocks_are_refused():
    x = torch.randn(4, 3, 8, 8)
    with pytest.raises(ProxyError, match="blocks"):
        az_nas_components(nn.Sequential(nn.Conv2d(3, 4, 3)), x)
    a, b = nn.Conv2d(3, 4, 3), nn.Conv2d(3, 4, 3)

    class Parallel(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = a, b

        def forward(self, x):
            return self.a(x) + self.b(x)

    with pytest.raises(ProxyError, match="follow one another"):
        az_nas_components(Parallel(), x, blocks=[a, b])


def test_aggregate_ranks_nb201_cells_by_cifar10_accuracy():
    """30 reachable NB201 cells, one drawn (seed 0) from each 1/30 quantile bin of CIFAR-10 test accuracy; AZ-NAS on
    α_x with an 8-image Gaussian probe. Measured: ρ(aggregate) = 0.84 (expressivity 0.78, progressivity 0.65,
    trainability 0.57, FLOPs 0.72); other draws (seeds 1–5) gave ρ 0.83–0.93."""
    records = []
    for record in read_nb201_csv(NB201_DATA / "nats_bench_tss.csv"):
        try:
            records.append((record, cell_from_nb201(record.arch_str)))
        except ValueError:
            continue  # the output is unreachable: no GraphNet cell
    records.sort(key=lambda rc: rc[0].cifar10)
    rng, n = random.Random(0), 30
    picked = [rng.choice(records[i * len(records) // n : (i + 1) * len(records) // n]) for i in range(n)]
    probe = Probe.from_source("gaussian", seed=0, batch_size=8)
    components = [az_nas_cell(cell, probe) for _, cell in picked]
    accuracy = [record.cifar10 for record, _ in picked]
    rho = spearmanr(az_nas_aggregate(components), accuracy)[0]
    assert rho > 0.7
    assert spearmanr([c["expressivity"] for c in components], accuracy)[0] > 0.5
    assert spearmanr([c["trainability"] for c in components], accuracy)[0] > 0.35
