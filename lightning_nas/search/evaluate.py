"""Scoring one architecture for the search: budgets first (cheap, on the task's network), then the objective proxy on
the probe batch."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch

from ..space.arch import Arch
from ..space.cost import count_cost
from ..space.network import build_network, task_network
from ..space.task import Task
from ..zc.objectives import Objective, objective_for
from ..zc.proxies import evaluate_proxies
from ..zc.trainability import GUARD_MEASURE, TrainableRange, init_grad_norm, shipped_range
from ..zc.vector import Probe

BUDGET_UNITS = ("params", "macs", "flops", "latency_ms", "energy_mj")
HARDWARE_UNITS = ("latency_ms", "energy_mj")


@dataclass(frozen=True)
class Budget:
    """Hard limits (``None`` = unlimited); ``name`` labels the runs and the history. ``max_latency_ms`` and
    ``max_energy_mj`` are on ``device`` (``host`` or a HW-NAS-Bench platform, :mod:`lightning_nas.hw`), batch 1,
    judged by that device's :class:`~lightning_nas.hw.cost.HardwareCost` predictor."""

    name: str = "unlimited"
    max_params: float | None = None
    max_macs: float | None = None
    max_flops: float | None = None
    max_latency_ms: float | None = None
    max_energy_mj: float | None = None
    device: str = "host"

    @property
    def hardware(self) -> bool:
        """Whether a limit needs the device's hardware cost."""
        return any(getattr(self, f"max_{unit}") is not None for unit in HARDWARE_UNITS)

    def __post_init__(self):
        from ..hw.devices import DEVICES, ENERGY_DEVICES

        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"budget: give it a non-empty name (got {self.name!r})")
        if self.device not in DEVICES:
            raise ValueError(f"budget {self.name!r}: device {self.device!r}; choose one of {DEVICES}")
        if self.max_energy_mj is not None and self.device not in ENERGY_DEVICES:
            raise ValueError(f"budget {self.name!r}: no energy model for {self.device!r}; energy budgets are for "
                             f"{ENERGY_DEVICES}")
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
            if limit is not None and cost[unit] > limit:  # a hardware limit's cost is predicted
                out.append(f"{unit} {cost[unit]:.3g} > {limit:.3g}")
        return out


@dataclass(frozen=True)
class Evaluation:
    """``status``: ``ok``, ``over_budget`` (not scored), ``failed`` (build or proxy error, or a non-finite score),
    ``rejected`` (scored, but a guarded objective's trainability guard refused it: ``reason`` says why) or
    ``unscored`` (within budget, no objective asked for)."""

    status: str
    score: float | None
    params: int | None
    macs: int | None
    flops: int | None
    seconds: float
    reason: str = ""
    latency_ms: float | None = None  # predicted on the budget's device (hardware budgets only)
    energy_mj: float | None = None

    def to_json(self) -> dict:
        return asdict(self)


class ArchEvaluator:
    """Checks ``budget`` on the ``task``'s network (:meth:`~lightning_nas.space.task.Task.cost`: the network that
    will be trained, at the task's input size) and scores the ``objective`` (default ``tcet``; one of
    :data:`lightning_nas.zc.objectives.OBJECTIVES`, or any name :func:`lightning_nas.zc.proxies.evaluate_proxies`
    knows; ``None``: check the budget only) on the probe batch. A guarded objective rejects networks outside
    ``trainable`` (default: the range shipped with the package, measured on trained ground truth). The proxy runs on
    the same architecture (stem, SE) built for the probe's input; both networks' weights are seeded by the probe's
    seed. ``task`` defaults to the probe's shape (:meth:`Task.from_probe`). Architectures to score come from
    :meth:`materialise`, so they carry the task."""

    def __init__(self, probe: Probe, budget: Budget, objective: str | None = "tcet", task: Task | None = None,
                 hardware=None, trainable: TrainableRange | None = None):
        self.probe, self.budget, self.objective = probe, budget, objective
        self._objective: Objective | None = objective_for(objective) if objective is not None else None
        self.trainable = trainable if trainable is not None or not getattr(self._objective, "guarded", False) \
            else shipped_range()
        self.task = task if task is not None else Task.from_probe(probe)
        self._probe_task = Task.from_probe(probe)
        if budget.hardware and (hardware is None or hardware.device != budget.device):
            raise ValueError(f"budget {budget.name!r} limits latency/energy on {budget.device!r}: give its "
                             "HardwareCost (lightning_nas.hw.cost) as hardware=")
        self.hardware = hardware  # a HardwareCost: predicted latency/energy of the task's network

    def cost(self, model) -> dict[str, float]:
        """Params/MACs/FLOPs of the task's ``model`` (counted) and, with a hardware cost, its predicted
        ``latency_ms``/``energy_mj`` on the budget's device."""
        cost = count_cost(model, self.task.input_shape)
        if self.hardware is not None:
            cost.update(self.hardware(model, self.task.input_shape))
        return cost

    def materialise(self, hl, cells) -> Arch:
        """α(α̂) for this evaluator's task."""
        return self.task.materialise(hl, cells)

    def probe_network(self, arch: Arch, task_network):
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
                model = task_network(self.task, arch)
            cost = self.cost(model)
        except (RuntimeError, ValueError) as err:
            return Evaluation("failed", None, None, None, None, time.perf_counter() - start, f"build: {err}")
        hw = {unit: cost[unit] for unit in HARDWARE_UNITS if unit in cost}  # guarded (with the table's margin)
        over = self.budget.violations(cost)
        if over:
            return Evaluation("over_budget", None, cost["params"], cost["macs"], cost["flops"],
                              time.perf_counter() - start, "; ".join(over), **hw)
        if self.objective is None:  # a cost check only
            return Evaluation("unscored", None, cost["params"], cost["macs"], cost["flops"],
                              time.perf_counter() - start, **hw)
        guard = None
        if self._objective.guarded:  # the guard first: a rejected network costs no proxy
            try:
                guard = init_grad_norm(arch, self.task)
            except (RuntimeError, ValueError) as err:
                return Evaluation("failed", None, cost["params"], cost["macs"], cost["flops"],
                                  time.perf_counter() - start, f"{self.objective}: {GUARD_MEASURE}: {err}", **hw)
            if not self.trainable.admits(guard):
                return Evaluation("rejected", None, cost["params"], cost["macs"], cost["flops"],
                                  time.perf_counter() - start, f"{self.objective}: {self.trainable.reason(guard)}",
                                  **hw)
        try:
            values, problems = evaluate_proxies(self.probe_network(arch, model), self.probe.x, self.probe.y,
                                                self._objective.proxies)
        except (RuntimeError, ValueError) as err:
            return Evaluation("failed", None, cost["params"], cost["macs"], cost["flops"],
                              time.perf_counter() - start, f"{self.objective}: {err}", **hw)
        score, _ = self._objective.score(values, self.trainable, guard)  # the guard already admitted it above
        if not math.isfinite(score):
            reason = problems.get(self._objective.proxy, "non-finite score")
            return Evaluation("failed", None, cost["params"], cost["macs"], cost["flops"],
                              time.perf_counter() - start, f"{self.objective}: {reason}", **hw)
        return Evaluation("ok", float(score), cost["params"], cost["macs"], cost["flops"], time.perf_counter() - start,
                          **hw)
