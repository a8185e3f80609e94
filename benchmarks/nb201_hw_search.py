"""Hardware-aware search on NAS-Bench-201 (issue [hw], item 4): for each HW-NAS-Bench device and latency budget, the
best CIFAR-10 test accuracy found within the *measured* budget by ours (CCNF + T-CET) against random + T-CET and
Evo(T-CET) at equal search evaluations, and the Pareto front (accuracy vs measured latency) each search found
against the true front of the tables (hypervolume ratio), with a plot (CPU, resumable).

    python benchmarks/nb201_hw_search.py [--devices edgegpu,raspi4,...] [--seeds 0-9] [--budgets 100]
                                         [--quantiles 0.25,0.5] [--measurements 100] [--workdir runs/nb201]
                                         [--out benchmarks/results/nb201_hw_search.md]

**Cells and their ground truth.** The space is the 8,764 reachable NB201 cells (GraphNet cells of the 15,284 NB201
strings with an input → output path; isomorphic strings are one cell). A cell is reported through ``nb201_from_cell``
(the isomorphic string with the fewest non-``none`` edges): its CIFAR-10 test accuracy (NATS-Bench-TSS, 200 epochs),
its CIFAR-10 *validation* accuracy (``cifar10-valid``, via ``NB201Table``) and its **measured** latency on the
device (HW-NAS-Bench, ``data/hw_nas_bench/nb201_cifar10.csv``, CIFAR-10 inputs) are all that string's. A cell whose
reported string has no measurement on a device (edgetpu: 624 cells) is not deployable there (HW-NAS-Bench could not
run it — a compile check tells as much before any training): on that device it is left out of the budgets, the
predictor's draw and the true front, and a search that meets it discards it (counted, ``unmeasured``, no budget
spent).

**Budgets** per device: the ``--quantiles`` (default 25 % and 50 %) of the device's measured latency over its
reachable cells, in ms, rounded to 3 significant digits.

**Predictor.** A search never reads the latency table: it judges the budget with a predictor of the device
(:func:`lightning_nas.hw.fit_predictor`, no source device, features :func:`nb201_features` of the reported string)
fitted on ``--measurements`` (100) cells drawn at random from the device's measured cells (seeded by device and
seed: each seed has its own draw and predictor, shared by every method and budget of that seed). These measurements
are the device's pretraining cost of every row (``device_measurements``). A candidate whose *predicted* latency is
over the budget is discarded and counted (``over_budget``): it is not scored and spends no budget. The prediction is
guarded by a calibrated safety margin (``--margin-quantile`` 0.95: the 95th percentile of the predictor's 10-fold
cross-validated under-prediction on its own draw; ``margin`` in each row; 0 turns it off).

**Searches**, each with N search evaluations (``--budgets``; one evaluation = one ZC vector of the probe macro
α_x, the same cache, probe and pretraining as ``benchmarks/nb201_search.py``) and a seed, all in that benchmark's
**amortised** setting: every method also sees the pretraining archive's 1,000 labelled NB201 cells (counted as
``pretrain_evaluations``) — those predicted within budget join the pool it selects from; Evo's first population is
their top 10 by T-CET; ours ranks its clusters by them.

- **random + T-CET**: NB201 strings drawn uniformly (unreachable ones redrawn, counted), over-budget ones discarded;
- **Evo(T-CET)**: regularised evolution (population 10, tournament 3, one edge op mutated per child); children over
  the predicted budget are discarded (they count towards Evo's stall limit, never its budget);
- **ours (CCNF + T-CET)**: the amortised chain's ``generative_search`` (first half from the best cluster, second
  half around the best cell so far, at most 20 N + 200 draws); generated cells over the predicted budget are
  discarded. The best cluster is ranked among the within-budget prior (:func:`budget_cluster`): of the clusters at
  least half of whose labelled cells are predicted within budget, the one whose within-budget cells have the highest
  mean T-CET — the amortised ranking's best cluster is, on most devices, one none of whose cells fits the budget.

**Final pick**: the top 10 by T-CET of the pool (every cell in it is predicted within budget) are "trained" —
their CIFAR-10 validation accuracy is looked up — and the best by validation is selected. Its test accuracy and
measured latency are reported, and ``within_budget`` (measured ≤ budget) is the budget satisfaction. Test accuracy
never selects.

**Pareto front**: per search, the found set is the cells it scored (its own N evaluations, not the prior); their
(CIFAR-10 test accuracy, measured latency) points give a 2-D hypervolume (maximise accuracy, minimise latency;
reference point = (lowest test accuracy, highest measured latency) over the device's reachable cells), divided by
the hypervolume of the true front of all the device's reachable cells: ``hv_ratio``. The searches are confined to
the budget, so their fronts end at it. The plot (``--plot-device``, default raspi4, at the 50 % budget, seed 0)
shows the true front and each method's found front.

Outputs: ``--out`` (markdown table) and beside it ``.jsonl`` (one row per search, keyed by method, device, budget_ms,
evaluations and seed; a rerun continues from finished rows; ``evaluations`` is N, ``scored`` the evaluations the search
spent — ours can stop short at its draw cap) and ``.png`` (the plot). Seconds per search are its own
bookkeeping/generation time plus the measured ZC time of every cell it scored (cache or not), as in nb201_search.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).parent))

from nb201_search import (  # noqa: E402
    PROBE,
    Pretrained,
    Search,
    ZCCache,
    evolution,
    fmt,
    generative_search,
    pretrain,
    random_search,
    seeds_arg,
)

from lightning_nas.archive import Archive  # noqa: E402
from lightning_nas.hw import HW_DEVICES, HWNASBench, fit_predictor, nb201_features, within  # noqa: E402
from lightning_nas.hw.predictors import NB201_LUT_COLUMNS  # noqa: E402
from lightning_nas.report import pareto_front as cost_value_front  # noqa: E402
from lightning_nas.space import Cell  # noqa: E402
from lightning_nas.space.nb201 import (  # noqa: E402
    NB201_DATA,
    NB201Table,
    cell_from_nb201,
    nb201_arch_strings,
    nb201_from_cell,
)
from lightning_nas.zc.vector import Probe  # noqa: E402

METHODS = ("random + T-CET", "Evo(T-CET)", "ours (CCNF + T-CET)")
SETTING = "amortised"
TOP_N = 10  # the paper's "train the top 10" final selection, by CIFAR-10 validation accuracy
CONTRACT = ("method", "device", "budget_ms", "evaluations", "seed", "arch_str", "cifar10", "latency_ms")
GOAL_HV, GOAL_SATISFACTION = 0.95, 0.95


# ---------------------------------------------------------------------------------------------------- pure parts


def hypervolume(points, ref: tuple[float, float]) -> float:
    """2-D hypervolume of ``points`` ``(accuracy, latency)`` — accuracy maximised, latency minimised — against
    ``ref = (accuracy, latency)``: the area of the region each point dominates, clipped to the reference box."""
    acc_ref, lat_ref = ref
    pts = sorted((lat, acc) for acc, lat in points if acc > acc_ref and lat < lat_ref)
    area, best = 0.0, acc_ref
    for k, (lat, acc) in enumerate(pts):
        best = max(best, acc)  # the best accuracy reachable at this latency or less
        right = pts[k + 1][0] if k + 1 < len(pts) else lat_ref
        area += (right - lat) * (best - acc_ref)
    return area


def pareto_front(points) -> list[tuple[float, float]]:
    """The non-dominated ``(accuracy, latency)`` points, by increasing latency (and accuracy):
    :func:`lightning_nas.report.pareto_front` on (latency, accuracy)."""
    return [(acc, lat) for lat, acc in cost_value_front([(lat, acc) for acc, lat in points])]


def round_sig(x: float, digits: int = 3) -> float:
    return float(f"{x:.{digits}g}")


def budget_quantiles(latency: np.ndarray, quantiles: list[float]) -> list[float]:
    """Latency budgets (ms, 3 significant digits): the quantiles of the measured latencies (``nan``: unmeasured)."""
    return [round_sig(float(np.nanquantile(latency, q))) for q in quantiles]


class BudgetSearch(Search):
    """A :class:`Search` that discards candidates over a latency budget by a predictor's judgement, without scoring
    them or spending budget: ``predicted`` maps canonical hash → predicted ms (a cell absent from it has no
    measurement on the device and is discarded as ``unmeasured``). Duplicates are counted as such first."""

    def __init__(self, cache, budget: int, predicted: dict[str, float], budget_ms: float,
                 prior: dict[str, tuple[Cell, dict]] | None = None):
        super().__init__(cache, budget, prior)
        self.predicted, self.budget_ms = predicted, budget_ms
        self.over_budget = self.unmeasured = 0

    def admits(self, h: str) -> bool:
        p = self.predicted.get(h)
        return p is not None and p <= self.budget_ms

    def score(self, cell: Cell) -> dict | None:
        h = cell.canonical_hash()
        if h not in self.scored and h not in self.prior:
            p = self.predicted.get(h)
            if p is None:
                self.unmeasured += 1
                return None
            if p > self.budget_ms:
                self.over_budget += 1
                return None
        return super().score(cell)


def within_prior(prior: dict[str, tuple[Cell, dict]], predicted: dict[str, float], budget_ms: float) -> dict:
    """The prior's cells a budget-aware method may select from: those predicted within budget."""
    return {h: v for h, v in prior.items() if predicted.get(h, math.inf) <= budget_ms}


