"""The trainability guard of the ``guarded_*`` objectives (issue #29): is a network trainable at initialisation?

The measure is :func:`init_grad_norm` — ‖∇θL‖ of the freshly initialised network on a *standard* batch (seeded
Gaussian inputs of the task's shape, seeded labels), not on the run's probe: the range it is compared with is
measured once on trained ground truth (``data/graphnet_digits``) and must mean the same on every run, whatever probe
the run's ``zc`` stage chose (the probe's own ``grad_norm`` moved the digits default 3× between a 32-image digits
probe and a 2-image Gaussian one). :func:`separating_range` places the bound *between* the networks that train and
those that do not (the threshold that separates them best, at the geometric midpoint of the gap), not at the largest
value one trainable network happened to have. Each network family has its own range (:data:`SPACES`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

GUARD_MEASURE = "grad_norm_at_init"
"""The name of :func:`init_grad_norm`'s value in rows, ``score``'s output and rejection reasons."""
GUARD_BATCH = 16
RANGE_FILE = Path(__file__).with_name("trainable_range.json")


@dataclass(frozen=True)
class TrainableRange:
    """``lo ≤ grad_norm_at_init ≤ hi``: the gradient norm at initialisation (:func:`init_grad_norm`) of networks
    that train."""

    lo: float
    hi: float
    source: str = ""

    def admits(self, grad_norm: float) -> bool:
        return math.isfinite(grad_norm) and self.lo <= grad_norm <= self.hi

    def reason(self, grad_norm: float) -> str:
        return (f"untrainable at initialisation: {GUARD_MEASURE} {grad_norm:.3g} outside [{self.lo:.3g}, "
                f"{self.hi:.3g}]{f' ({self.source})' if self.source else ''}")


DEFAULT_RANGE = TrainableRange(0.0, math.inf, "no range set")


def gradient_norm_at_init(build: Callable, input_shape: Sequence[int], num_classes: int, dense: bool = False,
                          seed: int = 0, batch: int = GUARD_BATCH) -> float:
    """‖∇θL‖ of ``build()`` (a fresh network, built under ``seed``) in train mode on ``batch`` seeded standard-normal
    inputs of ``input_shape``: cross-entropy against seeded labels (dense heads: the mean square of the outputs)."""
    import torch
    import torch.nn.functional as F

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build().train()
        x = torch.randn(batch, *input_shape)
        y = torch.randint(0, num_classes, (batch,))
        out = model(x)
        loss = out.pow(2).mean() if dense else F.cross_entropy(out, y)
        loss.backward()
    grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
    return float(torch.cat(grads).norm())


def init_grad_norm(arch, task, seed: int = 0, batch: int = GUARD_BATCH) -> float:
    """:func:`gradient_norm_at_init` of the ``task``'s network for ``arch`` (what the guard measures). SNIP-based
    proxies such as T-CET grow with gradient magnitude, so a search that maximises them can favour networks whose
    gradients explode (the demo's T-CET pick starts two orders of magnitude above the hand-picked network)."""
    from ..space.network import task_network

    return gradient_norm_at_init(lambda: task_network(task, arch), task.input_shape, task.num_classes, task.dense,
                                 seed, batch)


def separating_range(values: Sequence[float | None], trains: Sequence[bool], source: str = "") -> TrainableRange:
    """The range of ``values`` that best separates the networks that train (``trains``) from those that do not:
    the upper bound ``hi`` maximises Youden's J (share of trainable networks admitted − share of untrainable ones
    admitted) over the thresholds between consecutive values, placed at the geometric midpoint of its gap (the
    largest value when every network trains); ``lo`` the same from below when that improves J (else 0)."""
    pairs = sorted((v, t) for v, t in zip(values, trains, strict=True) if v is not None and math.isfinite(v))
    good, bad = sum(t for _, t in pairs), sum(not t for _, t in pairs)
    if good < 5:
        raise ValueError(f"separating_range: {good} trainable networks with a finite value; need ≥ 5 to set a range")
    if not bad:
        return TrainableRange(0.0, pairs[-1][0], source)

    def best_cut(ordered: list[tuple[float, bool]]) -> tuple[float, int]:
        """J of keeping ordered[:k], the best k (ties: the larger k, the more permissive bound)."""
        j, best, k_best, seen_good, seen_bad = 0.0, -math.inf, len(ordered), 0, 0
        for k, (_, t) in enumerate(ordered, 1):
            seen_good, seen_bad = seen_good + t, seen_bad + (not t)
            j = seen_good / good - seen_bad / bad
            if j >= best and (k == len(ordered) or ordered[k][0] != ordered[k - 1][0]):
                best, k_best = j, k
        return best, k_best

    def midpoint(a: float, b: float) -> float:
        return math.sqrt(a * b) if a > 0 and b > 0 else (a + b) / 2

    j_hi, k = best_cut(pairs)
    hi = pairs[-1][0] if k == len(pairs) else midpoint(pairs[k - 1][0], pairs[k][0])
    kept = [p for p in pairs if p[0] <= hi]
    _, k_lo = best_cut(kept[::-1])  # from above: dropping the lowest values, if that separates better
    lo = 0.0 if k_lo == len(kept) else midpoint(kept[::-1][k_lo - 1][0], kept[::-1][k_lo][0])
    return TrainableRange(lo, hi, source)


SPACES = ("graphnet", "nb201")
"""The network families a range is measured for: ``graphnet`` (the macro networks of
:func:`~lightning_nas.space.network.task_network`, what the search and ``generate`` build) and ``nb201`` (NB201's
fixed skeleton around one cell). One range cannot serve both: in GraphNet's macro space large initial gradients mark
networks that do not train (15-epoch ρ(‖∇θL‖, accuracy) = −0.68 on ``data/graphnet_digits``), in NB201 small ones do
(cells of pooling, skips and zeros); ``benchmarks/objectives.md`` has the numbers."""


def shipped_range(space: str = "graphnet") -> TrainableRange:
    """The trainable range of ``space`` (:data:`SPACES`) shipped with the package (``trainable_range.json``, set
    from trained ground truth by ``benchmarks/objectives.py --write-range``); a clear error while none has been
    measured."""
    if space not in SPACES:
        raise ValueError(f"no trainable range for the space {space!r}; spaces: {', '.join(SPACES)}")
    fix = "rerun benchmarks/objectives.py --write-range"
    if not RANGE_FILE.is_file():
        raise FileNotFoundError(f"{RANGE_FILE}: no trainable range measured yet (benchmarks/objectives.py "
                                "--write-range sets it from data/graphnet_digits); choose an unguarded objective, or "
                                "in Python pass trainable=TrainableRange(lo, hi)")
    info = json.loads(RANGE_FILE.read_text())
    if info.get("measure") != GUARD_MEASURE:
        raise ValueError(f"{RANGE_FILE}: a range of {info.get('measure', 'the probe grad_norm')!r}, the guard "
                         f"compares {GUARD_MEASURE!r}: {fix}")
    if space not in info.get("spaces", {}):
        raise ValueError(f"{RANGE_FILE}: no range for the space {space!r} (it has "
                         f"{', '.join(info.get('spaces', {})) or 'none'}): {fix}")
    entry = info["spaces"][space]
    return TrainableRange(float(entry["lo"]), float(entry["hi"]), str(entry.get("source", RANGE_FILE.name)))
