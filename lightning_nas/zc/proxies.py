"""Zero-cost proxies over any ``nn.Module`` with Conv1d/Conv2d/Linear layers (definitions: REFERENCE.md).

All gradient/activation proxies of one network share its passes: :func:`scores` runs at most one eval-mode forward
(NASWOT, LNWOT, T-CET's LNWOT half) and one train-mode forward/backward (SNIP, SNIP-SSNR, T-CET's SNR half), with
no deep copy. Zen-score (which re-initialises weights) works on one copy; ZiCo needs its own half-batch passes.
The caller's model is returned exactly as given: module modes, weights, buffers (BN running statistics), gradients,
``requires_grad`` flags and hooks.

Variants implemented (names as in the authors' library ``alethiometer`` 1.1.2):

- **NASWOT** (``nwot``): eval mode, codes ``c = 1[o > 0]`` of every Conv/Linear *output*,
  ``K = Σ_l c cᵀ + (1−c)(1−c)ᵀ``,
  score ``log|det K|`` (0 when K is singular). Mellor et al.'s original hooks ReLU inputs in train mode — another
  variant, not this one.
- **LNWOT**: one such log-determinant per layer.
- **SNIP**: saliency ``|w ⊙ ∂L/∂w|`` summed over Conv/Linear weights (train mode, cross-entropy).
- **SNIP-SSNR** (``snr_snip``): per layer ``SNR_l = Σ s / std(s)`` (unbiased std; ``Σ s`` if std is 0 or NaN),
  then the mode
  (``none``, ``log``, ``log1p``; NaN/±inf → 0) per layer, summed.
- **T-CET** (``tcet_snip_<mode>``): ``Σ_l LNWOT_l · mode(SNR_l)``, pairing each layer's LNWOT with *its own* SNR
  (alethiometer pairs forward-hook order with ``modules()`` order; they agree only when the two orders agree).
- **T-CET, layer mean** (``tcet_mean``, ours): ``mean_l LNWOT_l · log1p(SNR_l)`` — T-CET divided by its number of
  layers, so that a deeper network is not rewarded for its depth alone (issue #29).
- **Gradient norm** (``grad_norm``): ``‖∂L/∂w‖₂`` over the Conv/Linear weights, from SNIP's backward pass — a
  trainability diagnostic (networks whose gradients explode at initialisation train badly).
- **Zen-score** and **ZiCo**: see their functions.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..space.cost import count_cost
from ..utils import preserved_state

WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)
SNR_MODES = ("none", "log", "log1p")
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)

EVAL_PROXIES = ("naswot", "lnwot")
TRAIN_PROXIES = ("snip", "snip_ssnr")
COST_PROXIES = ("params", "macs", "flops")
PROXIES = (*EVAL_PROXIES, *TRAIN_PROXIES, "tcet", "tcet_mean", "grad_norm", "zen", "zico", *COST_PROXIES)
"""Names :func:`scores` accepts; ``snip_ssnr`` and ``tcet`` also take a mode suffix (``tcet_log1p``,
``snip_ssnr_none``)."""

DEFAULT_MODES = {"snip_ssnr": "none", "tcet": "log1p"}


class ProxyError(ValueError):
    """The model or the batch cannot be scored (no Conv/Linear layer, mis-shaped batch, unknown proxy)."""


def weight_layers(model: nn.Module) -> list[nn.Module]:
    """Conv1d/Conv2d/Linear layers of ``model`` in ``modules()`` order; a clear error when there are none."""
    if not isinstance(model, nn.Module):
        raise ProxyError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    layers = [m for m in model.modules() if isinstance(m, WEIGHT_LAYERS)]
    if not layers:
        raise ProxyError(
            f"model: {type(model).__name__} has no Conv1d/Conv2d/Linear layer; zero-cost proxies score those layers"
        )
    return layers


def check_batch(x: torch.Tensor, y: torch.Tensor | None = None, min_batch: int = 2) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise ProxyError(f"inputs: expected a batch tensor N×C×… , got {getattr(x, 'shape', type(x).__name__)}")
    if x.shape[0] < min_batch:
        raise ProxyError(f"inputs: batch of {x.shape[0]}; these proxies need at least {min_batch} samples")
    if y is not None:
        if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise ProxyError(
                f"targets: expected {x.shape[0]} class indices (shape [{x.shape[0]}]) for inputs of shape "
                f"{tuple(x.shape)}, got {tuple(getattr(y, 'shape', ()))}"
            )


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    try:
        out = model(x)
    except RuntimeError as e:
        raise ProxyError(f"inputs: a batch of shape {tuple(x.shape)} does not fit {type(model).__name__} ({e})") from e
    return out[-1] if isinstance(out, tuple | list) else out


def _logdet(k: torch.Tensor) -> tuple[float, bool]:
    """``log|det k|`` in float64 and whether ``k`` was singular (then 0.0, the authors' sentinel)."""
    sign, logabs = torch.linalg.slogdet(k.double())
    if sign.item() == 0 or not math.isfinite(logabs.item()):
        return 0.0, True
    return float(logabs), False


def _snr(saliency: torch.Tensor) -> float:
    s = saliency.detach().reshape(-1).double()
    total = s.sum()
    sigma = s.std() if s.numel() > 1 else torch.tensor(float("nan"), dtype=s.dtype)
    return float(total if (sigma == 0 or torch.isnan(sigma)) else total / sigma)


def apply_mode(value: float, mode: str) -> float:
    """SNR mode: ``none``, ``log`` or ``log1p``, with NaN/±inf mapped to 0 as in the authors' code."""
    if mode == "none":
        out = value
    elif mode == "log":
        out = math.log(value) if value > 0 else (-math.inf if value == 0 else math.nan)
    elif mode == "log1p":
        out = math.log1p(value) if value > -1 else (-math.inf if value == -1 else math.nan)
    else:
        raise ProxyError(f"mode: {mode!r}; choose from {SNR_MODES}")
    return out if math.isfinite(out) else 0.0


# ---- shared passes ---------------------------------------------------------------------------------------------
def _activation_kernels(model: nn.Module, layers: Sequence[nn.Module], x: torch.Tensor) -> list[torch.Tensor]:
    """One eval-mode forward; per layer the B×B kernel ``c cᵀ + (1−c)(1−c)ᵀ`` of its binarised output
    (computed as ``2 c cᵀ − r 1ᵀ − 1 rᵀ + D`` with one matmul; every entry is an exact integer)."""
    kernels: list[torch.Tensor | None] = [None] * len(layers)

    def hook(index: int):
        def record(module, inputs, output):
            codes = (output.detach().reshape(output.shape[0], -1) > 0).float()
            ones = codes.sum(1)
            k = 2 * (codes @ codes.T) - ones[:, None] - ones[None, :] + codes.shape[1]
            k = k.double()
            kernels[index] = k if kernels[index] is None else kernels[index] + k  # a layer called twice: summed

        return record

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    try:
        model.eval()
        with torch.no_grad():
            _forward(model, x)
    finally:
        for h in handles:
            h.remove()
    missing = [i for i, k in enumerate(kernels) if k is None]
    if missing:
        raise ProxyError(f"model: {len(missing)} Conv/Linear layer(s) were not used by the forward pass")
    return kernels  # type: ignore[return-value]


def _saliencies(layers: Sequence[nn.Module], grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Per layer the SNIP saliency ``|w ⊙ ∂L/∂w|`` of the gradients :func:`_gradients` gives."""
    return [(layer.weight.detach() * g).abs() for layer, g in zip(layers, grads, strict=True)]


def _gradients(model: nn.Module, layers: Sequence[nn.Module], x, y, loss_fn) -> list[torch.Tensor]:
    """One train-mode forward/backward; ``∂L/∂w`` per layer (zeros for a layer the loss does not reach). Gradients
    come from ``torch.autograd.grad``, so no ``.grad`` of the caller's model is touched."""
    weights = [layer.weight for layer in layers]
    for w in weights:
        w.requires_grad_(True)
    model.train()
    grads = torch.autograd.grad(loss_fn(_forward(model, x), y), weights, allow_unused=True)
    return [g.detach() if g is not None else torch.zeros_like(w) for w, g in zip(weights, grads, strict=True)]


def _parse(names: Iterable[str]) -> list[tuple[str, str, str | None]]:
    """``[(requested name, proxy, mode)]``."""
    parsed = []
    for name in names:
        if name in PROXIES and name not in DEFAULT_MODES:  # e.g. tcet_mean: a proxy of its own, not a mode
            parsed.append((name, name, None))
            continue
        for base in ("snip_ssnr", "tcet"):
            if name == base:
                parsed.append((name, base, DEFAULT_MODES[base]))
                break
            if name.startswith(base + "_"):
                mode = name[len(base) + 1 :]
                if mode not in SNR_MODES:
                    raise ProxyError(f"names: {name!r} has an unknown mode {mode!r}; choose from {SNR_MODES}")
                parsed.append((name, base, mode))
                break
        else:
            if name not in PROXIES:
                raise ProxyError(f"names: unknown proxy {name!r}; known: {', '.join(PROXIES)} (+ _none/_log/_log1p)")
            parsed.append((name, name, None))
    return parsed


def evaluate_proxies(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    names: Iterable[str],
    loss_fn: Callable = F.cross_entropy,
) -> tuple[dict[str, float], dict[str, str]]:
    """Like :func:`scores`, plus ``problems``: proxy → reason for values that hit a numerical dead end (a singular
    NASWOT kernel, a non-finite value). Such a value is the documented sentinel (0 for a singular kernel) or NaN."""
    parsed = _parse(names)
    wanted = {proxy for _, proxy, _ in parsed}
    layers = weight_layers(model)
    needs_labels = wanted & {"snip", "snip_ssnr", "tcet", "tcet_mean", "grad_norm", "zico"}
    check_batch(x, y if needs_labels else None)
    values: dict[str, float] = {}
    problems: dict[str, str] = {}
    lnwot: list[float] = []
    snr: list[float] = []
    with preserved_state(model):
        if wanted & {"naswot", "lnwot", "tcet", "tcet_mean"}:
            kernels = _activation_kernels(model, layers, x)
            if "naswot" in wanted:
                total = kernels[0].clone()
                for k in kernels[1:]:
                    total += k
                naswot_value, singular = _logdet(total)
                if singular:
                    problems["naswot"] = "singular kernel (identical activation codes in the batch): sentinel 0"
            if wanted & {"lnwot", "tcet", "tcet_mean"}:
                per_layer = [_logdet(k) for k in kernels]
                lnwot = [v for v, _ in per_layer]
                n_singular = sum(s for _, s in per_layer)
        if wanted & {"snip", "snip_ssnr", "tcet", "tcet_mean", "grad_norm"}:
            grads = _gradients(model, layers, x, y, loss_fn)
            saliency = _saliencies(layers, grads)
            snr = [_snr(s) for s in saliency]
        for name, proxy, mode in parsed:
            if proxy == "naswot":
                values[name] = naswot_value
            elif proxy == "lnwot":
                values[name] = float(sum(lnwot))
                if n_singular:
                    problems[name] = f"{n_singular} singular layer kernel(s): sentinel 0 for those layers"
            elif proxy == "snip":
                values[name] = float(sum(s.double().sum() for s in saliency))
            elif proxy == "snip_ssnr":
                values[name] = float(sum(apply_mode(v, mode) for v in snr))
            elif proxy == "tcet":
                values[name] = float(sum(n * apply_mode(s, mode) for n, s in zip(lnwot, snr, strict=True)))
            elif proxy == "tcet_mean":
                terms = [n * apply_mode(s, DEFAULT_MODES["tcet"]) for n, s in zip(lnwot, snr, strict=True)]
                values[name] = float(sum(terms) / len(terms))
            elif proxy == "grad_norm":
                values[name] = float(torch.sqrt(sum(g.double().pow(2).sum() for g in grads)))
    if "zen" in wanted:
        values["zen"] = zen_score(model, x)
    if "zico" in wanted:
        values["zico"] = zico(model, x, y, loss_fn=loss_fn)
    if wanted & set(COST_PROXIES):
        cost = count_cost(model, tuple(x.shape[1:]))
        for name, proxy, _ in parsed:
            if proxy in COST_PROXIES:
                values[name] = float(cost[proxy])
    ordered = {name: values[name] for name, _, _ in parsed}
    for name, value in ordered.items():
        if not math.isfinite(value) and name not in problems:
            problems[name] = f"non-finite value ({value})"
    return ordered, problems


def scores(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, names: Iterable[str], loss_fn: Callable = F.cross_entropy
) -> dict[str, float]:
    """Any subset of :data:`PROXIES` for one network and batch, sharing passes (see the module docstring)."""
    return evaluate_proxies(model, x, y, names, loss_fn)[0]


# ---- single proxies --------------------------------------------------------------------------------------------
def naswot(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
    """NASWOT (conv/linear-output variant, eval mode); ``y`` is unused and accepted for a uniform signature."""
    return scores(model, x, None, ["naswot"])["naswot"]


def lnwot(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> list[float]:
    """Per-layer NASWOT log-determinants, in ``modules()`` order."""
    layers = weight_layers(model)
    check_batch(x)
    with preserved_state(model):
        return [_logdet(k)[0] for k in _activation_kernels(model, layers, x)]


def snip(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable = F.cross_entropy) -> float:
    return scores(model, x, y, ["snip"], loss_fn)["snip"]


def snip_ssnr(model: nn.Module, x: torch.Tensor, y: torch.Tensor, mode: str = "none", loss_fn=F.cross_entropy) -> float:
    return scores(model, x, y, [f"snip_ssnr_{mode}"], loss_fn)[f"snip_ssnr_{mode}"]


def tcet(model: nn.Module, x: torch.Tensor, y: torch.Tensor, mode: str = "log1p", loss_fn=F.cross_entropy) -> float:
    return scores(model, x, y, [f"tcet_{mode}"], loss_fn)[f"tcet_{mode}"]


def zen_score(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    batch_size: int = 16,
    repeats: int = 32,
    mixup_gamma: float = 1e-2,
    seed: int = 0,
    features: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
) -> float:
    """Zen-score (Lin et al. 2021), averaged over ``repeats`` draws, on a copy of ``model`` in train mode.

    Per repeat: Conv/Linear weights ~ N(0, 1) and biases 0, BN γ = 1, β = 0 and running statistics reset;
    ``x₁, ε ~ N(0, 1)`` of ``batch_size`` samples shaped like ``x``; ``f`` = feature map before global pooling
    (``model.forward_features`` or ``features(model, x)``);
    ``score = log(mean_b Σ|f(x₁) − f(x₁ + γ ε)|) + Σ_BN log √mean(running_var)`` with the running variances the two
    forward passes leave (the module's momentum). Only ``x``'s per-sample shape is used; ``seed`` fixes the draws."""
    weight_layers(model)
    check_batch(x, min_batch=1)
    if features is None:
        if not callable(getattr(model, "forward_features", None)):
            raise ProxyError(
                "zen_score: needs the feature map before global pooling: give the model a forward_features(x) "
                "method or pass features=lambda model, x: ..."
            )

        def features(m, inp):
            return m.forward_features(inp)

    net = copy.deepcopy(model).train()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    device, dtype = x.device, x.dtype if x.is_floating_point() else torch.float32
    shape = (batch_size, *x.shape[1:])
    results = []
    with torch.no_grad():
        for _ in range(repeats):
            for m in net.modules():
                if isinstance(m, WEIGHT_LAYERS):
                    m.weight.copy_(torch.randn(m.weight.shape, generator=gen))
                    if m.bias is not None:
                        m.bias.zero_()
                elif isinstance(m, _BN):
                    if m.affine:
                        m.weight.fill_(1.0)
                        m.bias.zero_()
                    if m.track_running_stats:
                        m.reset_running_stats()
            x1 = torch.randn(shape, generator=gen).to(device, dtype)
            eps = torch.randn(shape, generator=gen).to(device, dtype)
            f1 = features(net, x1)
            f2 = features(net, x1 + mixup_gamma * eps)
            delta = (f1 - f2).abs().reshape(batch_size, -1).sum(1).mean()
            bn = sum(
                torch.log(torch.sqrt(m.running_var.mean())).item()
                for m in net.modules()
                if isinstance(m, _BN) and m.track_running_stats
            )
            results.append(float(torch.log(delta)) + bn)
    return float(sum(results) / len(results))


def zico(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, splits: int = 2, loss_fn: Callable = F.cross_entropy
) -> float:
    """ZiCo (Li et al. 2023) in train mode: the batch is split into ``splits`` contiguous parts, each gets its own
    forward/backward (fresh gradients per part, as in the original ZiCo; alethiometer accumulates them). Per layer,
    over weight coordinates with a non-zero std across parts: ``r = mean|g| / std(g)`` (population std, as numpy);
    ``ZiCo = Σ_l log Σ r`` (layers whose sum is 0 contribute nothing)."""
    layers = weight_layers(model)
    check_batch(x, y, min_batch=splits)
    if splits < 2:
        raise ProxyError("zico: needs at least 2 splits to measure a gradient deviation")
    per_split = []
    with preserved_state(model):
        n = x.shape[0]
        for s in range(splits):
            lo, hi = s * n // splits, (s + 1) * n // splits
            per_split.append([g.reshape(-1).double() for g in _gradients(model, layers, x[lo:hi], y[lo:hi], loss_fn)])
    total = 0.0
    for grads in zip(*per_split, strict=True):
        g = torch.stack(grads)
        std = g.std(0, unbiased=False)
        keep = std != 0
        ratio = (g.abs().mean(0)[keep] / std[keep]).sum().item()
        if ratio != 0:
            total += math.log(ratio)
    return total

