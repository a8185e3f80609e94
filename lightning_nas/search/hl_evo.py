"""HL-Evo: ageing-free evolution in the HL space with CCNF-generated cells (paper App. C, Algorithm 1).

Population P of at most N candidates; each iteration draws a parent uniformly from P, mutates it (exploration phase
for the first T/2 iterations: clusters may change; exploitation afterwards: they may not), scores the child and, if it
is within budget and scored, inserts it, removing the worst member (lowest objective) when P is full. Over-budget,
rejected (a guarded objective's trainability guard) and failed children are discarded and counted apart. Iteration 0
is the initial architecture α₀; while P is empty (α₀ over budget, rejected or failed) each iteration's child is a
random architecture within the budget (:func:`random_within_budget`, changes ``redraw``) instead of a mutant, so the
search starts from whatever the budget and the guard admit rather than stopping.

**History and resume.** Every iteration's child — scored, over budget or failed — is written to the archive
(``Archive.add_arch``, stage ``search``, one ``run`` id per (config, budget, seed)) the moment it is evaluated. The
random state of iteration i is derived from (seed, i) alone, and P is a pure function of the ordered history, so a
killed search restarted with the same config replays the stored history into P and continues at the next iteration:
nothing stored is lost or repeated, and the same seed gives the same history whether or not the run was interrupted.

**Batches of children** (``batch`` B > 1; B = 1, the default, is Algorithm 1 as written). Iterations after α₀ go in
generations of B: every child of a generation draws its parent from the population as it was at the start of the
generation (line 7 of Algorithm 1 sees no child of its own generation), the B children are scored together — across
ranks when the search runs on several processes (``evaluate_many``) — and enter P in iteration order (lines 26–31).
This is the steady-state evolution's usual parallel form: a child's parent is at most B − 1 insertions stale. Each
child still has its own random stream (seed, i), so the history depends on B, never on how many processes score it;
a resumed run rebuilds the generation's starting population from the stored history.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from ..archive import Archive
from ..space.arch import MAX_CELLS, Arch
from ..space.cell import Cell
from ..space.hl import MAX_DOWNSAMPLINGS, HLArch, HLStage
from ..space.network import task_network
from .evaluate import BUDGET_UNITS, ArchEvaluator, Evaluation
from .mutations import Candidate, mutate


@dataclass(frozen=True)
class HLEvoConfig:
    """Algorithm 1's settings. ``initial``: the HL stages of α₀ as (cluster, channels, stride, repeats) tuples.
    ``two_phase``: exploration then exploitation (HL-Evo); ``False`` explores throughout (the GraphNet baselines,
    which have one cluster). ``random_search``: every child after α₀ is a fresh random architecture
    (:func:`random_candidate`) instead of a mutant — the random-search baseline in the same harness."""

    population: int = 512
    iterations: int = 20000
    seed: int = 0
    initial: tuple[tuple[int, int, int, int], ...] = ((0, 8, 2, 1), (0, 16, 2, 1), (0, 32, 2, 1), (0, 64, 2, 1))
    initial_final_channels: int | None = 128
    two_phase: bool = True
    random_search: bool = False
    batch: int = 1

    def generation_start(self, i: int) -> int:
        """The first iteration of iteration ``i``'s generation (α₀, iteration 0, is a generation of its own)."""
        return i if i == 0 else 1 + (i - 1) // self.batch * self.batch

    def initial_hl(self) -> HLArch:
        return HLArch(tuple(HLStage(*s) for s in self.initial), self.initial_final_channels)


