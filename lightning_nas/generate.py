"""Stage ``generate``: a budget in, the best generated architecture out (paper §3.3, Eq. 12, "final model
selection").

    python -m lightning_nas generate --config configs/generate/tiny.yaml --budget.params 1M [--budget.macs 100M]
                                     [--task cifar100] [--candidates 100] [--seed 0]

The task (:class:`~lightning_nas.space.task.Task`: input shape, classes, stem, SE, dense) is the network that will be
trained; every budget is checked on it and ``arch.json`` carries it.

1. the SG decodes ``sequences`` HL architectures for the condition y = (task, budget) — beam search, deterministic,
   grammar-constrained (at most the task's stride-2 stages: none for a dense task); the task tokens are left out
   with a warning if the SG never saw a task like it (``unseen_task``); each budget limit is put in the highest size
   bin lying under it — a latency/energy limit too when the SG's hardware tokens are for the budget's device
   (``data.device`` of the SG, :class:`datamodules.HLSequenceDataModule`; otherwise it is left out with a warning);
   with ``budget_guide`` a params budget — or the params limit a latency/energy budget implies, the largest
   architecture of the search history predicted within it (:func:`hardware_params_limit`) — also masks, token by
   token, the choices after which the architecture could no longer fit it with the ``guide_quantile`` cell by size
   of each cluster (:class:`~lightning_nas.models.sg.BudgetGuide`, 32 CCNF cells per cluster drawn to know the
   clusters' sizes);
2. ``candidates`` full architectures: candidate i takes HL architecture i mod ``sequences`` and draws every stage's
   cell from its cluster with the CCNF (at the cluster mean, temperature τ; Eq. 9);
3. each candidate's params/MACs/FLOPs are counted on the task's network; those within budget are scored with the
   ``objective`` (by default the one the run's search maximised, ``<workdir>/search/metrics.json``; the paper's is
   T-CET, :mod:`lightning_nas.zc.objectives`) on the archive's probe batch; the best is the result —
4. or, with ``select.top_n`` > 0 (the paper's final selection, Table 2: N = 10), the ``top_n`` best by it — the
   best of each HL architecture before the second of any (:func:`~lightning_nas.select.diverse_top`) — are trained
   briefly on the task's training split with ``select.config`` (an evaluate config) and the best by validation metric
   (``select.rank: val_metric``, ``select.epochs`` epochs) or by the sum of the first ``select.steps`` training
   losses (``train_loss``, the training-speed estimator) is the result (:mod:`lightning_nas.select`;
   ``selection.json`` lists them).

Writes ``<out>/arch.json`` (the winner's spec), ``arch.png`` (its stages and cells), ``candidates.jsonl`` (every
candidate's HL spec, cost, status and score) and ``metrics.json`` (``params``, ``macs``, ``flops``, ``objective``,
``score`` — and ``tcet``, the same number, when the objective is T-CET —
``zc_evaluations``, ``seconds`` and the split of the time, ``budget_satisfaction``: the share of candidates within
budget). The same seed and config give the same ``arch.json``.
"""

from __future__ import annotations

import json
import math
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch

from .archive import Archive
from .distributed import Ranks, Strategy, launch
from .hw.cost import hardware_cost_for
from .hw.measure import measure_arch
from .search.evaluate import ArchEvaluator, Budget, Evaluation
from .search.repair import check_feasible
from .select import SelectConfig, best_index, diverse_top, rank_candidates
from .space.arch import Arch
from .space.hl import HLArch, HLStage
from .space.network import task_network
from .space.task import Task
from .stages import RunDir
from .tracking import log_stage
from .zc.objectives import DEFAULT_OBJECTIVE, objective_for
from .zc.vector import Probe

GENERATE_OUTPUTS = ("arch.json", "arch.png", "hl_arch.json", "selection.json", "metrics.json", "candidates.jsonl")
"""What a generate run writes to its ``out``; removed when it starts, so a failed run leaves none of an older one."""

