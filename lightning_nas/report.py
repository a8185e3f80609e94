"""Command ``report``: ``REPORT.md`` for one run directory — what each stage measured, the run's versions of the
paper's Table 1 (sampling study) and Table 2 (search comparison), the latent map, BIC curve, Pareto fronts and the
final architecture's picture, and the accuracy–latency picture on this machine.

    python -m lightning_nas report runs/demo [--table1_samples 10] [--table2_seeds [0]] [--table2_iterations 40]
                                             [--compare_seeds [0,1,2]] [--compare_epochs 5]

Reads only what the stages left in the directory (``pipeline/state.json`` and ``pipeline/<stage>.yaml`` when the
pipeline made it, each stage's ``metrics.json``, the archive, checkpoints and ``clusters.json``); a missing stage is
reported as missing, not an error. The two studies are computed here, at the run's scale: Table 1 around the
archive's best cell by T-CET, Table 2 under the run's first search budget with the run's iterations and population
(each overridable). Both are cached in ``<workdir>/report/`` with the settings and artifact fingerprints they were
computed from, so a rerun redraws the report in seconds and recomputes only what changed (``--refresh true``
recomputes everything). Figures are linked by relative paths, so the report renders wherever the directory goes.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from .pipeline import STAGES
from .space.network import task_network
from .stages import RunDir

TABLE2_METHODS = ["HL-Evo(T-CET)+CCNF", "Evo(T-CET)", "Random(T-CET)"]


@dataclass
class ReportConfig:
    """Settings of the ``report`` command.

    Args:
        workdir: the run directory (the pipeline's ``workdir``).
        table1_samples: cells per sampling method in Table 1 (0 leaves the table out).
        table2_methods: search methods of Table 2 (keys of :data:`lightning_nas.studies.SEARCH_METHODS`; [] leaves
            the table out).
        table2_seeds: seeds per method.
        table2_iterations: iterations per search (default: the run's search stage, else 40).
        table2_population: population (default: the run's search stage, else 16).
        table2_budget_params: a params-only budget (default: the run's first search budget with all its limits,
            else 1M params).
        compare_seeds: training seeds of "found vs alternatives" (:mod:`lightning_nas.compare`; [] leaves it out).
        compare_epochs: their training epochs (default: the run's evaluate config's; the same for all).
        compare_draws: uniform random architectures within budget (no proxy) in its ``random-no-proxy`` row, each
            trained once (seeds in turn).
        hand_picked: the hand-picked architecture to compare with.
        latent_points: cells on the latent map.
        latency: the "accuracy and latency on this machine" section (host measurements, a few minutes the first
            time; stored in the archive and reused).
        refresh: recompute the cached studies.
        seed: seed of the studies and the map.
    """

    workdir: str = "runs/demo"
    table1_samples: int = 10
    table2_methods: list[str] = field(default_factory=lambda: list(TABLE2_METHODS))
    table2_seeds: list[int] = field(default_factory=lambda: [0])
    table2_iterations: int | None = None
    table2_population: int | None = None
    table2_budget_params: float | None = None
    compare_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    compare_epochs: int | None = None
    compare_draws: int = 5
    hand_picked: str = "configs/archs/digits.json"
    latent_points: int = 800
    latency: bool = True
    refresh: bool = False
    seed: int = 0

    def __post_init__(self):
        if not Path(self.workdir).is_dir():
            raise FileNotFoundError(f"workdir: {self.workdir} is not a directory; give the run directory of a pipeline "
                                    "run (e.g. runs/demo after make demo)")
        if self.table1_samples < 0 or self.latent_points < 10:
            raise ValueError("table1_samples must be ≥ 0 and latent_points ≥ 10")
        if self.compare_epochs is not None and self.compare_epochs < 1:
            raise ValueError(f"compare_epochs: {self.compare_epochs}; train at least 1 epoch (or leave it unset)")
        if self.compare_seeds and not Path(self.hand_picked).is_file():
            raise FileNotFoundError(f"hand_picked: {self.hand_picked} does not exist; give an arch.json (e.g. "
                                    "configs/archs/digits.json) or --compare_seeds []")


def _json(path: Path, cache: bool = False):
    """The JSON in ``path`` (``None`` when absent). A file that is not JSON — a stage killed while writing, an edit —
    is one paragraph naming it and the fix; a report cache (``cache``) that is not JSON counts as absent and is
    computed again."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        if cache:
            return None
        fix = ("delete it and rerun the pipeline: every stage runs again (zc and search resume from the archive)"
               if path.name == "state.json" else
               f"delete {path.parent} and rerun the pipeline: it runs that stage again and keeps the finished ones "
               "before it")
        raise ValueError(f"{path}: not valid JSON ({err}); the stage that writes it was interrupted or the file was "
                         f"edited — {fix}") from None


def _fingerprint(*paths: Path) -> str:
    """Digest of the sizes and modification times of ``paths`` (the artifacts a study read)."""
    text = "|".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" if p.exists() else f"{p}:-" for p in paths)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cached(path: Path, key: dict, compute, refresh: bool) -> dict:
    """``compute()`` unless ``path`` holds a result computed with the same ``key``."""
    stored = _json(path, cache=True)
    if isinstance(stored, dict) and stored.get("key") == key and not refresh:
        return stored["result"]
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "result": result}, indent=1, default=float))
    return result


