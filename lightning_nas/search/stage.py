"""Stage ``search``: HL-Evo (Algorithm 1) for one or several budgets, the history in the archive.

    python -m lightning_nas search --config configs/search/tiny.yaml [--iterations 200] [--seed 1]

Reads ``<workdir>/archive.sqlite`` (its probe is the T-CET batch), the G-VAE and CCNF checkpoints and
``clusters.json``; cells of cluster k are drawn by the CCNF conditioned on the cluster mean μ_k (τ = 0.4, Eq. 9).
For every budget it runs (or resumes — see :mod:`lightning_nas.search.hl_evo`) one search and writes

- the history into the archive (``Archive.archs(stage="search", run=<run id>)``), as it goes;
- ``<workdir>/search/best_<budget>.json`` (the best architecture's spec) and ``pareto_<budget>.png`` (objective vs
  params of every scored child, the Pareto front marked);
- ``<workdir>/search/metrics.json``: ``evaluations``, ``evals_per_s``, ``discarded_over_budget``, ``rejected`` (by
  a guarded objective's trainability guard), ``failed`` (all budgets together), ``objective`` and per budget
  ``best_<objective>_<budget>``, its params/MACs and run id.

**Over ranks** (``workers`` CPU processes or ``devices`` GPUs per node, ``num_nodes``; Lightning Fabric's launcher,
:mod:`lightning_nas.distributed`): ``parallel: budgets`` deals the budgets out to the ranks, one search each (the SG
corpus case; a rank that is not rank 0 appends its history to ``<workdir>/search/shards/<run>.jsonl``, which rank 0
merges into the archive — at the end, or at the start of the next run after a kill); ``parallel: children`` runs the
budgets one after the other with every rank scoring a share of each generation's ``batch`` children (rank 0 writes
the history). A search's history depends on its settings and seed only (``batch`` included), never on the number of
ranks: its run id leaves the launch settings out.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from ..archive import Archive
from ..datasets.files import read_jsonl
from ..distributed import Ranks, Strategy, launch
from ..hw.cost import hardware_cost_for
from ..hw.measure import measure_arch
from ..space.arch import Arch
from ..space.task import Task
from ..stages import RunDir
from ..tracking import stage_run
from ..zc.objectives import DEFAULT_OBJECTIVE, objective_for
from ..zc.vector import Probe
from .evaluate import ArchEvaluator, Budget
from .hl_evo import HLEvoConfig, hl_evo, run_id

LAUNCH_SETTINGS = ("workers", "devices", "num_nodes", "strategy", "threads", "parallel")


@dataclass
class SearchStageConfig:
    """Settings of the ``search`` stage.

    Args:
        workdir: run directory (archive, and ``search/`` for the outputs).
        gvae, ccnf, clusters: artifacts of the earlier stages (defaults under ``workdir``).
        task: the task whose network the budgets are checked on (:class:`~lightning_nas.space.task.Task`): a name
            (``cifar10``, ``cifar100``, ``imagenet``, ``digits``, a NAS-Bench-360 task) or its fields; ``null``:
            the probe's shape. The architectures written (history, ``best_<budget>.json``) carry it.
        budgets: one search per entry: ``{name, max_params, max_macs, max_flops, max_latency_ms, max_energy_mj,
            device}`` (missing limits = none; latency/energy are predicted on ``device``: ``host`` or a HW-NAS-Bench
            platform, :mod:`lightning_nas.hw`; on the host the best architecture is then measured), and optionally
            ``task`` for that budget alone (a history of several task shapes teaches the SG the task).
        population, iterations, seed: Algorithm 1's N, T and the seed.
        initial: α₀'s stages ``[cluster, channels, stride, repeats]``; ``initial_final_channels`` its head width.
        temperature: τ of the CCNF when drawing a cell of a cluster.
        objective: what HL-Evo maximises: a name of :data:`lightning_nas.zc.objectives.OBJECTIVES` (the project's
            default :data:`~lightning_nas.zc.objectives.DEFAULT_OBJECTIVE`; ``tcet`` is the paper's) or another proxy
            name; ``generate`` ranks its candidates by the same one unless told otherwise.
        batch: children scored together per generation (1: Algorithm 1 as written; see
            :mod:`lightning_nas.search.hl_evo`).
        workers, devices, num_nodes, strategy, threads: the processes (CPU workers, or GPUs per node), nodes,
            launcher strategy (``auto``: ``ddp_spawn``, or ``ddp`` under SLURM/torchrun) and torch threads per
            process (0: cores / processes).
        parallel: ``budgets`` (one budget per rank) or ``children`` (each generation's children across ranks).
        wandb: log the best-so-far curve and the Pareto plot of each budget to Weights & Biases (offline unless
            ``WANDB_MODE`` says otherwise; files under ``<workdir>/search/wandb``).
    """

    workdir: str = "runs/tiny"
    gvae: str | None = None
    ccnf: str | None = None
    clusters: str | None = None
    task: str | dict | None = None
    budgets: list[dict] = field(default_factory=lambda: [{"name": "1M", "max_params": 1_000_000}])
    population: int = 512
    iterations: int = 20000
    seed: int = 0
    initial: list[list[int]] = field(
        default_factory=lambda: [[0, 8, 2, 1], [0, 16, 2, 1], [0, 32, 2, 1], [0, 64, 2, 1]])
    initial_final_channels: int | None = 128
    temperature: float = 0.4
    objective: str = DEFAULT_OBJECTIVE
    batch: int = 1
    workers: int = 1
    devices: int = 0
    num_nodes: int = 1
    strategy: Strategy = "auto"
    threads: int = 0
    parallel: Literal["budgets", "children"] = "budgets"
    wandb: bool = False

    def __post_init__(self):
        objective_for(self.objective)  # an unknown name: its clear error before anything runs
        if self.population < 1 or self.iterations < 0:
            raise ValueError(f"population ≥ 1 and iterations ≥ 0 needed (got {self.population}, {self.iterations})")
        if self.batch < 1 or self.workers < 1 or self.devices < 0 or self.num_nodes < 1:
            raise ValueError("batch, workers and num_nodes must be ≥ 1 and devices ≥ 0")
        names = [b.get("name") for b in self.budgets]
        if not self.budgets or len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"budgets: give each budget a distinct non-empty name (got {names})")
        for b in self.budgets:
            unknown = set(b) - {"name", "max_params", "max_macs", "max_flops", "max_latency_ms", "max_energy_mj",
                                "device", "task"}
            if unknown:
                raise ValueError(f"budgets[{b.get('name')}]: unknown key(s) {sorted(unknown)}")
            Budget(**{k: v for k, v in b.items() if k != "task"})  # limits are checked before anything runs
            task = self.budget_task(b)
            strided = sum(stage[2] == 2 for stage in self.initial)
            if task is not None and strided > task.max_downsamplings:
                raise ValueError(f"initial: {strided} stride-2 stages, but task {task.name!r} (budget {b['name']!r}) "
                                 f"allows {task.max_downsamplings}: give an initial architecture with stride-1 stages")

    @property
    def processes(self) -> int:
        return (self.devices or self.workers) * self.num_nodes

    def run_settings(self) -> dict:
        """The settings a run id is made of: all but how the search is launched (and ``batch`` at its default, so
        runs stored before it existed keep their ids)."""
        settings = {k: v for k, v in asdict(self).items() if k not in LAUNCH_SETTINGS}
        if self.batch == 1:
            del settings["batch"]
        return settings

    def budget_task(self, budget: dict) -> Task | None:
        """The task of one budget entry (its own ``task`` or the stage's; ``None``: the probe's shape)."""
        value = budget.get("task", self.task)
        return None if value is None else Task.resolve(value)


def _plot_pareto(path: Path, points: list[tuple[float, float]], best: tuple[float, float] | None, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if points:
        params, score = zip(*points, strict=True)
        ax.scatter([p / 1e6 for p in params], score, s=6, alpha=0.5, label="scored children")
        front, top = [], -float("inf")
        for p, s in sorted(points):
            if s > top:
                front.append((p, s))
                top = s
        ax.plot([p / 1e6 for p, _ in front], [s for _, s in front], "r.-", label="Pareto front")
    if best is not None:
        ax.plot([best[0] / 1e6], [best[1]], "k*", ms=12, label="best")
    ax.set_xlabel("params (M)")
    ax.set_ylabel("objective")
    ax.set_title(title, fontsize=9)
    if points or best is not None:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no child scored yet\n(each rejected, over budget or failed)", ha="center", va="center",
                transform=ax.transAxes)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=120)
    os.replace(tmp, path)


def _wandb_run(config: SearchStageConfig, budget: str, settings: dict, out_dir: Path):
    return stage_run(f"search-{budget}", out_dir, settings) if config.wandb else None


class ShardHistory:
    """One search's history on a rank that does not write the archive: the stored records (read once), and new
    ones appended to ``path`` (flushed each, so a kill loses nothing written), for rank 0 to merge
    (:func:`merge_history_shards`). Duck-types the two archive methods :func:`hl_evo` uses."""

    def __init__(self, records: list[dict], path: Path):
        self.records, self.path = list(records), Path(path)

    def archs(self, stage: str | None = None, run: str | None = None) -> list[dict]:
        return list(self.records)

    def add_arch(self, spec: dict, metrics: dict, hl_spec: dict, budget: dict, stage: str, run: str) -> None:
        record = {"spec": spec, "metrics": metrics, "hl_spec": hl_spec, "budget": budget, "stage": stage, "run": run}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.records.append(record)


def merge_history_shards(archive: Archive, shard_dir: Path) -> int:
    """Rank 0: append the history shards' records to the archive (those whose iteration its run does not hold yet,
    so merging twice adds nothing; a last line cut short by a kill is skipped), then delete the files. Returns how
    many records were added."""
    added = 0
    for path in sorted(Path(shard_dir).glob("*.jsonl")):
        stored: dict[str, set[int]] = {}
        fresh = []
        for r in read_jsonl(path):
            have = stored.setdefault(r["run"], {a["metrics"].get("iteration") for a in
                                                archive.archs(stage=r["stage"], run=r["run"])})
            if r["metrics"].get("iteration") not in have:
                have.add(r["metrics"].get("iteration"))
                fresh.append(r)
        added += archive.add_archs(fresh)
        path.unlink()
    return added


def run_search_stage(config: SearchStageConfig) -> dict:
    """Run every budget's search (resuming stored runs) and write ``<workdir>/search/``; returns the metrics (``{}``
    on the ranks other than 0 of a job SLURM or torchrun started)."""
    RunDir(Path(config.workdir)).require("archive")
    return launch(_search, config, workers=config.workers, devices=config.devices, num_nodes=config.num_nodes,
                  strategy=config.strategy, threads=config.threads) or {}


def _search(ranks: Ranks, config: SearchStageConfig) -> dict | None:
    """Every rank: its share of the budgets (``parallel: budgets``) or every budget with a share of each
    generation (``children``); rank 0 then merges the histories and writes the outputs."""
    from tqdm.auto import tqdm

    from ..generator import CellGenerator

    workdir = Path(config.workdir)
    path = RunDir(workdir).archive
    shard_dir = workdir / "search" / "shards"
    artifacts = CellGenerator.artifact_paths(workdir, config.gvae, config.ccnf, config.clusters)
    generator = CellGenerator.load(**artifacts)
    # a run resumes only with the very same artifacts: their digests are part of the run id
    digests = {name: hashlib.sha256(path.read_bytes()).hexdigest()[:16] for name, path in artifacts.items()}
    num_clusters = len(generator.clusters["means"])
    for n, stage in enumerate(config.initial):
        if not 0 <= stage[0] < num_clusters:
            raise ValueError(f"initial[{n}]: cluster {stage[0]}; "
                             f"clusters.json has {num_clusters} (0..{num_clusters - 1})")

    def gen_cell(cell, cluster, rng):  # GenCell of Algorithm 1: the CCNF at the cluster mean
        return generator.sample(1, cluster=cluster, temperature=config.temperature, seed=rng.randrange(2**31)).cells[0]

    out_dir = workdir / "search"
    evo = HLEvoConfig(config.population, config.iterations, config.seed, tuple(map(tuple, config.initial)),
                      config.initial_final_channels, batch=config.batch)
    by_budgets = config.parallel == "budgets" and ranks.world_size > 1
    if ranks.rank == 0:  # the archive's one writer: a killed job's history first, then the device cost tables
        out_dir.mkdir(parents=True, exist_ok=True)
        with Archive(path, create=False) as archive:
            merge_history_shards(archive, shard_dir)
            probe = Probe.from_archive(archive)
            for spec in config.budgets:
                budget = Budget(**{k: v for k, v in spec.items() if k != "task"})
                if budget.hardware:
                    hardware_cost_for(budget.device, config.budget_task(spec) or Task.from_probe(probe), workdir,
                                      archive)
    ranks.barrier()
    runs: dict[str, dict] = {}
    with Archive(path, create=False) as archive:
        probe = Probe.from_archive(archive)  # the objective's batch: the archive's probe
        for spec in ranks.share(config.budgets) if by_budgets else config.budgets:
            budget = Budget(**{k: v for k, v in spec.items() if k != "task"})
            task = config.budget_task(spec) or Task.from_probe(probe)
            hardware = hardware_cost_for(budget.device, task, workdir, archive) if budget.hardware else None
            evaluate = ArchEvaluator(probe, budget, config.objective, task, hardware)
            settings = {**config.run_settings(), "budgets": spec, "probe": probe.id, "artifacts": digests,
                        "task": evaluate.task.to_json()}
            run = run_id("hl-evo", budget.name, settings)
            history = (ShardHistory(archive.archs(stage="search", run=run), shard_dir / f"{run}.jsonl")
                       if by_budgets and ranks.rank != 0 else archive)
            shown = by_budgets or ranks.rank == 0
            logger = _wandb_run(config, budget.name, settings, out_dir) if shown else None
            done = len(history.archs(stage="search", run=run))
            bar = tqdm(total=config.iterations + 1, desc=f"search {budget.name}", unit="it", initial=done,
                       disable=not shown)
            start = time.perf_counter()

            def progress(state, bar=bar, start=start, done=done, logger=logger):
                bar.update(1)
                rate = (state.iterations - done) / max(1e-9, time.perf_counter() - start)
                best = state.best[1] if state.best else float("nan")
                bar.set_postfix(evals_per_s=f"{rate:.2f}", best=f"{best:.4g}", over=state.over_budget)
                if logger is not None and state.best is not None:
                    logger.log({f"best_{config.objective}": best, "evaluations": state.evaluations,
                                "discarded_over_budget": state.over_budget}, step=state.iterations)

            state = hl_evo(evo, evaluate, gen_cell, num_clusters, history, run, progress=progress,
                           evaluate_many=None if by_budgets else lambda archs, ev=evaluate: ranks.map(ev, archs),
                           write=by_budgets or ranks.rank == 0)
            bar.close()
            runs[budget.name] = {"run": run, "seconds": time.perf_counter() - start,
                                 "new_iterations": state.iterations - done, "evaluations": state.evaluations,
                                 "over_budget": state.over_budget, "rejected": state.rejected,
                                 "failed": state.failed,
                                 "iterations": state.iterations}
            if by_budgets or ranks.rank == 0:  # the rank that searched a budget holds its whole history
                _budget_outputs(config, budget.name, history.archs(stage="search", run=run), state.over_budget,
                                out_dir, logger)
    ranks.barrier()
    shares = ranks.gather(runs)
    if ranks.rank != 0:
        return None
    for share in shares[1:] if by_budgets else []:
        runs.update(share)
    with Archive(path, create=False) as archive:
        merge_history_shards(archive, shard_dir)
        return _write_outputs(config, archive, probe, runs, out_dir)


def _budget_outputs(config: SearchStageConfig, name: str, records: list[dict], over_budget: int, out_dir: Path,
                    logger) -> None:
    """``best_<budget>.json`` and ``pareto_<budget>.png`` of one search's history; the plot joins its W&B run,
    which is then finished."""
    scored = [r for r in records if r["metrics"]["status"] == "ok"]
    best_record = max(scored, key=lambda r: r["metrics"]["score"]) if scored else None
    best = best_record["metrics"] if best_record else None
    if best_record is not None:
        (out_dir / f"best_{name}.json").write_text(json.dumps(best_record["spec"], indent=2))
    _plot_pareto(out_dir / f"pareto_{name}.png", [(r["metrics"]["params"], r["metrics"]["score"]) for r in scored],
                 (best["params"], best["score"]) if best else None,
                 f"HL-Evo, budget {name}: {len(scored)} scored, {over_budget} over budget")
    if logger is not None:
        import wandb

        logger.log({"pareto": wandb.Image(str(out_dir / f"pareto_{name}.png"))})
        logger.summary.update({f"best_{config.objective}": best["score"] if best else None})
        logger.finish()


def _write_outputs(config: SearchStageConfig, archive: Archive, probe: Probe, runs: dict[str, dict],
                   out_dir: Path) -> dict:
    """Rank 0: ``metrics.json`` from the archive's histories (all merged by now)."""
    metrics: dict = {"evaluations": 0, "discarded_over_budget": 0, "rejected": 0, "failed": 0, "iterations": 0}
    wall = max((r["seconds"] for r in runs.values()), default=0.0) if config.parallel == "budgets" else sum(
        r["seconds"] for r in runs.values())
    new_iterations = sum(r["new_iterations"] for r in runs.values())
    for spec in config.budgets:
        budget = Budget(**{k: v for k, v in spec.items() if k != "task"})
        task = config.budget_task(spec) or Task.from_probe(probe)
        summary = runs[budget.name]
        run = summary["run"]
        scored = [r for r in archive.archs(stage="search", run=run) if r["metrics"]["status"] == "ok"]
        best_record = max(scored, key=lambda r: r["metrics"]["score"]) if scored else None
        best = best_record["metrics"] if best_record else None
        metrics["evaluations"] += summary["evaluations"]
        metrics["discarded_over_budget"] += summary["over_budget"]
        metrics["rejected"] += summary.get("rejected", 0)
        metrics["failed"] += summary["failed"]
        metrics["iterations"] += summary["iterations"]
        metrics[f"best_{config.objective}_{budget.name}"] = best["score"] if best else None
        metrics[f"best_params_{budget.name}"] = best["params"] if best else None
        metrics[f"best_macs_{budget.name}"] = best["macs"] if best else None
        if budget.hardware and best_record is not None:
            metrics[f"best_latency_ms_{budget.name}"] = best.get("latency_ms")  # predicted on budget.device
            if budget.device == "host":  # the final pick measured, not predicted
                measured = measure_arch(Arch.from_json(best_record["spec"]), task, archive=archive)
                metrics[f"best_latency_ms_measured_{budget.name}"] = round(measured.ms, 4)
        metrics[f"run_{budget.name}"] = run
    metrics["evals_per_s"] = round(new_iterations / max(wall, 1e-9), 3)  # iterations run by this invocation
    metrics["processes"] = config.processes
    metrics["objective"] = config.objective  # generate ranks by the same objective unless told otherwise
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def main(argv: list[str]) -> dict:
    from ..cli import run_stage

    return run_stage(argv, SearchStageConfig, run_search_stage, "search", __doc__)
