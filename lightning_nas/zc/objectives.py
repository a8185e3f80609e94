"""Search objectives: the number HL-Evo, the cluster ranking, the SG's corpus and ``generate`` maximise (issue #29).

An objective is made of zero-cost proxies of one network on the probe batch (:func:`~.proxies.evaluate_proxies`),
so every stage that scores an architecture scores it the same way. Two kinds:

- **pointwise** — a function of the network's own proxies: ``tcet`` (the paper's T-CET, Σ_l LNWOT_l·log1p(SNR_l);
  the faithful mode), ``naswot``, ``tcet_mean`` (T-CET averaged over layers: not rewarded for depth alone),
  ``snip_ssnr``, ``zico``, ``zen``; each also ``guarded_<name>`` — the same proxy with the **trainability guard**:
  a network whose gradient norm at initialisation (``grad_norm``, the probe batch) lies outside the range of trainable
  networks is *rejected* (status ``rejected``), never chosen. The range comes from trained ground truth
  (``data/graphnet_digits``, :func:`trainable_range`), not from one architecture.
- **rank aggregations** — scale-invariant scores of a *population* (AZ-NAS's ``Σ_k log(rank_k / M)``, Jeong et al.
  CVPR 2024): :func:`lightning_nas.zc.az_nas.az_nas_aggregate` ranks candidates by each key and sums the
  log-ranks. They compare candidates with each other, so they rank a finished pool (``generate``'s candidates, a
  table of objectives) rather than score one network alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

BASE_OBJECTIVES = ("tcet", "naswot", "tcet_mean", "snip_ssnr", "zico", "zen")
OBJECTIVES = (*BASE_OBJECTIVES, *(f"guarded_{name}" for name in BASE_OBJECTIVES))
"""Names an ``objective:`` setting accepts (the search stage, ``generate``, ``score``)."""

DEFAULT_OBJECTIVE = "tcet"
"""The project's default (see ``benchmarks/results/objectives.md`` for how each objective ranks trained accuracy)."""

GUARD_PROXY = "grad_norm"


@dataclass(frozen=True)
class TrainableRange:
    """``lo ≤ grad_norm ≤ hi``: the gradient norm at initialisation (probe batch) of networks that train."""

    lo: float
    hi: float
    source: str = ""

    def admits(self, grad_norm: float) -> bool:
        return math.isfinite(grad_norm) and self.lo <= grad_norm <= self.hi

    def reason(self, grad_norm: float) -> str:
        return (f"untrainable at initialisation: grad_norm {grad_norm:.3g} outside [{self.lo:.3g}, {self.hi:.3g}]"
                f"{f' ({self.source})' if self.source else ''}")


DEFAULT_RANGE = TrainableRange(0.0, math.inf, "no range set")


@dataclass(frozen=True)
class Objective:
    """One entry of :data:`OBJECTIVES`: the proxy it maximises and whether the trainability guard applies."""

    name: str
    proxy: str
    guarded: bool

    @property
    def proxies(self) -> tuple[str, ...]:
        """The :func:`~.proxies.evaluate_proxies` names it needs."""
        return (self.proxy, GUARD_PROXY) if self.guarded and self.proxy != GUARD_PROXY else (self.proxy,)

    def score(self, values: Mapping[str, float], trainable: TrainableRange = DEFAULT_RANGE) -> tuple[float, str]:
        """``(score, "")`` or ``(nan, reason)`` when the guard rejects the network."""
        if self.guarded and not trainable.admits(values[GUARD_PROXY]):
            return math.nan, trainable.reason(values[GUARD_PROXY])
        return float(values[self.proxy]), ""


def objective(name: str) -> Objective:
    """The objective called ``name`` (one of :data:`OBJECTIVES`); a clear error otherwise."""
    if name not in OBJECTIVES:
        raise ValueError(f"objective: unknown {name!r}; choose from {', '.join(OBJECTIVES)}")
    guarded = name.startswith("guarded_")
    return Objective(name, name.removeprefix("guarded_"), guarded)


def objective_for(name: str) -> Objective:
    """:func:`objective` for a name of :data:`OBJECTIVES`; any other proxy name of
    :func:`~.proxies.evaluate_proxies` (a baseline's, e.g. ``snip``) as an unguarded objective of its own."""
    from .proxies import PROXIES, _parse

    if name in OBJECTIVES:
        return objective(name)
    try:
        _parse([name])
    except ValueError:
        raise ValueError(f"objective: unknown {name!r}; choose from {', '.join(OBJECTIVES)} (or a proxy: "
                         f"{', '.join(p for p in PROXIES if p not in OBJECTIVES)})") from None
    return Objective(name, name, False)


def shipped_range() -> TrainableRange:
    """The trainable range shipped with the package (``trainable_range.json``, set from ``data/graphnet_digits``
    with :func:`trainable_range`); a clear error while none has been measured."""
    import json
    from pathlib import Path

    path = Path(__file__).with_name("trainable_range.json")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trainable range measured yet (it is set from data/graphnet_digits once "
                                "that holds enough rows, issue #29); choose an unguarded objective, or in Python pass "
                                "trainable=TrainableRange(lo, hi)")
    info = json.loads(path.read_text())
    return TrainableRange(float(info["lo"]), float(info["hi"]), str(info.get("source", path.name)))


def trainable_range(grad_norms: Sequence[float], accuracies: Sequence[float], floor: float,
                    quantiles: tuple[float, float] = (0.0, 1.0), source: str = "") -> TrainableRange:
    """The range of ``grad_norm`` among networks that trained to at least ``floor`` accuracy (the ``quantiles`` of
    those networks' values: 0 and 1 give their min and max)."""
    import numpy as np

    good = [g for g, a in zip(grad_norms, accuracies, strict=True) if a is not None and a >= floor and
            g is not None and math.isfinite(g)]
    if len(good) < 5:
        raise ValueError(f"trainable_range: {len(good)} networks reached {floor}; need ≥ 5 to set a range")
    lo, hi = np.quantile(good, quantiles)
    return TrainableRange(float(lo), float(hi), source)