def _versions() -> str:
    import lightning
    import torch

    from . import __version__

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return (f"lightning-nas {__version__} (commit {commit}), torch {torch.__version__}, "
            f"lightning {lightning.__version__}, "
            f"Python {platform.python_version()}, {platform.machine()}")


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.3e}"
    return str(value)


def _metrics_table(metrics: dict, keys: list[str] | None = None) -> str:
    keys = keys or [k for k, v in metrics.items() if isinstance(v, int | float | str) and not isinstance(v, bool)]
    rows = "".join(f"| {k} | {_fmt(metrics.get(k))} |\n" for k in keys if k in metrics)
    return "| metric | value |\n|---|---|\n" + rows if rows else ""


class _Report:
    """Markdown under construction, with figures linked relative to the report."""

    def __init__(self, workdir: Path):
        self.workdir, self.parts = workdir, []

    def add(self, text: str) -> None:
        self.parts.append(text.rstrip() + "\n\n")

    def figure(self, path: Path, caption: str) -> None:
        if path.is_file():
            self.add(f"![{caption}]({path.relative_to(self.workdir).as_posix()})\n\n*{caption}*")
        else:
            self.add(f"*{caption}: not produced ({path.relative_to(self.workdir).as_posix()} is missing).*")

    def text(self) -> str:
        return "".join(self.parts)


def _stages_section(report: _Report, w: Path) -> None:
    state = _json(RunDir(w).pipeline / "state.json") or {}
    lines = ["| stage | status | seconds | artifact |", "|---|---|---|---|"]
    total = 0.0
    for name, (_, artifact) in STAGES.items():
        record = state.get(name, {})
        present = (w / artifact).exists()
        status = "finished" if record.get("finished") else ("started, not finished" if record else
                                                             ("present" if present else "missing"))
        seconds = record.get("seconds")
        total += seconds or 0.0
        lines.append(f"| {name} | {status} | {_fmt(seconds, 4)} | `{artifact}`{'' if present else ' (missing)'} |")
    lines.append(f"| **total** | | **{total:.0f}** | |")
    report.add("## Stages\n\n" + "\n".join(lines))


