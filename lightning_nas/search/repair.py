"""An in-budget answer for every feasible budget: repair an architecture that misses its budget, search within the
budget when repair cannot, and the smallest network of the space to tell an infeasible budget from a hard one.

The generate stage answers in this order (its ``metrics.json`` says which path answered, ``answer``):

1. ``sg`` — the best scored of the SG's candidates within budget (the paper's path);
2. ``repaired`` — none was: every over-budget candidate is shrunk (:func:`repair`: add a downsampling while a
   MACs/FLOPs/latency limit is missed, then scale every width down, then drop repeats and stages), checked again
   and scored; the best repaired one answers;
3. ``search`` — no repaired candidate scored: a short HL-Evo (:func:`search_within_budget`, Algorithm 1 with the
   CCNF's cells) starting from the smallest in-budget repair (or :func:`smallest_arch`), its evaluations counted;
4. ``smallest`` — nothing could be scored at all: the smallest in-budget network found, unscored.

The last repair steps reach :func:`smallest_arch` itself (one stage, one cell, 8 channels, the cell replaced by a
single ``skip`` node), so every feasible budget has an answer.

A budget below :func:`smallest_arch`'s cost — one cell of a single ``skip`` node at 8 channels, stride 1, no head
conv: the cheapest network GraphNet can build for the task — has no answer, and :func:`check_feasible` says so in
one paragraph with that cost.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from ..archive import Archive
from ..space.arch import Arch
from ..space.cell import Cell
from ..space.hl import HLArch, HLStage
from ..space.network import task_network
from .evaluate import ArchEvaluator, Budget
from .hl_evo import HLEvoConfig, SearchState, hl_evo
from .mutations import Candidate, scale_width

SMALLEST_CELL = Cell(("skip",), ((0, 1), (1, 2)))
"""One op node, ``skip``: the cell with no parameters and no MACs."""

_SPATIAL_UNITS = ("macs", "flops", "latency_ms", "energy_mj")  # limits a downsampling relieves


def smallest_arch(task) -> Arch:
    """The cheapest network of the space for ``task``: one :data:`SMALLEST_CELL` cell at 8 channels, stride 1, no
    head conv (every cost — params, MACs, FLOPs — is then the stem's and the classifier's)."""
    return task.materialise(HLArch((HLStage(0, 8, 1, 1),), None), [SMALLEST_CELL])


def network_cost(evaluator: ArchEvaluator, hl: HLArch, cells) -> dict[str, float] | None:
    """The evaluator's cost of α(hl, cells) on its task's network (``None`` when it cannot be built); the caller's
    random state is left alone."""
    try:
        with torch.random.fork_rng(devices=[]):
            return evaluator.cost(task_network(evaluator.task, evaluator.materialise(hl, cells)))
    except (RuntimeError, ValueError):
        return None


def check_feasible(evaluator: ArchEvaluator) -> dict[str, float]:
    """The smallest network's cost; a ``ValueError`` (one paragraph, rc 2 on the command line) when even it
    misses the evaluator's budget."""
    task, budget = evaluator.task, evaluator.budget
    cost = network_cost(evaluator, HLArch((HLStage(0, 8, 1, 1),), None), [SMALLEST_CELL])
    if cost is None:
        raise ValueError(f"task {task.name!r}: the smallest GraphNet network cannot be built for it")
    over = budget.violations(cost)
    if over:
        smallest = ", ".join(f"{u} {cost[u]:,.4g}" for u in ("params", "macs", "flops", "latency_ms", "energy_mj")
                             if u in cost and getattr(budget, f"max_{u}") is not None)
        raise ValueError(
            f"budget: no architecture of the space fits it on task {task.name!r} ({'; '.join(over)}). The smallest "
            f"network the space can build for this task — stem, one cell of a single skip node at 8 channels, the "
            f"classifier — costs {smallest}; its stem and classifier alone are that large for a "
            f"{'×'.join(map(str, task.input_shape))} input with {task.num_classes} outputs. Ask for at least "
            f"that (e.g. {' '.join(f'--budget.{u} {_quantity(cost[u] * 1.5)}' for u in _over_units(cost, budget))}) "
            f"or a task with a smaller input.")
    return cost


def _over_units(cost: dict, budget: Budget) -> list[str]:
    return [u for u in ("params", *_SPATIAL_UNITS)
            if getattr(budget, f"max_{u}") is not None and u in cost and cost[u] > getattr(budget, f"max_{u}")]