_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


def parse_quantity(value: float | int | str | None, name: str) -> float | None:
    """``1M`` → 1e6, ``300k`` → 3e5, ``1.1G`` → 1.1e9, numbers as they are; ``None`` stays ``None``."""
    if value is None or isinstance(value, int | float):
        if value is not None and not value > 0:
            raise ValueError(f"{name}: {value}; a budget must be positive")
        return None if value is None else float(value)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kKmMgGtT]?)\s*", str(value))
    if not match:
        raise ValueError(f"{name}: {value!r}; write a number with an optional k/M/G suffix, e.g. 1M or 300k")
    return parse_quantity(float(match[1]) * _SUFFIX[match[2].lower()], name)


@dataclass
class GenerateBudget:
    """Hard limits of the generated architecture (numbers or ``1M``-style text; unset = no limit). A request needs at
    least one (checked by :class:`GenerateConfig`): there is no default limit that a ``--budget.latency_ms`` alone
    would silently keep."""

    params: float | str | None = None
    macs: float | str | None = None
    flops: float | str | None = None
    latency_ms: float | None = None
    energy_mj: float | None = None

    def __post_init__(self):
        for key in ("params", "macs", "flops", "latency_ms", "energy_mj"):
            setattr(self, key, parse_quantity(getattr(self, key), f"budget.{key}"))

    @property
    def empty(self) -> bool:
        return all(getattr(self, key) is None for key in ("params", "macs", "flops", "latency_ms", "energy_mj"))


@dataclass
class GenerateConfig:
    """Settings of the ``generate`` stage.

    Args:
        workdir: run directory (its archive's probe scores the objective; outputs under ``<workdir>/generate`` unless
            ``out``).
        sg, gvae, ccnf, clusters: trained artifacts (defaults under ``workdir``).
        budget: ``{params, macs, flops, latency_ms, energy_mj}`` limits; latency (ms, batch 1) and energy (mJ) are
            on ``device``.
        device: where ``latency_ms``/``energy_mj`` are judged: ``host`` (this machine: a lookup table fitted on its
            own measurements of the task's networks, and the chosen architecture measured) or a HW-NAS-Bench
            platform (``raspi4``, ``pixel3``, ``edgegpu``, ``edgetpu``, ``eyeriss``, ``fpga``: predicted, see
            :mod:`lightning_nas.hw.cost`).
        task: the target task — a name (``cifar10``, ``cifar100``, ``imagenet``, ``digits``, a NAS-Bench-360 task) or
            its fields (:class:`~lightning_nas.space.task.Task`); default: the probe's shape. It conditions the SG and
            is the network whose cost is checked.
        unseen_task: ``drop`` (warn and prompt the SG without task tokens) or ``error`` when the SG was never
            trained on a task like this one.
        candidates: full architectures generated and (if within budget) scored — N of the paper's selection.
        objective: what ranks them (:data:`lightning_nas.zc.objectives.OBJECTIVES`); ``null``: the objective of the
            run's search (its ``metrics.json``), or the project's default when the run has none recorded.
        sequences: HL architectures decoded by the SG (beam width); candidates cycle through them.
        budget_guide, guide_quantile: budget-guided decoding for a params budget (step 1) and its cell quantile.
        temperature: CCNF τ around the cluster mean.
        seed: seed of the cell draws (the SG's decoding is deterministic).
        select: final selection by brief training of the proxy's top ``select.top_n`` (0: the proxy's best;
            :class:`~lightning_nas.select.SelectConfig`).
        out: output directory (default ``<workdir>/generate``).
        workers, devices, num_nodes, strategy, threads: score the candidates across processes (CPU workers, or GPUs
            per node) on Lightning Fabric's launcher (:mod:`lightning_nas.distributed`); every rank decodes the same
            candidates (seeded), scores its share, and rank 0 writes the outputs. A ``host`` latency/energy budget
            is measured on this machine and so needs one process.
        wandb: log the stage as a W&B run (settings, metrics, pictures; offline unless ``WANDB_MODE`` says
            otherwise, :mod:`lightning_nas.tracking`).
    """

    workdir: str = "runs/tiny"
    sg: str | None = None
    gvae: str | None = None
    ccnf: str | None = None
    clusters: str | None = None
    budget: GenerateBudget = field(default_factory=GenerateBudget)
    device: Literal["host", "edgegpu", "raspi4", "edgetpu", "pixel3", "eyeriss", "fpga"] = "host"
    task: str | dict | None = None
    unseen_task: Literal["drop", "error"] = "drop"
    candidates: int = 100
    objective: str | None = None
    sequences: int = 4
    budget_guide: bool = True
    guide_quantile: float = 0.9
    temperature: float = 0.4
    seed: int = 0
    select: SelectConfig = field(default_factory=SelectConfig)
    out: str | None = None
    workers: int = 1
    devices: int = 0
    num_nodes: int = 1
    strategy: Strategy = "auto"
    threads: int = 0
    wandb: bool = False

    def __post_init__(self):
        if isinstance(self.budget, dict):
            self.budget = GenerateBudget(**self.budget)
        if self.budget.empty:
            raise ValueError("budget: give at least one of --budget.params, --budget.macs, --budget.flops, "
                             "--budget.latency_ms, --budget.energy_mj")
        if isinstance(self.select, dict):
            self.select = SelectConfig(**self.select)
        if self.candidates < 1 or self.sequences < 1:
            raise ValueError(f"candidates and sequences must be ≥ 1 (got {self.candidates}, {self.sequences})")
        if self.workers < 1 or self.devices < 0 or self.num_nodes < 1:
            raise ValueError("workers and num_nodes must be ≥ 1 and devices ≥ 0")
        processes = (self.devices or self.workers) * self.num_nodes
        if processes > 1 and self.device == "host" and (self.budget.latency_ms or self.budget.energy_mj):
            raise ValueError("budget.latency_ms on device host is measured on this machine: score with one process "
                             "(workers: 1, devices: 0) or judge latency on a HW-NAS-Bench device")
        if self.task is not None:
            self.task = Task.resolve(self.task).to_json()
        if self.objective is not None:
            objective_for(self.objective)  # an unknown name: its clear error before anything loads


