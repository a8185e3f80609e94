"""Found vs alternatives: does the search pay? The run's generated architecture against the hand-picked default, the
best of an equal number of random architectures within the same budget by the run's objective (generate's, e.g.
T-CET), uniform random architectures within the budget with no proxy at all (the plain null: ``NO_PROXY_DRAWS``
draws, each trained once), and Evo(objective)'s pick after the same number of proxy evaluations — all trained and
tested with identical settings (the run's resolved evaluate config, the same epochs and seeds), reported with params,
MACs, the objective's score and the test metric over the seeds.

What is equal: the budget and task (``<workdir>/generate/metrics.json``), the number of proxy evaluations the
alternatives get (the generate stage's ``candidates``: random draws within budget for "random", evolution
iterations for "evo", GraphNet cells from the space's own sampler and mutations), the training recipe. What is not:
"found" also stands on the pretrained generators and the search history (counted in the pipeline's stages); the
hand-picked architecture may exceed the budget (its cost says so) — it is what a user would train without a search.
When the run's generate trained its objective's top N (``select.top_n`` > 0, :mod:`lightning_nas.select`), "random"
and "evo" get the same final selection: their own objective's top N (of the random draws; of Evo's final
population) ranked the same way, so every row has as many trained candidates as "found".
"""

from __future__ import annotations

import dataclasses
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from .archive import Archive
from .search.evaluate import ArchEvaluator, Budget
from .search.hl_evo import HLEvoConfig, hl_evo, random_within_budget
from .select import SelectConfig, best_index, diverse_top, rank_candidates, training_config
from .space.arch import Arch
from .space.task import Task
from .stages import RunDir
from .studies import graphnet_cell
from .zc.trainability import init_grad_norm
from .zc.vector import Probe

NAMES = ("found", "hand-picked", "random", "random-no-proxy", "evo")
NO_PROXY_DRAWS = 5
"""Uniform random architectures within budget in the ``random-no-proxy`` row (each trained once, seeds in turn)."""


def _evaluator(workdir: Path) -> tuple[ArchEvaluator, int]:
    generated = json.loads((RunDir(workdir).metrics("generate")).read_text())
    budget = {k: v for k, v in generated["budget"].items() if v is not None}
    with Archive(RunDir(workdir).archive, create=False) as archive:
        probe = Probe.from_archive(archive)
    limits = Budget("compare", budget.get("params"), budget.get("macs"), budget.get("flops"))
    objective = generated.get("objective") or "tcet"  # a generate run from before objectives were recorded: T-CET
    return ArchEvaluator(probe, limits, objective, Task.from_json(generated["task"])), int(generated["candidates"])


def run_select(workdir: Path) -> SelectConfig:
    """The final selection the run's generate used (``<workdir>/pipeline/generate.yaml``'s ``select``; none when the
    run has no resolved generate config)."""
    resolved = Path(workdir) / "pipeline" / "generate.yaml"
    tree = yaml.safe_load(resolved.read_text()) if resolved.is_file() else {}
    return SelectConfig(**(tree.get("select") or {}))


def selected(scored: list[tuple[Arch, float]], select: SelectConfig, out: Path, log=print) -> Arch:
    """The objective's best of ``scored`` — or, with ``select.top_n`` > 0, the pick of generate's own final
    selection among its top N (each architecture its own group)."""
    order = sorted(range(len(scored)), key=lambda i: (-scored[i][1], i))
    if select.top_n == 0:
        return scored[order[0]][0]
    ranked = diverse_top(order, list(range(len(scored))), select.top_n)
    results = rank_candidates([scored[i][0] for i in ranked], select, out, log)
    return scored[ranked[best_index(results)]][0]


