"""AZ-NAS (Lee & Ham, "AZ-NAS: Assembling Zero-Cost Proxies for Network Architecture Search", CVPR 2024).

Four proxies of one randomly initialised network on one batch (the paper's method section: expressivity,
progressivity, trainability, complexity; the formulas below follow the authors' reference implementation
``NATSBench/ZeroShotProxy/compute_az_nas_score.py::compute_nas_score`` in github.com/cvlab-yonsei/AZ-NAS), read off
the outputs ``f_0 … f_{L-1}`` of the network's *blocks* (for a :class:`~lightning_nas.space.GraphNet`: the stem and
every cell, as the authors take the stem and every cell of NAS-Bench-201's network), in train mode (BN on batch
statistics):

- **expressivity**: per block, the features as ``(B·H·W) × C`` samples, their covariance
  ``Σ = X̄ᵀX̄ / (B·H·W)`` (X̄ centred), its eigenvalues normalised to ``p_i = λ_i / Σ_j λ_j`` and their entropy
  ``s_E^l = −Σ_i p_i log(p_i + 1e-8)`` (isotropy: ``log C`` when every principal direction carries equal variance,
  0 for rank 1); ``s_E = Σ_l s_E^l``.
- **progressivity**: ``s_P = min_l (s_E^l − s_E^{l−1})``.
- **trainability**: per consecutive pair, Rademacher gradients ``g_out ∈ {±1}`` at ``f_l`` are pulled back
  to ``g_in = J_lᵀ g_out`` at ``f_{l−1}`` (one backward per block); ``g_in`` is space-to-depth folded to ``f_l``'s
  resolution when the block is strided (``pixel_unshuffle``), and ``M = Σ_p g_in(p) g_out(p)ᵀ / N`` over the
  ``N = B·H·W`` positions estimates the block's Jacobian (``E[g gᵀ] = I``); ``σ_l = ‖M‖₂`` (largest singular value)
  and ``s_T = mean_l (−σ_l − 1/σ_l + 2)``, at most 0, reached at ``σ = 1``. As in the authors' code, a block whose
  ``g_in`` equals ``g_out`` exactly (an identity block: it does nothing) scores ``−inf``.
- **complexity**: FLOPs (:func:`lightning_nas.space.count_cost`: 2 × conv/linear MACs of one sample).

Non-finite components (e.g. an all-zero feature map) become ``−inf``, as in the authors' code.

**Non-linear rank aggregation** (the paper's method section; the authors' ``NATSBench/tss_general.ipynb``) over
a pool of ``M`` candidates: ``s_AZ(j) = Σ_k log(rank_k(j) / M)`` with ``rank_k ∈ 1..M`` the ascending rank
(1 = worst, ties averaged) of candidate ``j`` under component ``k``; it favours candidates ranked high by *every*
component and depends on the pool, not on one network alone.

Differences from the authors' code, none affecting the definitions: covariances and singular values are computed
in float64; the Rademacher draws come from a seeded generator (``seed``), so the same network and batch give
identical numbers; negative round-off eigenvalues are clamped to 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn

from ..space import Cell, count_cost
from ..utils import preserved_state
from .proxies import ProxyError, check_batch
from .vector import Probe, probe_network

AZ_NAS_COMPONENTS = ("expressivity", "progressivity", "trainability", "complexity")
"""The four proxies of AZ-NAS, the keys of :func:`az_nas_components`."""
_EPS_LOG = 1e-8  # inside the entropy's log, as the authors
_EPS_SIGMA = 1e-6  # in 1 / (σ + ε), as the authors


# ---- single components -----------------------------------------------------------------------------------------
def _samples(feature: torch.Tensor) -> torch.Tensor:
    """``B × C × *spatial`` (or ``N × C``) → ``(B·∏spatial) × C``."""
    if feature.dim() < 2:
        raise ProxyError(f"block output: expected N×C×… features, got shape {tuple(feature.shape)}")
    return feature.movedim(1, -1).reshape(-1, feature.shape[1])


def expressivity_score(feature: torch.Tensor) -> float:
    """``s_E^l`` of one block's output: the entropy of the normalised eigenvalues of the channel covariance
    over all ``B·H·W`` positions. NaN when the features do not vary at all."""
    x = _samples(feature.detach()).double()
    x = x - x.mean(0, keepdim=True)
    cov = x.T @ x / x.shape[0]
    eig = torch.linalg.eigvalsh(cov).clamp_min(0.0)
    p = eig / eig.sum()
    return float(-(p * torch.log(p + _EPS_LOG)).sum())


def progressivity_score(block_expressivity: Sequence[float]) -> float:
    """``s_P``: the smallest increase of expressivity from one block to the next."""
    values = [float(v) for v in block_expressivity]
    if len(values) < 2:
        raise ProxyError(f"progressivity: needs at least 2 blocks, got {len(values)}")
    return min(b - a for a, b in zip(values, values[1:]))


def _space_to_depth(g: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Fold ``g`` (``B × C × *S``) to spatial size ``size`` by moving each ``s``-block of positions into channels
    (``pixel_unshuffle`` for 2-D, its analogue for 1-D)."""
    spatial = tuple(g.shape[2:])
    if len(spatial) != len(size):
        raise ProxyError(f"trainability: blocks of different dimensionality ({tuple(g.shape)} → {tuple(size)})")
    strides = []
    for s_in, s_out in zip(spatial, size):
        if s_out < 1 or s_in % s_out:
            raise ProxyError(f"trainability: a block maps spatial size {spatial} to {tuple(size)}, not an integer "
                             "down-sampling")
        strides.append(s_in // s_out)
    if all(s == 1 for s in strides):
        return g
    b, c = g.shape[:2]
    shape = [b, c]
    for s_out, s in zip(size, strides):
        shape += [s_out, s]
    g = g.reshape(shape)
    d = len(size)
    g = g.permute(0, 1, *(3 + 2 * i for i in range(d)), *(2 + 2 * i for i in range(d)))
    return g.reshape(b, c * math.prod(strides), *size)


def jacobian_sigma(g_in: torch.Tensor, g_out: torch.Tensor) -> float:
    """The trainability σ: the largest singular value of ``M = Σ_p g_in(p) g_out(p)ᵀ / N`` (``C_in·s^d × C_out``), with
    ``g_in = Jᵀ g_out`` the pulled-back Rademacher gradient, folded to ``g_out``'s resolution."""
    g_in = _space_to_depth(g_in, g_out.shape[2:])
    a, b = _samples(g_in).double(), _samples(g_out).double()
    if a.shape[0] != b.shape[0]:
        raise ProxyError(f"trainability: {tuple(g_in.shape)} and {tuple(g_out.shape)} have different positions")
    return float(torch.linalg.svdvals(a.T @ b / a.shape[0]).max())


def trainability_term(sigma: float) -> float:
    """``−σ − 1/σ + 2``: 0 at σ = 1, negative otherwise."""
    return -sigma - 1.0 / (sigma + _EPS_SIGMA) + 2.0


# ---- one network -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BlockStats:
    """Per-block figures behind the components: ``expressivity[l]`` = ``s_E^l`` of block ``l``; ``sigma[l]`` and
    ``trainability[l]`` for the pair (block ``l``, block ``l+1``), in forward order (``sigma`` is NaN and
    ``trainability`` −inf for an identity block)."""

    expressivity: tuple[float, ...]
    sigma: tuple[float, ...]
    trainability: tuple[float, ...]


def default_blocks(model: nn.Module) -> list[nn.Module]:
    """The natural blocks of ``model``: a GraphNet's stem and each of its cells (any model with a ``stem`` module
    and a ``cells`` container)."""
    stem, cells = getattr(model, "stem", None), getattr(model, "cells", None)
    if isinstance(stem, nn.Module) and isinstance(cells, nn.Sequential | nn.ModuleList) and len(cells):
        return [stem, *cells]
    raise ProxyError(
        f"az_nas: cannot tell the blocks of a {type(model).__name__} (no 'stem' + 'cells'); pass blocks=[...] "
        "(modules whose outputs follow one another)"
    )


def _block_outputs(model: nn.Module, blocks: Sequence[nn.Module], x: torch.Tensor) -> list[torch.Tensor]:
    outputs: list[torch.Tensor | None] = [None] * len(blocks)

    def hook(index: int):
        def record(module, inputs, output):
            if not isinstance(output, torch.Tensor):
                raise ProxyError(f"az_nas: block {index} ({type(module).__name__}) returned a "
                                 f"{type(output).__name__}, not a tensor")
            if outputs[index] is not None:
                raise ProxyError(f"az_nas: block {index} ({type(module).__name__}) ran twice in one forward pass")
            outputs[index] = output
            return output.clone()  # later in-place ops cannot touch the recorded tensor

        return record

    handles = [block.register_forward_hook(hook(i)) for i, block in enumerate(blocks)]
    try:
        try:
            model(x)
        except RuntimeError as e:
            raise ProxyError(f"inputs: a batch of shape {tuple(x.shape)} does not fit {type(model).__name__} "
                             f"({e})") from e
    finally:
        for h in handles:
            h.remove()
    missing = [i for i, o in enumerate(outputs) if o is None]
    if missing:
        raise ProxyError(f"az_nas: block(s) {missing} were not used by the forward pass")
    return outputs  # type: ignore[return-value]


def az_nas_blocks(
    model: nn.Module, x: torch.Tensor, blocks: Sequence[nn.Module] | None = None, seed: int = 0
) -> BlockStats:
    """The per-block expressivities and Jacobian norms of ``model`` on ``x`` (one train-mode forward, one backward
    per block pair, Rademacher gradients from ``torch.Generator().manual_seed(seed)``). The model is returned as
    given (modes, buffers, ``requires_grad``); no ``.grad`` is written."""
    if not isinstance(model, nn.Module):
        raise ProxyError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    check_batch(x)
    blocks = list(default_blocks(model) if blocks is None else blocks)
    if len(blocks) < 2:
        raise ProxyError(f"az_nas: needs at least 2 blocks, got {len(blocks)}")
    gen = torch.Generator().manual_seed(seed)
    with preserved_state(model), torch.enable_grad():
        model.train()
        inp = x.detach().clone().requires_grad_(True)  # every block output is in the graph, parameters or not
        feats = _block_outputs(model, blocks, inp)
        expressivity = tuple(expressivity_score(f) for f in feats)
        sigma: list[float] = [math.nan] * (len(feats) - 1)
        terms: list[float] = [-math.inf] * (len(feats) - 1)
        for i in reversed(range(1, len(feats))):  # last block first, as the authors
            f_in, f_out = feats[i - 1], feats[i]
            g_out = (torch.randint(0, 2, f_out.shape, generator=gen) * 2 - 1).to(f_out)
            (g_in,) = torch.autograd.grad(f_out, f_in, g_out, retain_graph=True, allow_unused=True)
            if g_in is None:
                raise ProxyError(f"az_nas: block {i}'s output does not depend on block {i - 1}'s output; "
                                 "blocks must follow one another")
            if g_in.shape == g_out.shape and torch.equal(g_in, g_out):
                continue  # identity block: −inf (authors' rule)
            sigma[i - 1] = jacobian_sigma(g_in.detach(), g_out)
            terms[i - 1] = trainability_term(sigma[i - 1])
        del feats
    return BlockStats(expressivity, tuple(sigma), tuple(terms))


def _finite_or_neg_inf(value: float) -> float:
    return -math.inf if math.isnan(value) else float(value)


def az_nas_components(
    model: nn.Module,
    x: torch.Tensor,
    blocks: Sequence[nn.Module] | None = None,
    flops: float | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """``{"expressivity", "progressivity", "trainability", "complexity"}`` of ``model`` on the batch ``x``.

    ``blocks``: the modules whose outputs are the block features, in forward order (default: the stem and every
    cell, :func:`default_blocks`). ``flops``: the complexity to report (default: counted with
    :func:`~lightning_nas.space.count_cost` for one sample of ``x``'s shape). ``seed`` fixes the Rademacher
    gradients. The model is scored as given: re-initialise it first for the authors' Kaiming-normal setting
    (:func:`az_nas_cell` does)."""
    stats = az_nas_blocks(model, x, blocks, seed)
    if flops is None:
        flops = count_cost(model, tuple(x.shape[1:]))["flops"]
    return {
        "expressivity": _finite_or_neg_inf(sum(stats.expressivity)),
        "progressivity": _finite_or_neg_inf(progressivity_score(stats.expressivity)),
        "trainability": _finite_or_neg_inf(sum(stats.trainability) / len(stats.trainability)),
        "complexity": float(flops),
    }


def kaiming_init_(model: nn.Module, seed: int = 0) -> nn.Module:
    """The authors' initialisation (``init_model(..., 'kaiming_norm_fanin')``): Conv/Linear weights Kaiming-normal
    (fan-in, ReLU gain), biases 0, affine BN/GroupNorm γ = 1, β = 0; draws from a generator seeded with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear):
                w = torch.empty(m.weight.shape)
                nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu", generator=gen)
                m.weight.copy_(w)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d | nn.GroupNorm) and m.affine:
                m.weight.fill_(1.0)
                m.bias.zero_()
    return model


def az_nas_cell(cell: Cell, probe: Probe, init: str | None = "kaiming", seed: int | None = None) -> dict[str, float]:
    """AZ-NAS components of α_x for ``cell`` (:func:`~lightning_nas.zc.probe_network`) on the probe batch
    (:class:`~lightning_nas.zc.Probe`; only its inputs are used). ``init="kaiming"`` re-initialises the weights as
    the authors do (seeded with ``seed``, default the probe's seed); ``None`` keeps PyTorch's default
    initialisation of ``probe_network``. The same cell, probe and seed give identical numbers."""
    if init not in ("kaiming", None):
        raise ValueError(f"init: {init!r}; choose 'kaiming' or None")
    seed = probe.seed if seed is None else seed
    model = probe_network(cell, probe).to(probe.x.device)
    if init == "kaiming":
        kaiming_init_(model, seed)
    return az_nas_components(model, probe.x, seed=seed)


# ---- a pool of candidates --------------------------------------------------------------------------------------
def az_nas_aggregate(
    components: Sequence[Mapping[str, float]], keys: Sequence[str] = AZ_NAS_COMPONENTS
) -> list[float]:
    """The AZ-NAS score of each candidate, ``Σ_k log(rank_k / M)``: ``rank_k`` is its ascending rank (1 = worst,
    ties share the average rank, ``scipy.stats.rankdata``) among the ``M`` candidates under component ``k`` of
    ``keys``. NaN counts as −inf (worst). Higher is better; the best possible score is 0."""
    m = len(components)
    if m == 0:
        return []
    if not keys:
        raise ValueError("keys: at least one component to aggregate")
    total = np.zeros(m)
    for key in keys:
        try:
            values = np.array([float(c[key]) for c in components], dtype=float)
        except KeyError:
            missing = [j for j, c in enumerate(components) if key not in c]
            raise ValueError(f"components: candidate(s) {missing} lack {key!r}") from None
        values[np.isnan(values)] = -np.inf
        total += np.log(rankdata(values) / m)
    return total.tolist()
