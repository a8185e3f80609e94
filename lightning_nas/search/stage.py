"""Stage ``search``: HL-Evo (Algorithm 1) for one or several budgets, the history in the archive.

    python -m lightning_nas search --config configs/search/tiny.yaml [--iterations 200] [--seed 1]

Reads ``<workdir>/archive.sqlite`` (its probe is the T-CET batch), the G-VAE and CCNF checkpoints and
``clusters.json``; cells of cluster k are drawn by the CCNF conditioned on the cluster mean μ_k (τ = 0.4, Eq. 9).
For every budget it runs (or resumes — see :mod:`lightning_nas.search.hl_evo`) one search and writes

- the history into the archive (``Archive.archs(stage="search", run=<run id>)``), as it goes;
- ``<workdir>/search/best_<budget>.json`` (the best architecture's spec) and ``pareto_<budget>.png`` (objective vs
  params of every scored child, the Pareto front marked);
- ``<workdir>/search/metrics.json``: ``evaluations``, ``evals_per_s``, ``discarded_over_budget``, ``failed`` (all
  budgets together) and per budget ``best_tcet_<budget>``, its params/MACs and run id.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..archive import Archive
from ..hw.cost import hardware_cost_for
from ..hw.measure import measure_arch
from ..space.arch import Arch
from ..space.task import Task
from ..stages import RunDir
from ..tracking import stage_run
from ..zc.vector import Probe
from .evaluate import ArchEvaluator, Budget
from .hl_evo import HLEvoConfig, hl_evo, run_id


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
        objective: the proxy maximised (``tcet``).
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
    objective: str = "tcet"
    wandb: bool = False

    def __post_init__(self):
        if self.population < 1 or self.iterations < 0:
            raise ValueError(f"population ≥ 1 and iterations ≥ 0 needed (got {self.population}, {self.iterations})")
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
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=120)
    os.replace(tmp, path)


def _wandb_run(config: SearchStageConfig, budget: str, settings: dict, out_dir: Path):
    return stage_run(f"search-{budget}", out_dir, settings) if config.wandb else None


def run_search_stage(config: SearchStageConfig) -> dict:
    """Run every budget's search (resuming stored runs) and write ``<workdir>/search/``; returns the metrics."""
    from tqdm.auto import tqdm

    from ..generator import CellGenerator

    workdir = Path(config.workdir)
    path = RunDir(workdir).require("archive")
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
    out_dir.mkdir(parents=True, exist_ok=True)
    evo = HLEvoConfig(config.population, config.iterations, config.seed, tuple(map(tuple, config.initial)),
                      config.initial_final_channels)
    metrics: dict = {"evaluations": 0, "discarded_over_budget": 0, "failed": 0, "iterations": 0}
    wall, new_iterations = 0.0, 0
    with Archive(path, create=False) as archive:
        probe = Probe.from_archive(archive)  # the objective's batch: the archive's probe
        probe_id = probe.id
        for spec in config.budgets:
            budget = Budget(**{k: v for k, v in spec.items() if k != "task"})
            task = config.budget_task(spec) or Task.from_probe(probe)
            hardware = hardware_cost_for(budget.device, task, workdir, archive) if budget.hardware else None
            evaluate = ArchEvaluator(probe, budget, config.objective, task, hardware)
            settings = {**asdict(config), "budgets": spec, "probe": probe_id, "artifacts": digests,
                        "task": evaluate.task.to_json()}
            run = run_id("hl-evo", budget.name, settings)
            logger = _wandb_run(config, budget.name, settings, out_dir)
            bar = tqdm(total=config.iterations + 1, desc=f"search {budget.name}", unit="it")
            done = len(archive.archs(stage="search", run=run))
            bar.update(done)
            start = time.perf_counter()

            def progress(state, bar=bar, start=start, done=done, logger=logger):
                bar.update(1)
                rate = (state.iterations - done) / max(1e-9, time.perf_counter() - start)
                best = state.best[1] if state.best else float("nan")
                bar.set_postfix(evals_per_s=f"{rate:.2f}", best=f"{best:.4g}", over=state.over_budget)
                if logger is not None and state.best is not None:
                    logger.log({f"best_{config.objective}": best, "evaluations": state.evaluations,
                                "discarded_over_budget": state.over_budget}, step=state.iterations)

            state = hl_evo(evo, evaluate, gen_cell, num_clusters, archive, run, progress=progress)
            bar.close()
            wall += time.perf_counter() - start
            new_iterations += state.iterations - done
            scored = [r for r in archive.archs(stage="search", run=run) if r["metrics"]["status"] == "ok"]
            best_record = max(scored, key=lambda r: r["metrics"]["score"]) if scored else None
            best = best_record["metrics"] if best_record else None
            if best_record is not None:
                (out_dir / f"best_{budget.name}.json").write_text(json.dumps(best_record["spec"], indent=2))
            _plot_pareto(out_dir / f"pareto_{budget.name}.png",
                         [(r["metrics"]["params"], r["metrics"]["score"]) for r in scored],
                         (best["params"], best["score"]) if best else None,
                         f"HL-Evo, budget {budget.name}: {len(scored)} scored, {state.over_budget} over budget")
            if logger is not None:
                import wandb

                logger.log({"pareto": wandb.Image(str(out_dir / f"pareto_{budget.name}.png"))})
                logger.summary.update({f"best_{config.objective}": best["score"] if best else None})
                logger.finish()
            metrics["evaluations"] += state.evaluations
            metrics["discarded_over_budget"] += state.over_budget
            metrics["failed"] += state.failed
            metrics["iterations"] += state.iterations
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
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def main(argv: list[str]) -> dict:
    from ..cli import run_stage

    return run_stage(argv, SearchStageConfig, run_search_stage, "search", __doc__)