def budget_cluster(assigned: dict[str, int], prior: dict[str, tuple[Cell, dict]], predicted: dict[str, float],
                   budget_ms: float, min_share: float = 0.5, min_cells: int = 5) -> int:
    """Ours' cluster under a budget: of the clusters at least ``min_share`` of whose labelled cells (≥ ``min_cells``)
    are predicted within budget, the one whose within-budget labelled cells have the highest mean T-CET (the
    amortised ranking restricted to what the budget admits); if none qualifies, the cluster with the largest share."""
    groups: dict[int, list[list[float]]] = {}
    for h, (_, values) in prior.items():
        if h in assigned:
            groups.setdefault(assigned[h], [[], []])[predicted.get(h, math.inf) <= budget_ms].append(values["tcet"])
    ok = {k: statistics.mean(w) for k, (o, w) in groups.items() if len(w) >= min_cells
          and len(w) >= min_share * (len(w) + len(o))}
    if ok:
        return max(ok, key=ok.get)
    return max(groups, key=lambda k: len(groups[k][1]) / (len(groups[k][0]) + len(groups[k][1])))


def select_hw(search: BudgetSearch, valid) -> Cell:
    """Of the pool's cells predicted within budget (all of them, by construction), the top 10 by T-CET (ties: first
    seen), the best by CIFAR-10 validation accuracy (``valid``)."""
    pool = [(c, v["tcet"]) for c, v in search.pool() if search.admits(c.canonical_hash())]
    top = sorted(range(len(pool)), key=lambda i: (-pool[i][1], i))[:TOP_N]
    return max((pool[i][0] for i in top), key=valid)


