"""Scoring one architecture for the search: budgets first (cheap, on the task's network), then the objective proxy on
the probe batch."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch

from ..space.arch import Arch
from ..space.cost import count_cost
from ..space.network import build_network
from ..space.task import Task
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

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"budget: give it a non-empty name (got {self.name!r})")
        for unit in BUDGET_UNITS:
            limit = getattr(self, f"max_{unit}")
            if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int | float)
                                      or not math.isfinite(limit) or limit <= 0):
                raise ValueError(f"budget {self.name!r}: max_{unit} is {limit!r}; a limit is a positive number "
                                 "(leave it out for no limit)")

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
    """Checks ``budget`` on the ``task``'s network (:meth:`~lightning_nas.space.task.Task.cost`: the network that
    will be trained, at the task's input size) and scores the ``objective`` proxy (default ``tcet``; any name
    :func:`lightning_nas.zc.proxies.evaluate_proxies` knows, e.g. ``zen`` or ``zico`` for the baselines; ``None``:
    check the budget only) on the probe batch. The proxy runs on the same architecture (stem, SE) built for the
    probe's input; both networks' weights are seeded by the probe's seed. ``task`` defaults to the probe's shape
    (:meth:`Task.from_probe`). Architectures to score come from :meth:`materialise`, so they carry the task."""

    def __init__(self, probe: Probe, budget: Budget, objective: str | None = "tcet", task: Task | None = None):
        self.probe, self.budget, self.objective = probe, budget, objective
        self.task = task if task is not None else Task.from_probe(probe)
        self._probe_task = Task.from_probe(probe)

    def materialise(self, hl, cells) -> Arch:
        """α(α̂) for this evaluator's task."""
        return self.task.materialise(hl, cells)

    def _probe_network(self, arch: Arch, task_network):
        """The network the proxy runs on: the task's own when its input and head match the probe's."""
        t, p = self.task, self._probe_task
        if (t.in_channels, t.dims, t.dense) == (p.in_channels, p.dims, False) and t.num_classes >= p.num_classes:
            return task_network
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.probe.seed)
            return build_network(arch, in_channels=p.in_channels, num_classes=p.num_classes, dims=p.dims)

    def __call__(self, arch: Arch) -> Evaluation:
        start = time.perf_counter()
        try:
            if arch.task is not None and arch.task != self.task:
                raise ValueError(f"the architecture was made for task {arch.task.name!r}, this evaluator checks "
                                 f"{self.task.name!r}")
            self.task.check(arch)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.probe.seed)
                model = self.task.network(arch)
            cost = count_cost(model, self.task.input_shape)
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
            values, problems = evaluate_proxies(self._probe_network(arch, model), self.probe.x, self.probe.y,
                                                [self.objective])
        except (RuntimeError, ValueError) as err:
            return Evaluation("failed", None, cost["params"], cost["macs"], cost["flops"],
                              time.perf_counter() - start, f"{self.objective}: {err}")
        score = values[self.objective]
        if not math.isfinite(score):
            reason = problems.get(self.objective, "non-finite score")
            return Evaluation("failed", None, cost["params"], cost["macs"], cost["flops"],
                              time.perf_counter() - start, f"{self.objective}: {reason}")
        return Evaluation("ok", float(score), cost["params"], cost["macs"], cost["flops"], time.perf_counter() - start)