@dataclass
class SearchState:
    """Population (candidate, score) in insertion order and the counters of a run."""

    population: list[tuple[Candidate, float]] = field(default_factory=list)
    iterations: int = 0
    evaluations: int = 0
    over_budget: int = 0
    rejected: int = 0
    failed: int = 0
    best: tuple[Candidate, float] | None = None

    def add(self, candidate: Candidate, evaluation: Evaluation, size: int) -> None:
        """Apply one history entry (Algorithm 1 lines 26–31)."""
        self.iterations += 1
        if evaluation.status == "over_budget":
            self.over_budget += 1
            return
        if evaluation.status == "rejected":
            self.rejected += 1
            return
        if evaluation.status != "ok":
            self.failed += 1
            return
        self.evaluations += 1
        if len(self.population) >= size:
            worst = min(range(len(self.population)), key=lambda j: self.population[j][1])
            del self.population[worst]
        self.population.append((candidate, evaluation.score))
        if self.best is None or evaluation.score > self.best[1]:
            self.best = (candidate, evaluation.score)


def random_candidate(
    rng: random.Random, num_clusters: int, new_cell: Callable, final_channels: int | None = 128,
    max_downsamplings: int = MAX_DOWNSAMPLINGS,
) -> Candidate:
    """A random architecture: 2–6 stages, channels 8·2^u (u ∈ 0..5), stride 1 or 2 (≤ ``max_downsamplings``
    stride-2 stages: the task's limit), repeats 1–3 (≤ 20 cells in total), uniform clusters, a cell from
    ``new_cell(None, cluster, rng)`` per stage."""
    stages, total = [], 0
    for _ in range(rng.randint(2, 6)):
        repeats = min(rng.randint(1, 3), MAX_CELLS - total)
        if repeats < 1:
            break
        stride = rng.choice((1, 2)) if sum(s.stride == 2 for s in stages) < max_downsamplings else 1
        stages.append(HLStage(rng.randrange(num_clusters), 8 * 2 ** rng.randint(0, 5), stride, repeats))
        total += repeats
    cells = tuple(new_cell(None, s.cluster, rng) for s in stages)
    return Candidate(HLArch(tuple(stages), final_channels), cells)


def iteration_rng(seed: int, iteration: int) -> random.Random:
    """The random stream of one iteration: a function of (seed, iteration) only."""
    return random.Random(f"hl-evo:{seed}:{iteration}")


RANDOM_DRAWS = 200
"""Random architectures drawn per iteration of the random baseline to find one within budget (a cost check only)."""


def random_within_budget(rng: random.Random, num_clusters: int, new_cell: Callable, final_channels: int | None,
                         evaluate: ArchEvaluator, max_draws: int = RANDOM_DRAWS) -> tuple[Candidate, int]:
    """The random baseline's child: random architectures (:func:`random_candidate`) drawn until one is within
    ``evaluate``'s budget — rejection sampling, so the baseline spends its proxy evaluations on admissible networks
    as the evolutionary methods do; the cost check builds the network but runs no proxy. Returns the candidate and
    the draws it took (after ``max_draws`` the last one, which the search then counts as over budget)."""
    budget, task = evaluate.budget, evaluate.task
    limited = any(getattr(budget, f"max_{unit}") is not None for unit in BUDGET_UNITS)
    for draw in range(1, max_draws + 1):
        child = random_candidate(rng, num_clusters, new_cell, final_channels, task.max_downsamplings)
        if not limited:
            return child, draw
        try:
            with torch.random.fork_rng(devices=[]):  # building initialises weights: leave the caller's RNG alone
                cost = evaluate.cost(task_network(task, evaluate.materialise(child.hl, child.cells)))
        except (RuntimeError, ValueError):
            continue  # the search would count it as failed: draw another
        if not budget.violations(cost):
            return child, draw
    return child, max_draws