def _quantity(value: float) -> str:
    """``1234567`` → ``1.3M``, rounded up (a budget written as generate's ``--budget`` reads it)."""
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{math.ceil(value / scale * 10) / 10:g}{suffix}"
    return f"{math.ceil(value * 100) / 100:g}"


def _shrink(hl: HLArch, cells: list[Cell], cost: dict, budget: Budget, max_downsamplings: int):
    """One repair step (see the module docstring): the smaller (hl, cells) and its name, or ``None`` when nothing
    can be made smaller."""
    stages = list(hl.stages)
    over = {u: cost[u] / getattr(budget, f"max_{u}") for u in _over_units(cost, budget)}
    if set(over) & set(_SPATIAL_UNITS) and hl.downsamplings < max_downsamplings and any(s.stride == 1 for s in stages):
        i = next(i for i, s in enumerate(stages) if s.stride == 1)
        stages[i] = replace(stages[i], stride=2)
        return HLArch(tuple(stages), hl.final_channels), cells, f"stride 2 at stage {i}"
    factor = 0.97 / math.sqrt(max(over.values()))  # params and MACs grow with width²
    widths = [scale_width(s.channels, factor) for s in stages]
    final = None if hl.final_channels is None else scale_width(hl.final_channels, factor)
    if widths != [s.channels for s in stages] or final != hl.final_channels:
        return (HLArch(tuple(replace(s, channels=c) for s, c in zip(stages, widths, strict=True)), final), cells,
                f"widths × {factor:.3g}")
    if hl.final_channels is not None:
        return HLArch(tuple(stages), None), cells, "head conv removed"
    deepest = max(range(len(stages)), key=lambda i: (stages[i].repeats, i))
    if stages[deepest].repeats > 1:
        stages[deepest] = replace(stages[deepest], repeats=stages[deepest].repeats - 1)
        return HLArch(tuple(stages), None), cells, f"one repeat fewer at stage {deepest}"
    if len(stages) > 1:
        return HLArch(tuple(stages[:-1]), None), cells[:-1], "last stage removed"
    if cells[0] != SMALLEST_CELL:  # one cell at 8 channels left: the cheapest cell of the space
        return HLArch(tuple(stages), None), [SMALLEST_CELL], "cell replaced by a skip node"
    if stages[0].stride == 2:
        return HLArch((replace(stages[0], stride=1),), None), cells, "stride 1 at stage 0"
    return None


def repair(hl: HLArch, cells, evaluator: ArchEvaluator, max_steps: int = 40) -> tuple[Candidate, list[str]] | None:
    """Shrink α(hl, cells) step by step until its cost is within the evaluator's budget; the repaired candidate
    and the steps taken, or ``None`` when it cannot be made to fit (each step is checked on the task's network)."""
    cells, steps = list(cells), []
    for _ in range(max_steps + 1):
        cost = network_cost(evaluator, hl, cells)
        if cost is None:
            return None
        if not evaluator.budget.violations(cost):
            return Candidate(hl, tuple(cells)), steps
        step = _shrink(hl, cells, cost, evaluator.budget, evaluator.task.max_downsamplings)
        if step is None:
            return None
        hl, cells, name = step
        steps.append(name)
    return None


def search_within_budget(evaluator: ArchEvaluator, start: Candidate, new_cell: Callable, num_clusters: int,
                         iterations: int, seed: int = 0, population: int = 8,
                         evaluate_many: Callable | None = None) -> SearchState:
    """HL-Evo (Algorithm 1, :func:`~lightning_nas.search.hl_evo.hl_evo`) from the in-budget ``start`` for
    ``iterations`` mutations, every child checked against the budget and scored by the evaluator; the history is
    kept in a temporary archive (it is not part of the SG's corpus)."""
    config = HLEvoConfig(population=population, iterations=iterations, seed=seed,
                         initial=tuple((s.cluster, s.channels, s.stride, s.repeats) for s in start.hl.stages),
                         initial_final_channels=start.hl.final_channels)
    with tempfile.TemporaryDirectory() as tmp, Archive(Path(tmp) / "fallback.sqlite", op_set="graphnet") as study:
        return hl_evo(config, evaluator, new_cell, num_clusters, study, "fallback", initial_cells=start.cells,
                      method="fallback", evaluate_many=evaluate_many)


def cheapest(candidates: list[Candidate], evaluator: ArchEvaluator) -> Candidate:
    """The candidate with the fewest params (ties: MACs, then order)."""
    costs = [network_cost(evaluator, c.hl, c.cells) or {"params": math.inf, "macs": math.inf} for c in candidates]
    return candidates[min(range(len(candidates)), key=lambda i: (costs[i]["params"], costs[i]["macs"], i))]