def _final_section(report: _Report, w: Path) -> None:
    generated, evaluated = _json(RunDir(w).metrics("generate")), _json(RunDir(w).metrics("evaluate"))
    text = "## Final architecture\n\n"
    if generated:
        budget = ", ".join(f"{k} ≤ {v:.3g}" for k, v in (generated.get("budget") or {}).items() if v) or "none"
        task = generated.get("task") or {}
        text += (f"Generated for budget {budget} (task {task.get('name')}: {task.get('num_classes')} outputs, input "
                 f"{task.get('in_channels')}×{'×'.join(map(str, task.get('input_size') or []))}): "
                 f"**{generated.get('params', 0) / 1e6:.3f} M params, {generated.get('macs', 0) / 1e6:.1f} M MACs**, "
                 f"{generated.get('objective') or 'T-CET'} {_fmt(generated.get('score', generated.get('tcet')))}, "
                 f"from {generated.get('candidates')} candidates "
                 f"({generated.get('zc_evaluations')} ZC evaluations"
                 + (f"; the objective's top {generated['trained_candidates']} trained briefly and ranked by "
                    f"{generated.get('select_rank', 'val_metric')} in {_fmt(generated.get('select_seconds'))} s, "
                    f"rank {generated.get('selected_rank')} kept" if generated.get("trained_candidates") else "")
                 + f"; {_fmt(generated.get('seconds'))} s). Spec: `generate/arch.json`.\n\n")
    else:
        text += "The generate stage has not run.\n\n"
    if evaluated:
        text += (f"Trained on **{evaluated.get('task')}** for {evaluated.get('epochs')} epochs: test "
                 f"{evaluated.get('test_metric_name')} **{_fmt(evaluated.get('test_metric'), 4)}** "
                 f"({_fmt(evaluated.get('seconds'), 4)} s).")
    else:
        text += "The evaluate stage has not run."
    report.add(text)
    report.figure(w / "generate" / "arch.png", "the generated architecture: stages and cells")


def _latent_map(w: Path, config: ReportConfig) -> Path | None:
    """Latents of archived cells (labelled ones first) coloured by their cluster; None without G-VAE/clusters."""
    import numpy as np
    import torch

    from .archive import Archive
    from .cluster import gmm_from_fit, measured_or_predicted, plot_latent_map
    from .models.gvae import GVAEModule
    from .zc import ZCNormaliser
    from .zc.vector import Probe

    gvae_path, clusters_path = RunDir(w).checkpoint("gvae"), RunDir(w).clusters
    if not (gvae_path.is_file() and clusters_path.is_file() and (RunDir(w).archive).is_file()):
        return None
    out = RunDir(w).report / "latent_map.png"
    key = {"fingerprint": _fingerprint(gvae_path, clusters_path), "points": config.latent_points, "seed": config.seed}
    stamp = RunDir(w).report / "latent_map.json"
    if out.is_file() and (_json(stamp, cache=True) or {}).get("key") == key and not config.refresh:
        return out
    gvae = GVAEModule.from_checkpoint(gvae_path).eval()
    fit = _json(clusters_path)
    with Archive(RunDir(w).archive, create=False) as archive:
        probe_id = Probe.from_archive(archive).id
        normaliser = ZCNormaliser.from_dict(archive.get_normaliser(probe_id))
        labelled = archive.zc(probe_id)
        hashes = list(labelled)[: config.latent_points]
        for h, _ in archive.iter_cells(limit=config.latent_points):
            if len(hashes) >= config.latent_points:
                break
            if h not in labelled:
                hashes.append(h)
        cells = [archive.get_cell(h) for h in hashes]
    with torch.no_grad():
        mu = gvae.encode(cells).cpu()
        predicted = gvae.predict_zc(mu).cpu().numpy()
    measured = np.full_like(predicted, np.nan)  # labelled cells come first
    n_labelled = sum(h in labelled for h in hashes)
    measured[:n_labelled] = normaliser.transform([labelled[h] for h in hashes[:n_labelled]]).numpy()
    plot_latent_map(out, mu.numpy(), gmm_from_fit(fit).predict(measured_or_predicted(measured, predicted)),
                    f"G-VAE latents (t-SNE) of {len(cells)} archived cells; colour: GMM cluster (K = {fit['K']}) of "
                    f"the measured ZC vector ({n_labelled} cells) or q's prediction", config.seed)
    stamp.write_text(json.dumps({"key": key}))
    return out


