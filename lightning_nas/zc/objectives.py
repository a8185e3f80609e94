"""Search objectives: the number HL-Evo, the cluster ranking, the SG's corpus and ``generate`` maximise (issue #29).

An objective is made of zero-cost proxies of one network on the probe batch (:func:`~.proxies.evaluate_proxies`),
so every stage that scores an architecture scores it the same way. Two kinds:

- **pointwise** — a function of the network's own proxies: ``tcet`` (the paper's T-CET, Σ_l LNWOT_l·log1p(SNR_l);
  the faithful mode), ``naswot``, ``tcet_mean`` (T-CET averaged over layers: not rewarded for depth alone),
  ``snip_ssnr``, ``zico``, ``zen``; each also ``guarded_<name>`` — the same proxy with the **trainability guard**:
  a network whose gradient norm at initialisation (:func:`~.trainability.init_grad_norm`, on a standard batch, not
  the run's probe) lies outside the range of trainable networks is *rejected* (status ``rejected``), never chosen.
  The range comes from trained ground truth (``data/graphnet_digits``, :func:`~.trainability.separating_range`),
  not from one architecture.
- **rank aggregations** — scale-invariant scores of a *population* (AZ-NAS's ``Σ_k log(rank_k / M)``, Jeong et al.
  CVPR 2024): :func:`lightning_nas.zc.az_nas.az_nas_aggregate` ranks candidates by each key and sums the
  log-ranks. They compare candidates with each other, so they rank a finished pool (``generate``'s candidates, a
  table of objectives) rather than score one network alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from .trainability import DEFAULT_RANGE, GUARD_MEASURE, TrainableRange, init_grad_norm, shipped_range

__all__ = ["BASE_OBJECTIVES", "DEFAULT_OBJECTIVE", "DEFAULT_RANGE", "OBJECTIVES", "Objective", "TrainableRange",
           "init_grad_norm", "objective", "objective_for", "shipped_range"]

BASE_OBJECTIVES = ("tcet", "naswot", "tcet_mean", "snip_ssnr", "zico", "zen")
OBJECTIVES = (*BASE_OBJECTIVES, *(f"guarded_{name}" for name in BASE_OBJECTIVES))
"""Names an ``objective:`` setting accepts (the search stage, ``generate``, ``score``)."""

DEFAULT_OBJECTIVE = "guarded_snip_ssnr"
"""The project's default: SNIP's signal-to-noise ratio (the per-layer SNR that T-CET weights by LNWOT) behind the
trainability guard — the winner of ``benchmarks/objectives.py``'s rule (``default_by_rule``) on both ground truths
once each space has its own trainable range (``benchmarks/results/objectives.md``; ``guarded_tcet`` was the winner
while one range served both); ``tcet`` is the paper-faithful mode."""

@dataclass(frozen=True)
class Objective:
    """One entry of :data:`OBJECTIVES`: the proxy it maximises and whether the trainability guard applies."""

    name: str
    proxy: str
    guarded: bool

    @property
    def proxies(self) -> tuple[str, ...]:
        """The :func:`~.proxies.evaluate_proxies` names it needs (the guard's measure is not one: it is
        :func:`~.trainability.init_grad_norm`, on a standard batch)."""
        return (self.proxy,)

    def score(self, values: Mapping[str, float], trainable: TrainableRange = DEFAULT_RANGE,
              grad_norm_at_init: float | None = None) -> tuple[float, str]:
        """``(score, "")`` or ``(nan, reason)`` when the guard rejects the network (``grad_norm_at_init``: its
        :func:`~.trainability.init_grad_norm`, needed by a guarded objective)."""
        if self.guarded:
            if grad_norm_at_init is None:
                raise ValueError(f"{self.name}: the trainability guard needs the network's {GUARD_MEASURE}")
            if not trainable.admits(grad_norm_at_init):
                return math.nan, trainable.reason(grad_norm_at_init)
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