def run_id(method: str, budget_name: str, config: dict) -> str:
    """``<method>-<budget>-s<seed>-<hash of the config>``: a resumable run is the same config's run."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{method}-{budget_name}-s{config.get('seed', 0)}-{digest}"


def candidate_from_record(record: dict) -> Candidate:
    arch = Arch.from_json(record["spec"])
    return Candidate(HLArch.from_json(record["hl_spec"]), tuple(s.cell for s in arch.stages))


def hl_evo(
    config: HLEvoConfig,
    evaluate: ArchEvaluator,
    new_cell: Callable[[Cell | None, int, random.Random], Cell],
    num_clusters: int,
    archive: Archive,
    run: str,
    initial_cells: Iterable[Cell] | None = None,
    progress: Callable[[SearchState], None] | None = None,
    method: str = "hl-evo",
    evaluate_many: Callable[[list[Arch]], list[Evaluation]] | None = None,
    write: bool = True,
) -> SearchState:
    """Run (or resume) Algorithm 1 for ``config.iterations`` mutations after α₀; returns the final state.
    ``new_cell(current cell or None for α₀, cluster, rng)`` gives a stage's cell (the CCNF for HL-Evo; a cell-level
    mutation with ``num_clusters=1`` for the GraphNet baselines). ``evaluate_many`` scores a generation's
    architectures (default: one by one with ``evaluate``; across ranks: :meth:`lightning_nas.distributed.Ranks.map`);
    ``write``: whether this process writes the history (the one writer of a multi-process search)."""
    state = SearchState()
    start_population: list[tuple[Candidate, float]] = []
    for record in archive.archs(stage="search", run=run):  # resume: replay the stored history
        m = record["metrics"]
        if m["iteration"] == config.generation_start(m["iteration"]):
            start_population = list(state.population)
        evaluation = Evaluation(m["status"], m.get("score"), m.get("params"), m.get("macs"), m.get("flops"),
                                m.get("seconds", 0.0), m.get("reason", ""), m.get("latency_ms"), m.get("energy_mj"))
        state.add(candidate_from_record(record), evaluation, config.population)
    budget = dict(vars(evaluate.budget))
    evaluate_many = evaluate_many or (lambda archs: [evaluate(a) for a in archs])
    while state.iterations <= config.iterations:
        first = state.iterations
        if first == config.generation_start(first):
            start_population = list(state.population)
        end = 1 if first == 0 else min(config.generation_start(first) + config.batch, config.iterations + 1)
        children = [_child(config, i, start_population, evaluate, new_cell, num_clusters, initial_cells, run, state)
                    for i in range(first, end)]
        archs = [evaluate.materialise(child.hl, child.cells) for child, _ in children]
        for i, (child, changes), arch, evaluation in zip(range(first, end), children, archs, evaluate_many(archs),
                                                         strict=True):
            if write:
                metrics = {**evaluation.to_json(), "iteration": i, "changes": changes,
                           "objective": evaluate.objective, "method": method, "seed": config.seed}
                archive.add_arch(arch.to_json(), metrics, child.hl.to_json(), budget, stage="search", run=run)
            state.add(child, evaluation, config.population)
            if progress is not None:
                progress(state)
    return state


def _child(config: HLEvoConfig, i: int, population: list, evaluate: ArchEvaluator, new_cell: Callable,
           num_clusters: int, initial_cells: Iterable[Cell] | None, run: str,
           state: SearchState) -> tuple[Candidate, list[str]]:
    """Iteration ``i``'s child and what was changed, from its own random stream and the generation's population."""
    rng = iteration_rng(config.seed, i)
    if i == 0:
        hl = config.initial_hl()
        cells = tuple(initial_cells) if initial_cells is not None else tuple(
            new_cell(None, s.cluster, rng) for s in hl.stages)
        return Candidate(hl, cells), ["initial"]
    if not population:  # nothing admitted yet: a fresh random architecture within the budget, not a mutant
        child, draws = random_within_budget(rng, num_clusters, new_cell, config.initial_final_channels, evaluate)
        return child, ["redraw", f"draws:{draws}"]
    if config.random_search:
        child, draws = random_within_budget(rng, num_clusters, new_cell, config.initial_final_channels, evaluate)
        return child, ["random", f"draws:{draws}"]
    parent, _ = rng.choice(population)
    exploration = not config.two_phase or i <= config.iterations // 2
    return mutate(parent, rng, num_clusters, new_cell, exploration=exploration,
                  max_downsamplings=evaluate.task.max_downsamplings)