def make_row(method: str, device: str, budget_ms: float, quantile: float, n: int, seed: int, search: BudgetSearch,
             pick: Cell, arch_str: str, cifar10: float, cifar10_valid: float, latency_ms: float, hv_ratio: float,
             front: list, measurements: int, pretrain_evaluations: int, seconds: float, **extra) -> dict:
    """One search's result row: the contract fields first, then what was counted."""
    return {"method": method, "device": device, "budget_ms": budget_ms, "evaluations": n, "seed": seed,
            "arch_str": arch_str, "cifar10": cifar10, "latency_ms": latency_ms,
            "setting": SETTING, "quantile": quantile, "cifar10_valid": cifar10_valid,
            "predicted_ms": round(search.predicted[pick.canonical_hash()], 4),
            "within_budget": bool(latency_ms <= budget_ms), "hv_ratio": round(hv_ratio, 5),
            "scored": len(search.scored), "over_budget": search.over_budget, "unmeasured": search.unmeasured,
            "duplicates": search.duplicates, "outside": search.outside, "unreachable": search.unreachable,
            "device_measurements": measurements, "pretrain_evaluations": pretrain_evaluations,
            "seconds": round(seconds, 2), "front": [[round(a, 3), round(lat, 4)] for a, lat in front], **extra}


# ------------------------------------------------------------------------------------------- the ground truth