def _table1(w: Path, config: ReportConfig, log) -> str:
    from .archive import Archive
    from .generator import CellGenerator
    from .studies import best_archived_cell, sampling_study, sampling_table
    from .zc import ZCNormaliser
    from .zc.vector import Probe

    paths = CellGenerator.artifact_paths(w)
    if config.table1_samples == 0:
        return "Left out (`--table1_samples 0`)."
    if not (paths["gvae"].is_file() and paths["ccnf"].is_file()):
        return "Needs the G-VAE and CCNF checkpoints of this run (the gvae and ccnf stages)."

    def compute() -> dict:
        generator = CellGenerator.load(paths["gvae"], paths["ccnf"])
        with Archive(RunDir(w).archive, create=False) as archive:
            probe = Probe.from_archive(archive)
            normaliser = ZCNormaliser.from_dict(archive.get_normaliser(probe.id))
            reference, _ = best_archived_cell(archive, probe.id)
        log(f"[report] Table 1: {config.table1_samples} cells per method around the archive's best cell by T-CET")
        return sampling_study(generator, probe, normaliser, reference, config.table1_samples, config.seed,
                              log=lambda line: log("[report]" + line))

    key = {"samples": config.table1_samples, "seed": config.seed,
           "fingerprint": _fingerprint(paths["gvae"], paths["ccnf"], RunDir(w).metrics("zc"))}
    study = _cached(RunDir(w).report / "table1.json", key, compute, config.refresh)
    return (sampling_table(study, "reference r (best archived T-CET)") +
            f"\nReference r: the archived cell with the highest T-CET, `{json.dumps(study['reference']['cell'])}`. "
            f"{config.table1_samples} samples per method, seed {config.seed}, τ = 1; every ZC entry measured on α_x "
            f"(Eq. 1) of the sampled cells; {study['seconds']:.0f} s. The paper's claim: CCNF samples lie closest to r "
            "(smallest L1) with a generation success near Random's. Accuracy needs the sampled networks trained.")


def _search_settings(w: Path, config: ReportConfig) -> tuple[dict, int, int, dict | None]:
    """Table 2's budget (limits by unit), iterations, population and task (fields, or None for the probe's shape):
    the run's search stage (its first budget) unless overridden."""
    path = RunDir(w).pipeline / "search.yaml"
    search = yaml.safe_load(path.read_text()) if path.is_file() else {}
    first = (search.get("budgets") or [{}])[0]
    limits = {unit: first.get(f"max_{unit}") for unit in ("params", "macs", "flops") if first.get(f"max_{unit}")}
    if config.table2_budget_params or not limits:
        limits = {"params": float(config.table2_budget_params or 1e6)}
    task = first.get("task", search.get("task"))
    if task is not None:
        from .space.task import Task

        task = Task.resolve(task).to_json()
    return (limits, config.table2_iterations or search.get("iterations") or 40,
            config.table2_population or search.get("population") or 16, task)