@dataclass
class Generation:
    """What one generation produced: the SG's HL architectures, every candidate and its evaluation, the best."""

    hl_archs: list[HLArch]
    candidates: list[tuple[HLArch, Arch, Evaluation]]
    best: int | None
    seconds: dict[str, float]
    answer: str = "sg"
    """Which path answered (:mod:`lightning_nas.search.repair`): ``sg``, ``repaired``, ``search`` or ``smallest``."""
    origins: list[str] = field(default_factory=list)
    """Per candidate: ``sg`` (generated), ``repaired`` (a shrunk over-budget one) or ``search`` (the fallback's)."""
    fallback: dict = field(default_factory=dict)
    """What the repair and the fallback search did (counts, steps, evaluations)."""

    def __post_init__(self):
        self.origins = self.origins or ["sg"] * len(self.candidates)

    @property
    def within_budget(self) -> int:
        """Generated candidates within budget."""
        return sum(e.status != "over_budget" for (_, _, e), o in zip(self.candidates, self.origins, strict=True)
                   if o == "sg")

    @property
    def zc_evaluations(self) -> int:
        """Candidates the proxy ran on (scored, rejected by a guard, or failed in the proxy rather than in building)."""
        return sum(e.status in ("ok", "rejected") or (e.status == "failed" and not e.reason.startswith("build:"))
                   for (_, _, e), origin in zip(self.candidates, self.origins, strict=True)
                   if origin != "search") + self.fallback.get("search_evaluations", 0)  # its answer counted there

    @property
    def scored(self) -> list[int]:
        """The candidates the answer is chosen from: the generated ones when one scored, else the repaired (or the
        fallback search's) ones."""
        return [i for i, (_, _, e) in enumerate(self.candidates) if e.status == "ok" and self.origins[i] == self.answer]