class Space:
    """The reachable NB201 cells (canonical hash → reported string) with their CIFAR-10 test accuracies, features
    and, per device, measured latencies (``nan``: not measured), all in one order."""

    def __init__(self, hw: HWNASBench, table: NB201Table):
        self.hw, self.table = hw, table
        cells: dict[str, Cell] = {}
        for s in nb201_arch_strings():
            try:
                cell = cell_from_nb201(s)
            except ValueError:  # no input → output path: no GraphNet cell
                continue
            cells.setdefault(cell.canonical_hash(), cell)
        self.hashes = sorted(cells)
        self.strings = [nb201_from_cell(cells[h]) for h in self.hashes]
        self.cells = [cells[h] for h in self.hashes]
        self.index = {h: i for i, h in enumerate(self.hashes)}
        self.cifar10 = np.array([table.records[s].cifar10 for s in self.strings])
        self._features: np.ndarray | None = None

    @property
    def features(self) -> np.ndarray:
        if self._features is None:
            self._features = np.stack([nb201_features(s) for s in self.strings])
        return self._features

    def latency(self, device: str) -> np.ndarray:
        return np.array([self.hw.lookup(s, device) for s in self.strings])

    def reference(self, device: str) -> tuple[float, float]:
        lat = self.latency(device)
        ok = ~np.isnan(lat)
        return float(self.cifar10[ok].min()), float(lat[ok].max())

    def true_hypervolume(self, device: str) -> float:
        lat = self.latency(device)
        ok = ~np.isnan(lat)
        return hypervolume(zip(self.cifar10[ok], lat[ok], strict=True), self.reference(device))

    def true_front(self, device: str) -> list[tuple[float, float]]:
        lat = self.latency(device)
        ok = ~np.isnan(lat)
        return pareto_front(zip(self.cifar10[ok], lat[ok], strict=True))


@dataclass
class DevicePredictor:
    """A device's predictor fitted on ``measured`` drawn cells, and its prediction for every measured cell."""

    name: str
    measured: list[str]  # hashes of the cells whose measurement it was fitted on
    predicted: dict[str, float]  # canonical hash → predicted ms, for every cell the device measured
    within10: float  # share of the device's measured cells predicted within ±10 %
    margin: float = 0.0  # calibrated safety margin already applied to ``predicted``


def device_predictor(space: Space, device: str, measurements: int, seed: int,
                     margin_quantile: float = 0.95) -> DevicePredictor:
    """Fit on the seeded draw; with ``margin_quantile`` > 0 the predictions are multiplied by 1 + the quantile of the
    predictor's 10-fold cross-validated under-prediction ``y / ŷ − 1`` on the draw itself (as
    :func:`lightning_nas.hw.cost.calibrated_margin` does for the cost tables), so a budget check stays conservative."""
    lat = space.latency(device)
    measured = np.flatnonzero(~np.isnan(lat))
    draw = sorted(random.Random(f"measure:{device}:{seed}").sample(list(measured), measurements))
    X = space.features

    def fit(rows):
        return fit_predictor(X[rows], lat[rows], S=None, lut_columns=NB201_LUT_COLUMNS, seed=seed)

    margin = 0.0
    if margin_quantile > 0:
        rows, ratios = np.array(draw), []
        for k in range(10):
            test, train = rows[k::10], np.setdiff1d(rows, rows[k::10])
            ratios.extend(lat[test] / np.maximum(fit(train).predict(X[test]), 1e-9) - 1.0)
        margin = max(0.0, float(np.quantile(ratios, margin_quantile)))
    model = fit(draw)
    estimate = model.predict(X[measured])
    prediction = estimate * (1.0 + margin)
    return DevicePredictor(model.name, [space.hashes[i] for i in draw],
                           {space.hashes[i]: float(p) for i, p in zip(measured, prediction, strict=True)},
                           within(estimate, lat[measured], 0.10), margin)


# ------------------------------------------------------------------------------------------------- the searches


def run_hw_search(method: str, n: int, seed: int, cache: ZCCache, strings: list[str], chain: Pretrained,
                  predicted: dict[str, float], budget_ms: float,
                  assigned: dict[str, int]) -> tuple[BudgetSearch, float, int | None]:
    """One search; returns it, its seconds and (ours) the cluster it drew from."""
    start, computing = time.perf_counter(), cache.compute_seconds
    search = BudgetSearch(cache, n, predicted, budget_ms, within_prior(chain.prior, predicted, budget_ms))
    cluster = None
    if method == "random + T-CET":
        random_search(search, seed, strings)
    elif method == "Evo(T-CET)":
        evolution(search, seed, strings)
    elif method == "ours (CCNF + T-CET)":
        cluster = budget_cluster(assigned, chain.prior, predicted, budget_ms)
        generative_search(search, seed, chain.generator, chain.normaliser, cluster)
    else:
        raise ValueError(f"method: {method!r}; choose one of {METHODS}")
    overhead = time.perf_counter() - start - (cache.compute_seconds - computing)
    return search, overhead + search.eval_seconds, cluster