def _table2(w: Path, config: ReportConfig, log) -> str:
    from .archive import Archive
    from .generator import CellGenerator
    from .search import Budget
    from .studies import search_study, search_table
    from .zc.vector import Probe

    paths = CellGenerator.artifact_paths(w)
    if not config.table2_methods:
        return "Left out (`--table2_methods []`)."
    if not all(p.is_file() for p in paths.values()):
        return "Needs this run's G-VAE, CCNF and clusters (the gvae, cluster and ccnf stages)."
    limits, iterations, population, task = _search_settings(w, config)
    budget_text = ", ".join(f"{unit} ≤ {value:.3g}" for unit, value in limits.items())
    key = {"methods": config.table2_methods, "seeds": config.table2_seeds, "iterations": iterations,
           "population": population, "budget": limits, "task": task, "fingerprint": _fingerprint(*paths.values())}

    def compute() -> dict:
        generator = CellGenerator.from_workdir(w)
        with Archive(RunDir(w).archive, create=False) as archive:
            probe = Probe.from_archive(archive)
        log(f"[report] Table 2: {', '.join(config.table2_methods)} × seeds {config.table2_seeds}, {iterations} "
            f"iterations, budget {budget_text}")
        start = time.perf_counter()
        budget = Budget(budget_text, **{f"max_{unit}": value for unit, value in limits.items()})
        from .space.task import Task

        rows = search_study(generator, probe, budget, config.table2_methods,
                            config.table2_seeds, iterations, population, task=Task.from_json(task) if task else None,
                            log=lambda row: log(f"[report]   {row['method']} seed {row['seed']}: best T-CET "
                                                f"{row['tcet@100%']:.4g} in {row['seconds']:.0f} s"))
        return {"rows": rows, "seconds": round(time.perf_counter() - start, 1)}

    study = _cached(RunDir(w).report / "table2.json", key, compute, config.refresh)
    return (search_table(study["rows"]) +
            f"\nBudget {budget_text}; {iterations} iterations after α₀, population {population}, seeds "
            f"{config.table2_seeds}, all methods in the same harness on the archive's probe; mean ± std over seeds; "
            f"{study['seconds']:.0f} s. The paper's claim: HL-Evo reaches a higher T-CET than the GraphNet-space "
            "baselines with fewer evaluations.")


