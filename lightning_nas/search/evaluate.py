"""Scoring one architecture for the search: budgets first (cheap), then the objective proxy on the probe batch."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch

from ..space.arch import Arch
from ..space.cost import count_cost
from ..space.network import build_network
from ..zc.proxies import evaluate_proxies
from ..zc.vector import Probe

BUDGET_UNITS = ("params", "macs", "flops")


@dataclass(frozen=True)
class Budget:
    """Hard limits (``None`` = unlimited); ``name`` labels the runs and the history."""

    name: str = "unlimited"
    max_params: float | None = None
    max_macs: float | None = None
    max_flops: float | None = None

    def violations(self, cost: dict[str, int]) -> list[str]:
        """The limits ``cost`` exceeds, e.g. ``["params 1.2e+06 > 1e+06"]``."""
        out = []
        for unit in BUDGET_UNITS:
            limit = getattr(self, f"max_{unit}")
            if limit is not None and cost[unit] > limit:
                out.append(f"{unit} {cost[unit]:.3g} > {limit:.3g}")
        return out


@dataclass(frozen=True)
class Evaluation:
    """``status``: ``ok``, ``over_budget`` (not scored), ``failed`` (build or proxy error, or a non-finite score) or
    ``unscored`` (within budget, no objective asked for)."""

    status: str
    score: float | None
    params: int | None
    macs: int | None
    flops: int | None
    seconds: float
    reason: str = ""

    def to_json(self) -> dict:
        return asdict(self)


class ArchEvaluator:
    """Builds α on the probe's input shape (weights seeded by the probe's seed), checks ``budget`` and scores the
    ``objective`` proxy (default ``tcet``; any name :func:`lightning_nas.zc.proxies.evaluate_proxies` knows, e.g.
    ``zen`` or ``zico`` for the baselines; ``None``: check the budget only). ``num_classes`` and ``input_shape`` (C, H, W) are the task's, for the
    network's head and its cost (default: the probe's); the proxy always runs on the probe batch."""

    def __init__(self, probe: Probe, budget: Budget, objective: str | None = "tcet", num_classes: int | None = None,
                 input_shape: tuple[int, ...] | None = None):
        self.probe, self.budget, self.objective = probe, budget, objective
        self.num_classes = num_classes or probe.num_classes
        self.input_shape = tuple(input_shape) if input_shape is not None else tuple(probe.x.shape[1:])
        if self.input_shape[0] != probe.x.shape[1]:
            raise ValueError(f"input_shape: {self.input_shape[0]} channels, the probe batch has {probe.x.shape[1]}")

    def __call__(self, arch: Arch) -> Evaluation:
        start = time.perf_counter()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.probe.seed)
                model = build_network(arch, in_channels=self.probe.x.shape[1], num_classes=self.num_classes)
            cost = count_cost(model, self.input_shape)
        except (RuntimeError, ValueError) as err:
            return Evaluation("failed", None, None, None, None, time.perf_counter() - start, f"build: {err}")
        over = self.budget.violations(cost)
        if over:
            return Evaluation("over_budget", None, cost["params"], cost["macs"], cost["flops"],
                              time.perf_counter() - start, "; ".join(over))
        if self.objective is None:  # a cost check only
            return Evaluation("unscored", None, cost["params"], cost["macs"], cost["flops"],
                              time.perf_counter() - start)
        try:
            values, problems = evaluate_proxies(model, self.probe.x, self.probe.y, [self.objective])
        except (RuntimeError, ValueError) as err:
            return Evaluation("failed", None, cost["params"], cost["macs"], cost["flops"],
                              time.perf_counter() - start, f"{self.objective}: {err}")
        score = values[self.objective]
        if not math.isfinite(score):
            reason = problems.get(self.objective, "non-finite score")
            return Evaluation("failed", None, cost["params"], cost["macs"], cost["flops"],
                              time.perf_counter() - start, f"{self.objective}: {reason}")
        return Evaluation("ok", float(score), cost["params"], cost["macs"], cost["flops"], time.perf_counter() - start)
