"""benchmarks/nb201_hw_search.py: the hypervolume, the budgets from the shipped HW-NAS-Bench table, the budget-aware
searches with a cheap stand-in for the ZC cache, and the result row's contract (no runs/ and no ZC vector needed)."""

import itertools
import json
import math
import random
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import nb201_hw_search as hw  # noqa: E402


@pytest.fixture(scope="module")
def space(nb201_table):
    from lightning_nas.hw import HWNASBench

    return hw.Space(HWNASBench(), nb201_table)


class StubCache:
    """What :class:`Search` needs of a ZC cache: ``cache(cell) -> (values, seconds)``, here a deterministic function
    of the cell's hash instead of a ZC vector."""

    def __init__(self):
        self.calls = 0

    def __call__(self, cell):
        self.calls += 1
        h = cell.canonical_hash()
        return {"tcet": float(int(h[:8], 16))}, 0.01


def fake_predictions(space, unmeasured_every=0):
    """A deterministic 'predicted latency' per reachable cell (0–99 ms); every ``unmeasured_every``-th cell left out
    (no measurement on the device)."""
    return {h: float(int(h[-6:], 16) % 100) for i, h in enumerate(space.hashes)
            if not (unmeasured_every and i % unmeasured_every == 0)}


def brute_force_hypervolume(points, ref):
    """Unit squares of the integer grid dominated by some point (exact for integer coordinates)."""
    acc_ref, lat_ref = ref
    top = max([acc_ref, *(a for a, _ in points)])
    return sum(any(a >= x + 0.5 and lat <= y + 0.5 for a, lat in points)
               for x in range(int(acc_ref), int(top)) for y in range(int(min(lat for _, lat in points) - 1), lat_ref))


def test_hypervolume_matches_brute_force():
    assert hw.hypervolume([], (0, 10)) == 0.0
    assert hw.hypervolume([(5, 2)], (0, 10)) == 40.0  # (5 − 0) × (10 − 2)
    assert hw.hypervolume([(5, 2), (3, 4)], (0, 10)) == 40.0  # dominated point adds nothing
    assert hw.hypervolume([(-1, 2), (5, 12)], (0, 10)) == 0.0  # outside the reference box
    rng = random.Random(0)
    for _ in range(30):
        points = [(rng.randint(0, 12), rng.randint(0, 15)) for _ in range(rng.randint(1, 8))]
        ref = (0, 16)
        assert hw.hypervolume(points, ref) == pytest.approx(brute_force_hypervolume(points, ref))
        front = hw.pareto_front(points)
        assert hw.hypervolume(front, ref) == pytest.approx(hw.hypervolume(points, ref))
        for (a1, l1), (a2, l2) in itertools.pairwise(front):
            assert l1 < l2 and a1 < a2  # a front: slower only when more accurate


def test_budget_quantiles_from_the_table(space):
    assert len(space.hashes) == 8764
    for device in ("raspi4", "edgetpu"):
        lat = space.latency(device)
        measured = lat[~np.isnan(lat)]
        budgets = hw.budget_quantiles(lat, [0.25, 0.5])
        assert budgets == sorted(budgets) and all(b == float(f"{b:.3g}") for b in budgets)
        for b, q in zip(budgets, (0.25, 0.5), strict=True):
            assert abs(np.mean(measured <= b) - q) < 0.01
    assert np.isnan(space.latency("edgetpu")).sum() == 624  # reported strings HW-NAS-Bench did not measure
    assert hw.budget_quantiles(space.latency("raspi4"), [0.25, 0.5]) == [22.9, 28.2]
    acc_ref, lat_ref = space.reference("raspi4")
    assert acc_ref < 50 and lat_ref == pytest.approx(np.nanmax(space.latency("raspi4")))


@pytest.mark.parametrize("method", ["random", "evo"])
def test_searches_keep_within_the_predicted_budget(space, method):
    from lightning_nas.space.nb201 import nb201_arch_strings

    predicted = fake_predictions(space, unmeasured_every=7)
    cache = StubCache()
    search = hw.BudgetSearch(cache, 30, predicted, 30.0)
    if method == "random":
        hw.random_search(search, 0, nb201_arch_strings())
    else:
        hw.evolution(search, 0, nb201_arch_strings())
    assert len(search.scored) == 30 == cache.calls  # discards spend no evaluation
    assert all(predicted[h] <= 30.0 for h in search.scored)
    assert search.over_budget > 0 and search.unmeasured > 0
    pick = hw.select_hw(search, lambda cell: search.values(cell)["tcet"])
    assert predicted[pick.canonical_hash()] <= 30.0


def test_prior_and_cluster_follow_the_budget(space):
    predicted = fake_predictions(space)
    prior = {h: (space.cells[i], {"tcet": float(i)}) for i, h in enumerate(space.hashes[:200])}
    kept = hw.within_prior(prior, predicted, 30.0)
    assert kept and all(predicted[h] <= 30.0 for h in kept) and len(kept) < len(prior)
    search = hw.BudgetSearch(StubCache(), 10, predicted, 30.0, kept)
    hw.evolution(search, 1, [space.strings[space.index[h]] for h in space.hashes])  # seeded from the prior's top
    assert all(predicted[c.canonical_hash()] <= 30.0 for c, _ in search.pool())
    # cluster 0: best T-CET but mostly over budget; cluster 1: within budget; ours draws from 1
    hashes = sorted(prior, key=lambda h: predicted[h])
    fast, slow = hashes[:40], hashes[-40:]
    assigned = {**{h: 0 for h in slow[:35] + fast[:5]}, **{h: 1 for h in fast[5:]}}
    scored = {h: (prior[h][0], {"tcet": 100.0 if assigned[h] == 0 else 1.0}) for h in assigned}
    assert hw.budget_cluster(assigned, scored, predicted, 30.0) == 1


def test_result_row_has_the_contract(space):
    from lightning_nas.space.nb201 import nb201_arch_strings

    device = "raspi4"
    predictor = hw.device_predictor(space, device, 20, seed=0)  # 20 measurements: the lookup table only, fast
    assert len(predictor.measured) == 20 and 0 < predictor.within10 <= 1
    budget_ms = hw.budget_quantiles(space.latency(device), [0.5])[0]
    search = hw.BudgetSearch(StubCache(), 20, predictor.predicted, budget_ms)
    hw.random_search(search, 0, nb201_arch_strings())
    lat = space.latency(device)
    row = hw.evaluate("random + T-CET", device, budget_ms, 0.5, 20, 0, search, 1.0, space, lat,
                      space.true_hypervolume(device), space.reference(device), predictor, 1000)
    for key in (*hw.CONTRACT, "setting", "over_budget", "within_budget", "hv_ratio", "cifar10_valid",
                "device_measurements", "seconds"):
        assert key in row, key
    assert list(row)[: len(hw.CONTRACT)] == list(hw.CONTRACT)
    json.dumps(row)
    from lightning_nas.hw import HWNASBench
    from lightning_nas.space.nb201 import cell_from_nb201, nb201_from_cell

    assert nb201_from_cell(cell_from_nb201(row["arch_str"])) == row["arch_str"]  # the reported string
    assert row["latency_ms"] == HWNASBench().lookup(row["arch_str"], device)
    assert row["cifar10"] == space.table.records[row["arch_str"]].cifar10
    assert row["within_budget"] == (row["latency_ms"] <= budget_ms)
    assert row["predicted_ms"] <= budget_ms and row["device_measurements"] == 20
    assert 0 < row["hv_ratio"] <= 1 and not math.isnan(row["hv_ratio"])