def _compare(w: Path, config: ReportConfig, log) -> str:
    """Found vs alternatives (:mod:`lightning_nas.compare`), cached in ``report/found_vs_alternatives.json`` (the
    rows) with the key beside it."""
    from .compare import found_vs_alternatives, run_select

    if not config.compare_seeds:
        return "Left out (`--compare_seeds []`)."
    needed = [RunDir(w).arch, RunDir(w).metrics("generate"), RunDir(w).pipeline / "evaluate.yaml"]
    if not all(p.is_file() for p in needed):
        return "Needs the generate and evaluate stages."
    select = run_select(w)
    key = {"seeds": config.compare_seeds, "epochs": config.compare_epochs, "hand_picked": config.hand_picked,
           "draws": config.compare_draws, "select": asdict(select),
           # the archive is written all the time (host latencies, layer timings): its probe and labels are the zc
           # stage's, which its metrics.json fingerprints
           "artifacts": _fingerprint(*needed, RunDir(w).metrics("zc"), Path(config.hand_picked))}
    out, key_file = RunDir(w).report / "found_vs_alternatives.json", RunDir(w).report / "found_vs_alternatives.key.json"
    if config.refresh or not out.is_file() or _json(key_file, cache=True) != key or _json(out, cache=True) is None:
        rows = found_vs_alternatives(w, config.hand_picked, config.compare_seeds, config.compare_epochs, log,
                                     config.compare_draws)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=1, default=float))
        key_file.write_text(json.dumps(key))
    rows = json.loads(out.read_text())
    evaluate = yaml.safe_load((RunDir(w).pipeline / "evaluate.yaml").read_text())
    epochs = config.compare_epochs or (evaluate.get("trainer") or {}).get("max_epochs")
    objective = next((r.get("objective") for r in rows if r.get("objective")), "tcet")
    table = (f"| architecture | params (M) | MACs (M) | within budget | {objective} | ‖∇θL‖ at init | "
             "test metric, mean | per training |\n|---|---|---|---|---|---|---|---|\n")
    for r in rows:
        draws = f" (mean of {r['draws']} draws)" if r.get("draws", 1) > 1 else ""
        table += (f"| {r['name']}{draws} | {r['params'] / 1e6:.3f} | {r['macs'] / 1e6:.1f} | "
                  f"{'yes' if r['within_budget'] else 'no'}"
                  f" | {_fmt(r.get('score', r.get('tcet')))} | {_fmt(r.get('grad_norm_at_init'))} | "
                  f"**{r['test_metric_mean']:.4f}** | {', '.join(f'{m:.4f}' for m in r['test_metrics'])} |\n")
    return (table + f"\nAll trained with the run's evaluate settings for {epochs} epochs, seeds "
            f"{config.compare_seeds}, tested with the last weights. *random*: the best by {objective} (the objective "
            "generate ranked by) of as many random architectures within the budget as the generate stage scored "
            "candidates; *random-no-proxy*: uniform random architectures within the budget, no proxy, each trained "
            f"once (the plain null); *evo*: Evo({objective}) in the GraphNet space after that many evaluations; "
            "*hand-picked*: `" + config.hand_picked + "` as designed. "
            + (f"As generate trained its objective's top {select.top_n} ({select.rank}), *random* and *evo* keep what "
               f"the same selection keeps from their own top {select.top_n}: each row but the hand-picked and "
               f"no-proxy ones counts {select.top_n} trained candidates. " if select.top_n else "")
            + "‖∇θL‖ at init: the gradient norm of each "
            "network before training (`lightning_nas.zc.trainability.init_grad_norm`; the median over draws) — "
            "SNIP-based proxies such as T-CET grow with gradient magnitude, so a search that maximises them can "
            "favour badly conditioned networks that train slowly (issue #29, `benchmarks/results/objectives.md`). "
            "Rows: `report/found_vs_alternatives.json`.")


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (cost, value) points no other point beats in both (lower cost, higher value), by cost."""
    front, best = [], float("-inf")
    for cost, value in sorted(points, key=lambda p: (p[0], -p[1])):
        if value > best:
            front.append((cost, value))
            best = value
    return front


def _latency(w: Path, config: ReportConfig, log) -> str:
    """Host latency of the run's networks (:mod:`lightning_nas.hw`): the search history's predicted latencies (the
    host cost table, :func:`~lightning_nas.hw.cost.hardware_cost_for`), the measured latency of the trained
    architectures of "found vs alternatives", and a budget-satisfaction check — the history's architectures the
    table admits under a budget (the median guarded prediction) measured: how many are within it. Measurements are
    stored in the archive under this machine's fingerprint, so a rerun measures nothing again. Cached in
    ``report/latency.json``."""
    import random

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from .archive import Archive
    from .hw.cost import hardware_cost_for
    from .hw.measure import host_fingerprint, measure_arch
    from .space.arch import Arch
    from .space.task import Task
    from .zc.vector import Probe

    if not (RunDir(w).archive).is_file() or not (RunDir(w).metrics("search")).is_file():
        return "Needs the search stage."
    generated = _json(RunDir(w).metrics("generate")) or {}
    compared = _json(RunDir(w).report / "found_vs_alternatives.json") or []
    key = {"fingerprint": _fingerprint(RunDir(w).metrics("search"), RunDir(w).arch,
                                       RunDir(w).report / "found_vs_alternatives.json"),
           "host": host_fingerprint("eager", 1).id, "seed": config.seed}

    def compute() -> dict:
        with Archive(RunDir(w).archive) as archive:
            task = Task.from_json(generated["task"]) if generated.get("task") else \
                Task.from_probe(Probe.from_archive(archive))
            cost = hardware_cost_for("host", task, w, archive, progress=False)
            history = []
            for r in archive.archs(stage="search"):
                m = r["metrics"]
                if m.get("status") != "ok" or m.get("score") is None:
                    continue
                arch = Arch.from_json(r["spec"])
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    predicted = cost(task_network(task, arch), task.input_shape)
                history.append({"spec": r["spec"], "tcet": m["score"], "params": m["params"],
                                "latency_ms": predicted["latency_ms"],
                                "latency_ms_estimate": predicted["latency_ms_estimate"]})
            # one architecture per row (random-no-proxy's several draws have no single latency)
            specs = {r["name"]: r["spec"] for r in compared if isinstance(r.get("spec"), dict)}
            if compared and not specs and config.compare_seeds:  # rows written before they carried specs:
                from .compare import alternatives  # the same seeded draws give the same four architectures

                specs = {name: arch.to_json() for name, arch in alternatives(w, Path(config.hand_picked),
                                                                            config.compare_seeds[0], log).items()
                         if not isinstance(arch, list)}
            trained = [{"name": r["name"], "test_metric": r["test_metric_mean"],
                        "latency_ms": measure_arch(Arch.from_json(specs[r["name"]]), task, archive=archive).ms}
                       for r in compared if r["name"] in specs]
            budget = sorted(h["latency_ms"] for h in history)[len(history) // 2] if history else None
            admitted = [h for h in history if h["latency_ms"] <= budget] if history else []
            sample = random.Random(config.seed).sample(admitted, min(20, len(admitted)))
            measured = [measure_arch(Arch.from_json(h["spec"]), task, archive=archive).ms for h in sample]
        log(f"[report] host latency: {len(history)} history architectures predicted, {len(trained)} trained and "
            f"{len(measured)} admitted ones measured")
        return {"task": task.name, "margin": cost.margin.get("latency_ms"),
                "history": [{k: v for k, v in h.items() if k != "spec"} for h in history], "trained": trained,
                "budget_ms": budget, "admitted": len(admitted), "measured_ms": measured,
                "within": sum(m <= budget for m in measured)}

    result = _cached(RunDir(w).report / "latency.json", key, compute, config.refresh)
    history, trained = result["history"], result["trained"]
    if not history:
        return "The search history has no scored architecture."
    fig, axes = plt.subplots(1, 2 if trained else 1, figsize=(11 if trained else 5.5, 4), squeeze=False)
    ax = axes[0][0]
    ax.scatter([h["latency_ms"] for h in history], [h["tcet"] for h in history], s=8, alpha=0.5,
               label="search history")
    front = pareto_front([(h["latency_ms"], h["tcet"]) for h in history])
    ax.plot(*zip(*front, strict=True), "r.-", label="Pareto front")
    ax.axvline(result["budget_ms"], color="gray", ls="--", label=f"budget {result['budget_ms']:.3g} ms")
    ax.set(xlabel="predicted host latency (ms, with margin)", ylabel="T-CET", yscale="log",
           title=f"T-CET vs latency ({len(history)} architectures)")
    ax.legend(fontsize=8)
    if trained:
        ax = axes[0][1]
        for t in trained:
            ax.scatter(t["latency_ms"], t["test_metric"], s=30)
            ax.annotate(t["name"], (t["latency_ms"], t["test_metric"]), fontsize=8)
        front = pareto_front([(t["latency_ms"], t["test_metric"]) for t in trained])
        ax.plot(*zip(*front, strict=True), "r--", lw=1)
        ax.set(xlabel="measured host latency (ms, 10th percentile)", ylabel="test metric",
               title="trained architectures")
    fig.tight_layout()
    fig.savefig(RunDir(w).report / "latency_pareto.png", dpi=110)
    plt.close(fig)
    measured = result["measured_ms"]
    text = (f"Host cost table (task {result['task']}; calibrated safety margin "
            f"{100 * (result['margin'] or 0):.1f} %). **Latency budget satisfaction (host): "
            f"{result['within']}/{len(measured)}** of the search-history architectures the table admits under a "
            f"{result['budget_ms']:.3g} ms budget (the history's median guarded prediction; {result['admitted']} "
            f"admitted, {len(measured)} of them measured) are within it when measured (eager, batch 1, 1 thread).")
    if generated.get("latency_ms_measured") is not None:
        text += (f" The generated architecture (budget {generated['budget'].get('latency_ms')} ms on "
                 f"{generated.get('device')}): predicted {generated['latency_ms_predicted']:.3g} ms, measured "
                 f"{generated['latency_ms_measured']:.3g} ms.")
    if trained:
        text += "\n\n| architecture | measured host latency (ms) | test metric |\n|---|---|---|\n" + "".join(
            f"| {t['name']} | {t['latency_ms']:.3f} | {t['test_metric']:.4f} |\n" for t in trained)
    return text


def write_report(config: ReportConfig, log=print) -> dict:
    """Write ``<workdir>/REPORT.md`` (and its figures and cached studies under ``<workdir>/report/``)."""
    w = Path(config.workdir)
    start = time.perf_counter()
    report = _Report(w)
    report.add(f"# lightning-nas run report: `{w.as_posix()}`\n\nWritten {time.strftime('%Y-%m-%d %H:%M %Z')} by "
               f"`python -m lightning_nas report {w.as_posix()}` — {_versions()}.")
    _stages_section(report, w)
    _final_section(report, w)

    zc = _json(RunDir(w).metrics("zc"))
    report.add("## Zero-cost proxies (stage zc)\n\n" + (_metrics_table(zc) if zc else "Not run."))
    gvae = _json(RunDir(w).metrics("gvae"))
    report.add("## G-VAE (stage gvae)\n\n" + (_metrics_table(gvae) if gvae else "Not run."))
    latent_map = _latent_map(w, config)
    if latent_map is not None:
        report.figure(latent_map, "latent map (paper Fig. 2): t-SNE of G-VAE latents coloured by GMM cluster")
    clusters = _json(RunDir(w).metrics("cluster"))
    report.add("## Clusters (stage cluster)\n\n" + (_metrics_table(clusters) if clusters else "Not run."))
    report.figure(w / "cluster" / "bic_aic.png", "BIC and AIC against K, the chosen K marked")
    ccnf = _json(RunDir(w).metrics("ccnf"))
    report.add("## CCNF (stage ccnf)\n\n" + (_metrics_table(ccnf) if ccnf else "Not run."))
    report.add("## Table 1 at this run's scale: sampling around a reference cell\n\n" + _table1(w, config, log))

    search = _json(RunDir(w).metrics("search"))
    report.add("## HL-Evo search (stage search)\n\n" + (_metrics_table(search) if search else "Not run."))
    for pareto in sorted((w / "search").glob("pareto_*.png")):
        report.figure(pareto, f"Pareto front (T-CET vs params), budget {pareto.stem.removeprefix('pareto_')}")
    report.add("## Table 2 at this run's scale: search methods under one budget\n\n" + _table2(w, config, log))
    sg = _json(RunDir(w).metrics("sg"))
    report.add("## Sequence generator (stage sg)\n\n" + (_metrics_table(sg) if sg else "Not run."))
    report.add("## Found vs alternatives: does the search pay?\n\n" + _compare(w, config, log))
    if config.latency:
        report.add("## Accuracy and latency on this machine\n\n" + _latency(w, config, log))
        report.figure(RunDir(w).report / "latency_pareto.png", "accuracy–latency on this machine (host, batch 1): "
                      "the search history's T-CET against predicted latency, and the trained architectures' test "
                      "metric against measured latency, Pareto fronts marked")

    path = w / "REPORT.md"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(report.text())
    tmp.replace(path)
    seconds = round(time.perf_counter() - start, 1)
    log(f"[report] wrote {path} in {seconds:.0f} s")
    result = {"report": str(path), "seconds": seconds, "settings": asdict(config)}
    generated, evaluated = _json(RunDir(w).metrics("generate")), _json(RunDir(w).metrics("evaluate"))
    if generated:  # the answer, last on the screen
        result["architecture"] = {k: generated.get(k) for k in ("arch", "params", "macs", "flops", "objective",
                                                                 "score", "tcet")}
    if evaluated:
        result["evaluation"] = {k: evaluated.get(k) for k in ("task", "test_metric_name", "test_metric", "epochs")}
    return result


def main(argv: list[str]) -> dict:
    from .cli import run_stage

    if argv and not argv[0].startswith("-"):  # report <workdir> [...]
        argv = ["--workdir", argv[0], *argv[1:]]
    return run_stage(argv, ReportConfig, write_report, "report", __doc__)