def generate_architectures(sg, generator, evaluator: ArchEvaluator, candidates: int = 100, sequences: int = 4,
                           temperature: float = 0.4, seed: int = 0, guide_quantile: float | None = 0.9,
                           progress: bool = True, unseen_task: str = "drop",
                           hardware_params: float | None = None,
                           score_many: Callable[[list[Arch]], list[Evaluation]] | None = None) -> Generation:
    """Steps 1–3 of the module docstring with loaded models; ``evaluator`` holds the budget and the task;
    ``guide_quantile=None`` decodes without the budget guide; ``hardware_params``: the params limit a latency/energy
    budget implies for the guide (:func:`hardware_params_limit`); ``score_many``: scores all candidates at once
    (across ranks: :meth:`lightning_nas.distributed.Ranks.map`) instead of one by one here."""
    from tqdm.auto import tqdm

    from .models.sg import BudgetGuide
    from .space.hl_cost import HLMacsEstimate, HLParamsEstimate

    if sg.tokenizer.num_clusters != len(generator.clusters["means"]):
        raise ValueError(f"the SG knows {sg.tokenizer.num_clusters} clusters, clusters.json has "
                         f"{len(generator.clusters['means'])}: train the SG on this run's search history")
    budget, task = evaluator.budget, evaluator.task
    start = time.perf_counter()
    limits = {"params": budget.max_params, "macs": budget.max_macs, "flops": budget.max_flops}
    if budget.hardware and sg.tokenizer.device == budget.device:
        limits.update({"latency_ms": budget.max_latency_ms, "energy_mj": budget.max_energy_mj})
    elif budget.hardware:
        warnings.warn(f"the SG's hardware tokens are for {sg.tokenizer.device!r}, the budget is on {budget.device!r}: "
                      "decoding without a latency/energy condition (train the SG with data.device "
                      f"{budget.device!r} to have one); the budget is still checked on every candidate", stacklevel=2)
    prompt = sg.tokenizer.prompt(sg.task_condition(task, unseen_task), limits)
    guide = None
    params_limits = [v for v in (budget.max_params, hardware_params) if v is not None]
    macs_limits = [v for v in (budget.max_macs, budget.max_flops and budget.max_flops / 2) if v is not None]
    if guide_quantile is not None and (params_limits or macs_limits):
        pools = {k: generator.sample(32, cluster=k, temperature=temperature, seed=seed * 1009 + 500 + k).cells
                 for k in range(sg.tokenizer.num_clusters)}
        estimate = HLParamsEstimate.for_task(pools, guide_quantile, task)
        macs = HLMacsEstimate.for_task(estimate.cells, task) if macs_limits else None
        guide = BudgetGuide(sg.tokenizer, estimate, min(params_limits) if params_limits else None, macs,
                            min(macs_limits) if macs_limits else None)
    # beams may coincide
    hl_archs = list(dict.fromkeys(sg.generate([prompt], sequences, [guide], task.max_downsamplings)[0]))
    sg_seconds = time.perf_counter() - start

    start = time.perf_counter()
    plan = [hl_archs[i % len(hl_archs)] for i in range(candidates)]
    needed: dict[int, int] = {}
    for hl in plan:
        for s in hl.stages:
            needed[s.cluster] = needed.get(s.cluster, 0) + 1
    pools = {k: iter(generator.sample(n, cluster=k, temperature=temperature, seed=seed * 1009 + k).cells)
             for k, n in sorted(needed.items())}
    archs = [evaluator.materialise(hl, [next(pools[s.cluster]) for s in hl.stages]) for hl in plan]
    cell_seconds = time.perf_counter() - start

    start = time.perf_counter()
    scored = []
    evaluations = score_many(archs) if score_many is not None else None
    bar = tqdm(zip(plan, archs, strict=True), total=candidates, desc="candidates", unit="arch",
               disable=not progress or evaluations is not None)
    best, top = None, float("-inf")
    for n, (hl, arch) in enumerate(bar):
        evaluation = evaluations[n] if evaluations is not None else evaluator(arch)
        scored.append((hl, arch, evaluation))
        if evaluation.status == "ok" and evaluation.score > top:
            best, top = n, evaluation.score
        bar.set_postfix(best=f"{top:.4g}", within=sum(e.status != "over_budget" for _, _, e in scored))
    seconds = {"sg": sg_seconds, "cells": cell_seconds, "scoring": time.perf_counter() - start}
    seconds["total"] = sum(seconds.values())
    return Generation(hl_archs, scored, best, seconds)