def evaluate(method: str, device: str, budget_ms: float, quantile: float, n: int, seed: int, search: BudgetSearch,
             seconds: float, space: Space, lat: np.ndarray, true_hv: float, ref: tuple[float, float],
             predictor: DevicePredictor, pretrain_evaluations: int, cluster: int | None = None) -> dict:
    pick = select_hw(search, space.table.valid)
    i = space.index[pick.canonical_hash()]
    found = [(space.cifar10[space.index[h]], lat[space.index[h]]) for h in search.scored]
    return make_row(method, device, budget_ms, quantile, n, seed, search, pick, space.strings[i],
                    float(space.cifar10[i]), float(space.table.valid(pick)), float(lat[i]),
                    hypervolume(found, ref) / true_hv, pareto_front(found), len(predictor.measured),
                    pretrain_evaluations, seconds, predictor=predictor.name,
                    predictor_within10=round(predictor.within10, 4), margin=round(predictor.margin, 4),
                    cluster=cluster)


# ---------------------------------------------------------------------------------------------------- reports


def results_markdown(rows: list[dict], space: Space, devices: list[str], budgets: dict[str, list[tuple]],
                     seeds: list[int], cache_cells: int, chain: Pretrained | None) -> str:
    out = ["# Hardware-aware search on NAS-Bench-201 (HW-NAS-Bench latency budgets)\n",
           "| device | budget (ms, quantile) | N | method | CIFAR-10 test | within measured budget | HV ratio | "
           "measured ms | over budget / unmeasured / duplicates (mean) | scored | seeds |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    ns = sorted({r["evaluations"] for r in rows})
    for device in devices:
        lat = space.latency(device)
        for budget_ms, q in budgets[device]:
            ok = ~np.isnan(lat) & (lat <= budget_ms)
            for n in ns:
                for method in METHODS:
                    r = [x for x in rows if x["device"] == device and x["budget_ms"] == budget_ms
                         and x["evaluations"] == n and x["method"] == method]
                    if not r:
                        continue
                    skipped = " / ".join(f"{statistics.mean(x[k] for x in r):.1f}"
                                         for k in ("over_budget", "unmeasured", "duplicates"))
                    out.append(f"| {device} | {budget_ms:g} ({q:.0%}) | {n} | {method} | "
                               f"{fmt([x['cifar10'] for x in r])} | "
                               f"{100 * statistics.mean(x['within_budget'] for x in r):.0f} % | "
                               f"{statistics.mean(x['hv_ratio'] for x in r):.3f} | "
                               f"{fmt([x['latency_ms'] for x in r])} | {skipped} | "
                               f"{statistics.mean(x['scored'] for x in r):.0f} | {len(r)} |")
            cap = hypervolume(zip(space.cifar10[ok], lat[ok], strict=True), space.reference(device))
            out.append(f"| {device} | {budget_ms:g} ({q:.0%}) | – | all cells within the measured budget (table) | "
                       f"{space.cifar10[ok].max():.2f} (best) | | {cap / space.true_hypervolume(device):.3f} | | | | |")
    out.append("\n## Per method over all devices and budgets\n")
    out.append("| N | method | CIFAR-10 test | within measured budget | HV ratio (mean, min) | goals (HV ≥ "
               f"{GOAL_HV}, satisfaction ≥ {GOAL_SATISFACTION:.0%}) | searches |")
    out.append("|---|---|---|---|---|---|---|")
    for n in ns:
        for method in METHODS:
            r = [x for x in rows if x["method"] == method and x["evaluations"] == n]
            if not r:
                continue
            hv = statistics.mean(x["hv_ratio"] for x in r)
            sat = statistics.mean(x["within_budget"] for x in r)
            goals = (f"HV {'met' if hv >= GOAL_HV else 'not met'}, "
                     f"satisfaction {'met' if sat >= GOAL_SATISFACTION else 'not met'}")
            out.append(f"| {n} | {method} | {fmt([x['cifar10'] for x in r])} | {100 * sat:.1f} % | "
                       f"{hv:.3f}, {min(x['hv_ratio'] for x in r):.3f} | {goals} | {len(r)} |")
    out.append("\n## Predictors (fitted per device and seed, shared by every method and budget)\n")
    out.append("| device | measurements | chosen predictor (seeds) | within ±10 % of measured latency (all cells) |")
    out.append("|---|---|---|---|")
    for device in devices:
        r = {x["seed"]: x for x in rows if x["device"] == device}.values()
        if r:
            counts = ", ".join(f"{k} {sum(x['predictor'] == k for x in r)}"
                               for k in sorted({x["predictor"] for x in r}))
            out.append(f"| {device} | {next(iter(r))['device_measurements']} | {counts} | "
                       f"{fmt([100 * x['predictor_within10'] for x in r], 1)} % |")
    pre = chain.evaluations if chain else 1000
    out.append(
        f"\n**What was counted.** Seeds {seeds[0]}–{seeds[-1]} ({len(seeds)}). *N*: ZC evaluations (one ZC vector of "
        f"the probe macro α_x, T-CET from it) each search spends; every method also uses the amortised pretraining "
        f"archive's {pre} labelled NB201 cells (*pretraining evaluations*, counted in each row; ours also its G-VAE, "
        "GMM and CCNF), and each device's predictor is fitted on "
        f"{rows[0]['device_measurements'] if rows else '–'} table measurements drawn per seed (*device "
        "measurements*). A candidate predicted over budget is discarded without a ZC evaluation (*over budget*); on "
        "edgetpu, cells HW-NAS-Bench has no measurement for are discarded likewise (*unmeasured*); cells already "
        "scored or in the prior are *duplicates*; none of these spends budget. The pick is the best of the pool's "
        "top 10 by T-CET by CIFAR-10 validation accuracy (the stand-in for training them); its CIFAR-10 test "
        "accuracy and measured latency are reported, *within measured budget* is the share of seeds whose pick's "
        "table latency is ≤ the budget. *HV ratio*: hypervolume of the (test accuracy, measured latency) points of "
        "the cells the search scored over that of all the device's reachable cells, reference point (lowest accuracy, "
        "highest latency) of the device; the searches are confined to the budget, so the part of the true front "
        "above it is out of their reach (rows *all cells within the measured budget*: the best accuracy and HV ratio "
        f"reachable inside it). ZC cache: {cache_cells} cells. *Measured ms*: the pick's table latency. "
        "Seconds per search are in the jsonl.\n")
    return "\n".join(out) + "\n"


def plot(rows: list[dict], space: Space, device: str, budget_ms: float, path: Path) -> bool:
    """The true front and each method's found front (seed 0) on ``device`` at ``budget_ms``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = {x["method"]: x for x in rows if x["device"] == device and x["budget_ms"] == budget_ms and x["seed"] == 0}
    if not r:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    true = space.true_front(device)
    ax.step([lat for _, lat in true], [a for a, _ in true], where="post", color="black", lw=1.5,
            label="true front (all cells)")
    for (method, row), marker in zip(sorted(r.items()), "osD^", strict=False):
        front = row["front"]
        ax.step([lat for _, lat in front], [a for a, _ in front], where="post", marker=marker, ms=4, alpha=0.8,
                label=f"{method} (HV ratio {row['hv_ratio']:.3f})")
        ax.plot([row["latency_ms"]], [row["cifar10"]], marker="*", ms=14, color=ax.lines[-1].get_color(), mec="k")
    ax.axvline(budget_ms, color="grey", ls="--", lw=1, label=f"budget {budget_ms:g} ms")
    ax.set_xlabel(f"measured latency on {device} (ms, HW-NAS-Bench)")
    ax.set_ylabel("CIFAR-10 test accuracy (%)")
    shown = [a for row in r.values() for a, _ in row["front"]]
    ax.set_ylim(max(min(a for a, _ in true), min(shown) - 3), max(a for a, _ in true) + 0.5)
    ax.set_title(f"NB201 on {device}, budget {budget_ms:g} ms, N = {next(iter(r.values()))['evaluations']}, seed 0 "
                 "(★ pick)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return True


# ------------------------------------------------------------------------------------------------------- main


def main() -> None:
    from tqdm.auto import tqdm

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default=",".join(HW_DEVICES))
    parser.add_argument("--seeds", default="0-9")
    parser.add_argument("--budgets", default="100", help="search evaluations N, comma-separated")
    parser.add_argument("--quantiles", default="0.25,0.5", help="latency budgets: quantiles of the measured latency")
    parser.add_argument("--measurements", type=int, default=100, help="table measurements the predictor is fitted on")
    parser.add_argument("--margin-quantile", type=float, default=0.95,
                        help="safety margin: this quantile of the predictor's cross-validated under-prediction "
                             "(0: none)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--workdir", default="runs/nb201", help="the amortised pretraining and the ZC cache")
    parser.add_argument("--pretrain", default=str(REPO / "configs" / "nb201" / "pretrain.yaml"))
    parser.add_argument("--data", default=str(NB201_DATA), help="folder with nats_bench_tss.csv and cifar10_valid.csv")
    parser.add_argument("--plot-device", default="raspi4")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "nb201_hw_search.md"))
    args = parser.parse_args()
    devices = [d for d in args.devices.split(",") if d]
    for d in devices:
        if d not in HW_DEVICES:
            raise SystemExit(f"--devices: {d!r} is not a HW-NAS-Bench platform; choose from {HW_DEVICES}")
    methods = [m for m in args.methods.split(",") if m]
    if set(methods) - set(METHODS):
        raise SystemExit(f"--methods: choose from {METHODS}")
    seeds, ns = seeds_arg(args.seeds), [int(b) for b in args.budgets.split(",")]
    quantiles = [float(q) for q in args.quantiles.split(",")]

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    jsonl = out.with_suffix(".jsonl")
    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()] if jsonl.is_file() else []
    done = {(r["method"], r["device"], r["budget_ms"], r["evaluations"], r["seed"]) for r in rows}

    space = Space(HWNASBench(), NB201Table(args.data))
    budgets = {d: list(zip(budget_quantiles(space.latency(d), quantiles), quantiles, strict=True)) for d in devices}
    todo = [(d, b, q, n, s, m) for d in devices for s in seeds for b, q in budgets[d] for n in ns for m in methods
            if (m, d, b, n, s) not in done]
    print("budgets (ms): " + "; ".join(f"{d} " + ", ".join(f"{b:g} ({q:.0%})" for b, q in budgets[d])
                                       for d in devices), flush=True)

    workdir = Path(args.workdir)
    probe = Probe.from_source(**PROBE)
    cache = ZCCache(workdir / "nb201_search_cache.sqlite", probe)
    chain = pretrain("amortised", Path(args.pretrain), workdir, probe)
    cache.seed(chain.labelled)
    with Archive(workdir / "archive.sqlite", create=False) as archive:
        assigned = archive.clusters(probe.id)
    strings = nb201_arch_strings()
    predictors: dict[tuple[str, int], DevicePredictor] = {}
    truth: dict[str, tuple] = {}
    for d, budget_ms, q, n, seed, method in tqdm(todo, desc="HW-aware searches", unit="search"):
        if (d, seed) not in predictors:
            predictors[d, seed] = device_predictor(space, d, args.measurements, seed, args.margin_quantile)
        if d not in truth:
            truth[d] = (space.latency(d), space.true_hypervolume(d), space.reference(d))
        lat, true_hv, ref = truth[d]
        predictor = predictors[d, seed]
        search, seconds, cluster = run_hw_search(method, n, seed, cache, strings, chain, predictor.predicted,
                                                 budget_ms, assigned)
        row = evaluate(method, d, budget_ms, q, n, seed, search, seconds, space, lat, true_hv, ref, predictor,
                       chain.evaluations, cluster)
        rows.append(row)
        with jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")
        tqdm.write(f"{d} {budget_ms:g} ms N={n} seed={seed} {method}: C10 {row['cifar10']:.2f} at "
                   f"{row['latency_ms']:.3g} ms ({'within' if row['within_budget'] else 'OVER'}), HV ratio "
                   f"{row['hv_ratio']:.3f}, scored {row['scored']}, over budget {row['over_budget']}, "
                   f"{seconds:.1f} s")
    rows = [r for r in rows if r["device"] in devices and r["seed"] in seeds and r["evaluations"] in ns
            and r["method"] in methods and (r["budget_ms"], r["quantile"]) in budgets[r["device"]]]
    text = results_markdown(rows, space, devices, budgets, seeds, len(cache.rows), chain)
    if args.plot_device in devices:
        half = min(budgets[args.plot_device], key=lambda bq: abs(bq[1] - 0.5))[0]
        if plot(rows, space, args.plot_device, half, out.with_suffix(".png")):
            text += f"\n![true and found fronts]({out.with_suffix('.png').name})\n"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
