"""``python -m lightning_nas score A.json [B.json …] --task digits [--objective NAME] [--workdir RUN]``: score
architectures without training them (issue #29's contract).

One JSON line per architecture: ``{"arch", "objective", "score", "status", "proxies": {name: value},
"grad_norm_at_init", "params", "macs"}``. The probe is the run's (``--workdir``: its archive) or that of
``configs/zc/tiny.yaml`` (digits, seed 0, 32 images); ``score`` is the objective's value
(:mod:`lightning_nas.zc.objectives`; default :data:`~lightning_nas.zc.objectives.DEFAULT_OBJECTIVE`), ``null`` with
``status`` ``rejected``/``failed`` and a ``reason`` when it has none. ``proxies`` are every proxy of
:mod:`lightning_nas.zc.proxies` on the same probe network; ``grad_norm_at_init`` is
:func:`lightning_nas.zc.trainability.init_grad_norm` on the task's network (the guard's measure). Same inputs, same
numbers, in any process of the same thread count.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

PROXY_NAMES = ("naswot", "snip", "snip_ssnr", "tcet", "tcet_mean", "grad_norm", "zen", "zico", "params", "macs",
               "flops")
DEFAULT_PROBE = {"source": "digits", "seed": 0, "batch_size": 32}  # configs/zc/tiny.yaml's probe


def score_archs(paths: list[str | Path], task: str = "digits", objective: str | None = None,
                workdir: str | Path | None = None) -> list[dict]:
    """The rows of the module docstring, one per path, in order."""
    import torch

    from .archive import Archive
    from .search.evaluate import ArchEvaluator, Budget
    from .space.arch import Arch
    from .space.network import task_network
    from .space.task import Task, named_task
    from .stages import RunDir
    from .zc.objectives import DEFAULT_OBJECTIVE, objective_for, shipped_range
    from .zc.proxies import evaluate_proxies
    from .zc.trainability import init_grad_norm
    from .zc.vector import Probe

    objective = objective or DEFAULT_OBJECTIVE
    if workdir is not None:
        with Archive(RunDir(Path(workdir)).require("archive"), create=False) as archive:
            probe = Probe.from_archive(archive)
    else:
        probe = Probe.from_source(**DEFAULT_PROBE)
    the_task = named_task(task) if isinstance(task, str) and not task.lstrip().startswith("{") else Task.from_json(task)
    goal = objective_for(objective)
    trainable = shipped_range() if goal.guarded else None
    evaluator = ArchEvaluator(probe, Budget("score"), None, the_task)  # builds and counts; the proxies run once below
    archs = [Arch.load(p) for p in paths]  # every spec checked before any is scored: a bad one fails fast
    rows = []
    for path, arch in zip(paths, archs, strict=True):
        arch = arch if arch.task == the_task else dataclasses.replace(arch, task=the_task)  # scored as trained
        evaluation = evaluator(arch)
        row = {"arch": str(path), "objective": objective, "score": None, "status": evaluation.status,
               "proxies": {}, "grad_norm_at_init": None, "params": evaluation.params, "macs": evaluation.macs}
        if evaluation.status == "unscored":  # built: every proxy on the probe network, one pass for all
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(probe.seed)
                network = evaluator.probe_network(arch, task_network(the_task, arch))
            values, _ = evaluate_proxies(network, probe.x, probe.y, PROXY_NAMES)
            guard = init_grad_norm(arch, the_task)
            score, rejection = goal.score(values, trainable, guard) if trainable else goal.score(values)
            ok = not rejection and math.isfinite(score)
            row.update({"score": score if ok else None, "status": "ok" if ok else "rejected" if rejection else "failed",
                        "proxies": {k: (v if math.isfinite(v) else None) for k, v in values.items()},
                        "grad_norm_at_init": guard})
            evaluation = dataclasses.replace(evaluation, reason=rejection or ("" if ok else "non-finite score"))
        if evaluation.reason:
            row["reason"] = evaluation.reason
        rows.append(row)
    return rows


def main(argv: list[str]) -> list[dict]:
    from .zc.objectives import DEFAULT_OBJECTIVE, OBJECTIVES

    parser = argparse.ArgumentParser(prog="python -m lightning_nas score", description=__doc__.split("\n\n")[0])
    parser.add_argument("archs", nargs="+", help="arch.json files (as evaluate takes them)")
    parser.add_argument("--task", default="digits", help="a named task (digits, cifar10, …) or a task JSON")
    parser.add_argument("--objective", default=None, choices=OBJECTIVES,
                        help=f"what to score (default: {DEFAULT_OBJECTIVE})")
    parser.add_argument("--workdir", default=None, help="a run directory whose probe to use (its archive.sqlite)")
    args = parser.parse_args(argv)
    for path in args.archs:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such architecture file; give arch.json files (generate writes one)")
    rows = score_archs(args.archs, args.task, args.objective, args.workdir)
    for row in rows:
        print(json.dumps(row))
    return rows