def answer_within_budget(result: Generation, generator, evaluator: ArchEvaluator, num_clusters: int,
                         iterations: int, temperature: float = 0.4, seed: int = 0,
                         score_many: Callable[[list[Arch]], list[Evaluation]] | None = None,
                         progress: bool = True) -> Generation:
    """``result`` when one of its candidates is within budget and scored (``answer`` ``sg``); else the paths 2–4 of
    :mod:`lightning_nas.search.repair`: every distinct over-budget candidate repaired and scored (``repaired``);
    failing that, HL-Evo within the budget for ``iterations`` mutations from the cheapest repair, the CCNF drawing
    the cells (``search``, its evaluations counted in ``zc_evaluations``); failing that, the cheapest in-budget
    network, unscored (``smallest``). The evaluator's budget must be feasible (:func:`check_feasible`)."""
    import random

    from .search.mutations import Candidate
    from .search.repair import SMALLEST_CELL, cheapest, repair, search_within_budget, smallest_arch

    if result.best is not None:
        return result
    start = time.perf_counter()
    score_many = score_many or (lambda archs: [evaluator(a) for a in archs])
    repaired, steps, seen = [], [], set()
    for hl, arch, e in result.candidates:
        if e.status != "over_budget":
            continue
        fixed = repair(hl, [s.cell for s in arch.stages], evaluator)
        if fixed is not None and (fixed[0].hl, fixed[0].cells) not in seen:
            seen.add((fixed[0].hl, fixed[0].cells))
            repaired.append(fixed[0])
            steps.append(len(fixed[1]))
    archs = [evaluator.materialise(c.hl, c.cells) for c in repaired]
    evaluations = score_many(archs)
    candidates = result.candidates + [(c.hl, a, e) for c, a, e in zip(repaired, archs, evaluations, strict=True)]
    origins = result.origins + ["repaired"] * len(repaired)
    fallback = {"over_budget": sum(e.status == "over_budget" for _, _, e in result.candidates),
                "repaired": len(repaired), "repaired_scored": sum(e.status == "ok" for e in evaluations),
                "repair_steps_median": sorted(steps)[len(steps) // 2] if steps else None}
    ok = [len(result.candidates) + i for i, e in enumerate(evaluations) if e.status == "ok"]
    answer = "repaired"
    if not ok:
        if repaired:
            begin = cheapest(repaired, evaluator)
        else:
            arch = smallest_arch(evaluator.task)
            begin = Candidate(HLArch(tuple(HLStage(0, s.channels, s.stride, s.repeats) for s in arch.stages),
                                     arch.final_channels), (SMALLEST_CELL,))

        def new_cell(cell, cluster, rng: random.Random):  # GenCell of Algorithm 1: the CCNF at the cluster mean
            return generator.sample(1, cluster=cluster, temperature=temperature, seed=rng.randrange(2**31)).cells[0]

        state = search_within_budget(evaluator, begin, new_cell, num_clusters, iterations, seed,
                                     evaluate_many=score_many)
        fallback.update({"search_iterations": iterations, "search_evaluations": state.evaluations,
                         "search_over_budget": state.over_budget, "search_rejected": state.rejected,
                         "search_failed": state.failed})
        if state.best is not None:
            found, _ = state.best
            arch = evaluator.materialise(found.hl, found.cells)
            candidates.append((found.hl, arch, evaluator(arch)))
            origins.append("search")
            answer = "search"
            ok = [len(candidates) - 1]
        else:  # nothing scores (the proxy fails on every network): the cheapest in-budget one, unscored
            arch = evaluator.materialise(begin.hl, begin.cells)
            e = evaluator(arch)
            candidates.append((begin.hl, arch, replace(e, status="unscored", score=None) if e.status != "over_budget"
                               else e))
            origins.append("smallest")
            answer, ok = "smallest", [len(candidates) - 1]
    best = max(ok, key=lambda i: (candidates[i][2].score if candidates[i][2].score is not None else -math.inf, -i))
    seconds = {**result.seconds, "fallback": time.perf_counter() - start}
    seconds["total"] = result.seconds["total"] + seconds["fallback"]
    if progress:
        print(f"generate: no generated candidate is within budget and scored; answered by {answer!r} ({fallback})")
    return Generation(result.hl_archs, candidates, best, seconds, answer, origins, fallback)


def warn_outside_history(archive: Archive, budget: Budget, min_share: float = 0.05) -> str | None:
    """Warn (and return the message) when fewer than ``min_share`` of the search history's scored architectures fit
    ``budget``'s params/MACs/FLOPs limits: the SG learnt sizes from that history (Eq. 11), so it has seen few or no
    architectures this small and the answer more likely comes from repair or the fallback search. Costs are the
    history's own (counted on the search's task)."""
    units = [u for u in ("params", "macs", "flops") if getattr(budget, f"max_{u}") is not None]
    costs = [r["metrics"] for r in archive.archs(stage="search")
             if r["metrics"].get("status") == "ok" and all(r["metrics"].get(u) is not None for u in units)]
    if not costs or not units:
        return None
    fits = sum(all(c[u] <= getattr(budget, f"max_{u}") for u in units) for c in costs)
    if fits >= min_share * len(costs):
        return None
    below = "; ".join(f"{u} ≤ {getattr(budget, f'max_{u}'):.3g} (smallest {min(c[u] for c in costs):.3g}, "
                      f"median {sorted(c[u] for c in costs)[len(costs) // 2]:.3g})" for u in units)
    message = (f"budget outside the search history the SG learnt from: {fits} of its {len(costs)} scored "
               f"architectures fit {below}. Expect a repaired or searched answer (metrics.json 'answer'); to have the "
               f"SG's own, run the search with a budget like this one and retrain the SG")
    warnings.warn(message, stacklevel=2)
    return message


def hardware_params_limit(records: list[dict], evaluator: ArchEvaluator, sample: int = 256) -> float | None:
    """The params limit a latency/energy budget implies for budget-guided decoding: the largest params count among
    the search history's architectures (``records``: ``Archive.archs``; at most ``sample`` of them, seeded) whose
    network for the evaluator's task is predicted (with the table's safety margin) within the budget's hardware
    limits. ``None`` when none is: the guide then has only the params budget, and the check on every candidate
    decides. A heuristic — latency follows MACs and layer shapes more than params — that keeps the guide from
    steering towards sizes no architecture known to fit had."""
    import random

    budget, task = evaluator.budget, evaluator.task
    records = [r for r in records if r.get("spec")]
    records = random.Random(0).sample(records, min(sample, len(records)))
    best = None
    for r in records:
        arch = Arch.from_json(r["spec"])
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = task_network(task, arch)
            cost = evaluator.cost(model)
        except (RuntimeError, ValueError):  # made for another task and not buildable for this one
            continue
        if all(cost[u] <= getattr(budget, f"max_{u}") for u in ("latency_ms", "energy_mj")
               if getattr(budget, f"max_{u}") is not None):
            best = max(best or 0, cost["params"])
    return best


def run_objective(run: RunDir) -> str:
    """The objective the run's search maximised (``<workdir>/search/metrics.json``: its ``objective``, or for a search
    written before that key, the name in its ``best_<objective>_<budget>`` keys), else the project's default."""
    path = run.metrics("search")
    if not path.is_file():
        return DEFAULT_OBJECTIVE
    metrics = json.loads(path.read_text())
    if metrics.get("objective"):
        return metrics["objective"]
    budgets = [k.removeprefix("run_") for k in metrics if k.startswith("run_")]
    for key in metrics:
        for name in budgets:
            if key.startswith("best_") and key.endswith(f"_{name}") and not key.startswith(("best_params_",
                                                                                            "best_macs_",
                                                                                            "best_latency_ms_")):
                return key.removeprefix("best_").removesuffix(f"_{name}")
    return DEFAULT_OBJECTIVE


def run_generate(config: GenerateConfig) -> dict:
    """Load the artifacts of ``config.workdir``, generate, and write the outputs; returns the metrics (``{}`` on the
    ranks other than 0 of a job SLURM or torchrun started)."""
    return launch(_generate, config, workers=config.workers, devices=config.devices, num_nodes=config.num_nodes,
                  strategy=config.strategy, threads=config.threads) or {}


def _generate(ranks: Ranks, config: GenerateConfig) -> dict | None:
    from .generator import CellGenerator
    from .models.sg import SGModule
    from .space.draw import draw_arch

    start = time.perf_counter()
    workdir = Path(config.workdir)
    run = RunDir(workdir)
    out = Path(config.out) if config.out else workdir / "generate"
    if ranks.rank == 0:  # a run that fails from here on leaves nothing of an earlier one for evaluate to read
        for name in GENERATE_OUTPUTS:
            (out / name).unlink(missing_ok=True)
    path = run.require("archive")
    sg = SGModule.from_checkpoint(config.sg or run.require("sg"))
    generator = CellGenerator.from_workdir(workdir, config.gvae, config.ccnf, config.clusters)
    b = config.budget
    budget = Budget("request", b.params, b.macs, b.flops, b.latency_ms, b.energy_mj, config.device)
    if ranks.rank == 0 and budget.hardware:  # the one writer fits (and caches) the device's cost table first
        with Archive(path, create=False) as archive:
            probe = Probe.from_archive(archive)
            hardware_cost_for(config.device, Task.from_json(config.task) if config.task else Task.from_probe(probe),
                              workdir, archive)
    ranks.barrier()
    with Archive(path, create=False) as archive:  # open while generating: the host's op table stores layer timings
        probe = Probe.from_archive(archive)
        task = Task.from_json(config.task) if config.task else Task.from_probe(probe)
        hardware = hardware_cost_for(config.device, task, workdir, archive) if budget.hardware else None
        objective = config.objective or run_objective(run)
        evaluator = ArchEvaluator(probe, budget, objective, task, hardware)
        implied = hardware_params_limit(archive.archs(stage="search"), evaluator) \
            if budget.hardware and config.budget_guide else None
        check_feasible(evaluator)  # an infeasible budget: one paragraph naming the smallest network's cost
        warn_outside_history(archive, budget)
        score_many = (lambda archs: ranks.map(evaluator, archs)) if ranks.world_size > 1 else None
        result = generate_architectures(sg, generator, evaluator, config.candidates, config.sequences,
                                        config.temperature, config.seed,
                                        config.guide_quantile if config.budget_guide else None,
                                        unseen_task=config.unseen_task, hardware_params=implied,
                                        progress=ranks.rank == 0, score_many=score_many)
        result = answer_within_budget(result, generator, evaluator, sg.tokenizer.num_clusters, config.candidates,
                                      config.temperature, config.seed, score_many, progress=ranks.rank == 0)
    if ranks.rank != 0:
        return None

    out.mkdir(parents=True, exist_ok=True)  # only now: a missing workdir or artifact creates nothing
    with open(out / "candidates.jsonl", "w") as f:
        for (hl, _, e), origin in zip(result.candidates, result.origins, strict=True):
            f.write(json.dumps({"hl_spec": hl.to_json(), "origin": origin, **e.to_json()}) + "\n")
    metrics = {
        "budget": asdict(b), "task": task.to_json(), "seed": config.seed, "objective": objective,
        "candidates": config.candidates, "hl_archs": len(result.hl_archs), "budget_guide": config.budget_guide,
        "budget_satisfaction": result.within_budget / config.candidates,
        "rejected": sum(e.status == "rejected" for _, _, e in result.candidates),
        "answer": result.answer, **({"fallback": result.fallback} if result.fallback else {}),
        "zc_evaluations": result.zc_evaluations, "trained_candidates": 0,
        "seconds": round(time.perf_counter() - start, 2),
        **{f"{k}_seconds": round(v, 3) for k, v in result.seconds.items()},
    }
    chosen = result.best
    if config.select.top_n > 0 and result.scored:
        order = sorted(result.scored, key=lambda i: (-result.candidates[i][2].score, i))
        hl_of = {i: json.dumps(result.candidates[i][0].to_json(), sort_keys=True) for i in order}
        ranked = diverse_top(order, hl_of, config.select.top_n)
        start_select = time.perf_counter()
        trained = rank_candidates([result.candidates[i][1] for i in ranked], config.select, out / "select")
        chosen = ranked[best_index(trained)]
        selection = [{"candidate": i, "objective": objective, "score": result.candidates[i][2].score,
                      "params": result.candidates[i][2].params,
                      "macs": result.candidates[i][2].macs, **t} for i, t in zip(ranked, trained, strict=True)]
        (out / "selection.json").write_text(json.dumps(selection, indent=2) + "\n")
        metrics.update({"trained_candidates": len(ranked), "selected_rank": ranked.index(chosen) + 1,
                        "select_rank": config.select.rank, "distinct_hl_archs_trained": len({hl_of[i] for i in ranked}),
                        "select_seconds": round(time.perf_counter() - start_select, 2),
                        "seconds": round(time.perf_counter() - start, 2)})
    hl, arch, best = result.candidates[chosen]
    arch.save(out / "arch.json")
    (out / "hl_arch.json").write_text(json.dumps(hl.to_json(), indent=2) + "\n")
    scored = "unscored" if best.score is None else f"{objective} {best.score:.4g}"
    draw_arch(arch, out / "arch.png", hl, f"{scored} ({result.answer}), {best.params / 1e6:.3g}M params, "
                                          f"{best.macs / 1e6:.3g}M MACs ({task.name}: {task.num_classes} outputs, "
                                          f"input {'×'.join(map(str, task.input_shape))})")
    metrics.update({"params": best.params, "macs": best.macs, "flops": best.flops, "score": best.score,
                    "tcet": best.score if objective == "tcet" else None,
                    "arch": str(out / "arch.json")})
    if budget.hardware:
        metrics.update({"device": config.device, "latency_ms_predicted": best.latency_ms,  # with the safety margin
                        "energy_mj_predicted": best.energy_mj, "margin": hardware.margin,
                        "hardware_tokens": sg.tokenizer.device == config.device,
                        "guide_params_from_hardware": implied})
        if config.device == "host":  # the final pick measured on this machine (stored in the archive)
            with Archive(path) as archive:
                measured = measure_arch(arch, task, archive=archive)
            metrics.update({"latency_ms_measured": round(measured.ms, 4),
                            "latency_median_ms": round(measured.median_ms, 4),
                            "latency_iqr_ms": round(measured.iqr_ms, 4),
                            "within_latency_measured": b.latency_ms is None or measured.ms <= b.latency_ms,
                            "host": measured.device.to_json()})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if config.wandb:
        log_stage("generate", out, asdict(config), metrics, {"architecture": out / "arch.png"})
    return metrics


def main(argv: list[str]) -> dict:
    from .cli import run_stage

    return run_stage(argv, GenerateConfig, run_generate, "generate", __doc__)