def alternatives(workdir: Path, hand_picked: Path, seed: int = 0, log=print,
                 draws: int = NO_PROXY_DRAWS) -> dict[str, Arch | list[Arch]]:
    """The architectures of each row, for the run's task (see the module docstring): one per name, a list of
    ``draws`` for ``random-no-proxy`` (left out with 0)."""
    evaluator, n = _evaluator(workdir)
    select = run_select(workdir)
    selection = Path(workdir) / "report" / "compare" / f"select-s{seed}"
    objective = evaluator.objective
    task = evaluator.task
    hand = Arch.load(hand_picked)
    archs = {"found": Arch.load(workdir / "generate" / "arch.json"),
             "hand-picked": dataclasses.replace(hand, task=task)}  # as designed, trained on the run's task
    rng = random.Random(f"compare-random:{seed}")
    scored = []
    for _ in range(n):  # n random architectures within the budget, the best by the objective
        child, _ = random_within_budget(rng, 1, graphnet_cell, 128, evaluator)
        arch = evaluator.materialise(child.hl, child.cells)
        evaluation = evaluator(arch)
        if evaluation.status == "ok":
            scored.append((arch, evaluation.score))
    if not scored:
        raise RuntimeError(f"compare: none of {n} random architectures within the budget could be scored")
    archs["random"] = selected(scored, select, selection / "random", log)
    budget_only = ArchEvaluator(evaluator.probe, evaluator.budget, None, task)  # the budget check, no proxy
    rng = random.Random(f"compare-random-no-proxy:{seed}")
    if draws:
        children = [random_within_budget(rng, 1, graphnet_cell, 128, budget_only)[0] for _ in range(draws)]
        archs["random-no-proxy"] = [budget_only.materialise(child.hl, child.cells) for child in children]
    search = workdir / "pipeline" / "search.yaml"  # α₀ as the run's search started (one cluster: GraphNet cells)
    search = yaml.safe_load(search.read_text()) if search.is_file() else {}
    initial = tuple((0, c, s, r) for _, c, s, r in search.get("initial", HLEvoConfig.initial))
    evo = HLEvoConfig(population=max(2, min(16, n // 2)), iterations=n - 1, seed=seed, initial=initial,
                      initial_final_channels=search.get("initial_final_channels", 128), two_phase=False)
    with tempfile.TemporaryDirectory() as tmp, Archive(Path(tmp) / "evo.sqlite", op_set="graphnet") as study:
        state = hl_evo(evo, evaluator, graphnet_cell, 1, study, "evo", method=f"Evo({objective})")
    if state.best is None:
        raise RuntimeError(f"compare: Evo({objective}) scored no architecture in {n} evaluations")
    population = [(evaluator.materialise(c.hl, c.cells), score) for c, score in state.population]  # holds the best
    archs["evo"] = selected(population, select, selection / "evo", log)
    log(f"[compare] alternatives ready: {n} random draws within budget, {draws} with no proxy, "
        f"Evo({objective}) over {n} evaluations"
        + (f"; random and evo's top {select.top_n} ranked by {select.rank} as generate's" if select.top_n else ""))
    return archs


def train_and_test(base: dict, arch: Arch, seed: int, root: Path, name: str) -> float:
    """Train ``arch`` with the evaluate config ``base`` and ``seed`` in ``root``; the test metric of the last
    weights (no checkpoint selection, identical for every architecture)."""
    from .lightning_cli import EvaluateCLI

    root.mkdir(parents=True, exist_ok=True)
    arch.save(root / "arch.json")
    tree, _, _ = training_config(base, root / "arch.json", root, name, seed)
    cli = EvaluateCLI(args=tree, run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    results = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    return float(results[f"test/{getattr(cli.model, 'metric_name', 'acc')}"])


def found_vs_alternatives(workdir: str | Path, hand_picked: str | Path, seeds: list[int], epochs: int | None = None,
                          log=print, draws: int = NO_PROXY_DRAWS) -> list[dict]:
    """Train the architectures of :func:`alternatives` with the run's evaluate settings (``epochs`` overrides its
    max_epochs, for all alike) for each seed (the no-proxy draws once each); rows as the contract of
    ``report/found_vs_alternatives.json`` (a ``random-no-proxy`` row averages its draws: mean params, MACs, score
    and test metric, median ‖∇θL‖)."""
    workdir = Path(workdir)
    config = workdir / "pipeline" / "evaluate.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"{config}: no resolved evaluate config; run the pipeline through evaluate first")
    base = yaml.safe_load(config.read_text())
    if epochs is not None:
        base.setdefault("trainer", {})["max_epochs"] = epochs
    evaluator, _ = _evaluator(workdir)
    # the objective of an over-budget arch (the hand-picked one)
    unbounded = ArchEvaluator(evaluator.probe, Budget("any"), evaluator.objective, evaluator.task)
    rows = []
    for name, found in alternatives(workdir, Path(hand_picked), seeds[0], log, draws).items():
        # one architecture trained with every seed, or (random-no-proxy) draw i trained once with seed i mod |seeds|
        runs = [(arch, seed, f"{name}-s{seed}") for arch in [found] for seed in seeds] if isinstance(found, Arch) \
            else [(arch, seeds[i % len(seeds)], f"{name}-d{i}-s{seeds[i % len(seeds)]}") for i, arch in
                  enumerate(found)]
        archs = [found] if isinstance(found, Arch) else list(found)
        evaluations = [evaluator(arch) for arch in archs]
        scored = [e if e.status != "over_budget" else unbounded(arch) for arch, e in zip(archs, evaluations,
                                                                                          strict=True)]
        scores = [e.score for e in scored if e.score is not None]  # none for a network the guard rejects
        start = time.perf_counter()
        metrics = [train_and_test(base, arch, seed, workdir / "report" / "compare" / tag, f"compare-{tag}")
                   for arch, seed, tag in runs]
        grads = [init_grad_norm(arch, evaluator.task, seeds[0]) for arch in archs]
        score = statistics.mean(scores) if scores else None
        rows.append({"name": name, "objective": evaluator.objective, "draws": len(archs),
                     "params": statistics.mean(e.params for e in evaluations),
                     "macs": statistics.mean(e.macs for e in evaluations),
                     "score": score, "tcet": score if evaluator.objective == "tcet" else None,
                     "within_budget": all(e.status != "over_budget" for e in evaluations),
                     "rejected": sum(e.status == "rejected" for e in scored),
                     "grad_norm_at_init": statistics.median(grads),
                     "test_metric_mean": statistics.mean(metrics), "test_metrics": metrics,
                     "train_seeds": [seed for _, seed, _ in runs],
                     "spec": archs[0].to_json() if len(archs) == 1 else [a.to_json() for a in archs],
                     "seconds": round(time.perf_counter() - start, 1)})
        log(f"[compare] {name}: test {statistics.mean(metrics):.4f} over {len(runs)} training(s)")
    return rows
