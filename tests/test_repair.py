"""Repair of over-budget architectures and the smallest network of the space (lightning_nas.search.repair)."""

import random

import pytest

from lightning_nas.search.evaluate import ArchEvaluator, Budget
from lightning_nas.search.mutations import mutate_cell
from lightning_nas.search.repair import SMALLEST_CELL, check_feasible, network_cost, repair, smallest_arch
from lightning_nas.space.cell import Cell
from lightning_nas.space.cost import count_cost
from lightning_nas.space.hl import HLArch, HLStage
from lightning_nas.space.network import task_network
from lightning_nas.space.task import Task
from lightning_nas.zc.vector import Probe

CONV = Cell(("conv_k3", "conv_k3"), ((0, 1), (1, 2), (2, 3)))


def _evaluator(params=None, macs=None):
    import torch

    probe = Probe(torch.randn(4, 1, 32, 32), torch.arange(4) % 10, "digits", 0)
    return ArchEvaluator(probe, Budget("b", params, macs), "tcet", Task.resolve("digits"))


def test_smallest_arch_is_cheaper_than_any_other_of_the_space():
    task = Task.resolve("digits")
    smallest = count_cost(task_network(task, smallest_arch(task)), task.input_shape)
    rng = random.Random(0)
    for _ in range(5):
        cell = mutate_cell(CONV, rng)
        other = task.materialise(HLArch((HLStage(0, 8, 1, 1),), None), [cell])
        cost = count_cost(task_network(task, other), task.input_shape)
        assert cost["params"] >= smallest["params"] and cost["macs"] >= smallest["macs"]


@pytest.mark.parametrize("params,macs", [(None, 2e6), (60_000, None), (30_000, 3e6), (300, None)])
def test_repair_brings_an_over_budget_network_within_every_limit(params, macs):
    evaluator = _evaluator(params, macs)
    hl = HLArch((HLStage(0, 64, 1, 3), HLStage(1, 128, 2, 3), HLStage(0, 256, 2, 2)), 512)
    cells = [CONV, CONV, CONV]
    before = network_cost(evaluator, hl, cells)
    assert evaluator.budget.violations(before)
    fixed, steps = repair(hl, cells, evaluator)
    after = network_cost(evaluator, fixed.hl, fixed.cells)
    assert not evaluator.budget.violations(after) and steps
    assert evaluator(evaluator.materialise(fixed.hl, fixed.cells)).status in ("ok", "failed")  # scored, not over
    if macs is not None and params is None:  # a MACs limit adds a downsampling first
        assert steps[0].startswith("stride 2")
    if params == 300:  # only the smallest network fits: repair reaches it
        assert fixed.cells == (SMALLEST_CELL,) and fixed.hl.num_cells == 1


def test_an_infeasible_budget_names_the_smallest_cost_and_how_to_fix_it():
    cost = check_feasible(_evaluator(1e6))
    assert cost["params"] == 194
    with pytest.raises(ValueError, match=r"params 194 > 10.*costs params 194.*--budget.params 291"):
        check_feasible(_evaluator(10))
    with pytest.raises(ValueError, match=r"--budget.macs 110.8k"):
        check_feasible(_evaluator(None, 1000))


def test_the_fallback_search_stays_within_the_budget_and_counts_its_evaluations():
    from lightning_nas.search.mutations import Candidate
    from lightning_nas.search.repair import search_within_budget

    evaluator = _evaluator(20_000, 2e6)
    start = Candidate(HLArch((HLStage(0, 8, 1, 1),), None), (CONV,))
    state = search_within_budget(evaluator, start, lambda cell, k, rng: mutate_cell(cell or CONV, rng), 2,
                                 iterations=6, seed=0)
    assert state.iterations == 7 and state.evaluations + state.over_budget + state.failed == 7
    best, score = state.best
    assert score > 0 and not evaluator.budget.violations(network_cost(evaluator, best.hl, best.cells))
