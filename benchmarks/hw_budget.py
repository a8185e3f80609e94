"""Latency budgets on the host, checked by measurement (issue [hw], item 3): of the generated architectures the
host predictor admits, how many are within the budget when *measured*?

    python benchmarks/hw_budget.py [--workdir runs/demo] [--seeds 0-2] [--quantiles 0.3,0.6] [--candidates 20]

Uses a trained run directory (``make demo``'s). The host's hardware cost for the generate task is fitted on this
machine's measurements of random architectures (:func:`lightning_nas.hw.cost.hardware_cost_for`, stored in
``<workdir>/hw/`` and the archive); the budgets are quantiles of those measured latencies. For each budget and seed,
``generate`` (the SG, the CCNF, T-CET; no params/MACs limit) draws ``--candidates`` architectures; every candidate
the predictor admits (its guarded prediction, with the table's calibrated safety margin, within the budget) is then
measured (eager, batch 1, 1 thread, median of 30 runs) and counted within the budget or
not — budget satisfaction on measured latency — and so is the architecture generate picks. ``--pause`` stops this
user's processes matching a pattern while measuring. Writes ``benchmarks/results/hw_budget.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).parent))

from hw_predictors import paused  # noqa: E402

from lightning_nas.archive import Archive  # noqa: E402
from lightning_nas.generate import generate_architectures  # noqa: E402
from lightning_nas.generator import CellGenerator  # noqa: E402
from lightning_nas.hw.cost import hardware_cost_for, random_archs  # noqa: E402
from lightning_nas.hw.measure import measure_arch  # noqa: E402
from lightning_nas.models.sg import SGModule  # noqa: E402
from lightning_nas.search.evaluate import ArchEvaluator, Budget  # noqa: E402
from lightning_nas.space.task import named_task  # noqa: E402
from lightning_nas.zc.vector import Probe  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="runs/demo")
    parser.add_argument("--task", default="digits")
    parser.add_argument("--seeds", default="0-2")
    parser.add_argument("--quantiles", default="0.3,0.6")
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--pause", default=None)
    parser.add_argument("--out", default=str(RESULTS / "hw_budget.json"))
    args = parser.parse_args()
    lo, _, hi = args.seeds.partition("-")
    seeds = list(range(int(lo), int(hi or lo) + 1))
    w = Path(args.workdir)
    task = named_task(args.task)
    sg = SGModule.from_checkpoint(w / "sg" / "checkpoints" / "last.ckpt")
    generator = CellGenerator.from_workdir(w)
    rows = []
    start = time.perf_counter()
    with Archive(w / "archive.sqlite") as archive, paused(args.pause) as pids:
        probe = Probe.from_archive(archive)
        hardware = hardware_cost_for("host", task, w, archive)
        # the calibration set's own measurements (stored by hardware_cost_for: nothing is measured again)
        calibration = [measure_arch(a, task, archive=archive).ms for a in random_archs(task, 30, seed=0)]
        limits = [float(f"{np.quantile(calibration, float(q)):.3g}") for q in args.quantiles.split(",")]
        for limit in limits:
            for seed in seeds:
                budget = Budget(f"{limit}ms", max_latency_ms=limit, device="host")
                evaluator = ArchEvaluator(probe, budget, "tcet", task, hardware)
                result = generate_architectures(sg, generator, evaluator, args.candidates, seed=seed,
                                                guide_quantile=None, progress=False)
                admitted = [(a, e) for _, a, e in result.candidates if e.status != "over_budget"]
                measured = [measure_arch(a, task, archive=archive).ms for a, _ in admitted]
                picked = None
                if result.best is not None:
                    _, arch, best = result.candidates[result.best]
                    picked = {"predicted_ms": best.latency_ms, "measured_ms": measure_arch(arch, task, archive=archive)
                              .ms, "tcet": best.score, "params": best.params}
                row = {"budget_ms": limit, "seed": seed, "candidates": args.candidates, "admitted": len(admitted),
                       "within_measured": sum(m <= limit for m in measured),
                       "satisfaction": (sum(m <= limit for m in measured) / len(measured)) if measured else None,
                       "abs_rel_error": float(np.mean([abs(e.latency_ms / (1 + hardware.margin["latency_ms"]) - m) / m
                                                        for (_, e), m
                                                        in zip(admitted, measured, strict=True)])) if measured else None,
                       "picked": picked}
                rows.append(row)
                print(json.dumps(row), flush=True)
    admitted = sum(r["admitted"] for r in rows)
    within = sum(r["within_measured"] for r in rows)
    picked_ok = [r["picked"]["measured_ms"] <= r["budget_ms"] for r in rows if r["picked"]]
    summary = {"admitted": admitted, "within_measured": within,
               "satisfaction": within / admitted if admitted else None,
               "picked_within": sum(picked_ok), "picked": len(picked_ok), "calibration_archs": len(calibration),
               "fitted_on": hardware.fitted_on, "margin": hardware.margin, "paused_processes": len(pids),
               "seconds": round(time.perf_counter() - start, 1)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1) + "\n")
    table = "| budget (ms) | seed | admitted by the predictor | within budget, measured | mean abs. rel. error | " \
            "picked: predicted / measured (ms) |\n|---|---|---|---|---|---|\n" + "".join(
                f"| {r['budget_ms']} | {r['seed']} | {r['admitted']}/{r['candidates']} | {r['within_measured']} | "
                + (f"{100 * r['abs_rel_error']:.1f} %" if r["abs_rel_error"] is not None else "–") + " | "
                + (f"{r['picked']['predicted_ms']:.3f} / {r['picked']['measured_ms']:.3f}" if r["picked"] else "–")
                + " |\n" for r in rows)
    sat = summary["satisfaction"]
    out.with_suffix(".md").write_text(
        "# Host latency budgets, checked by measurement\n\n`python benchmarks/hw_budget.py` on "
        f"`{args.workdir}` (task {task.name}): budgets = quantiles {args.quantiles} of the host calibration set's "
        f"measured latencies ({len(calibration)} random architectures), {args.candidates} generated candidates per "
        f"budget and seed {seeds}. **Budget satisfaction on measured latency: "
        + (f"{within}/{admitted} = {100 * sat:.1f} %" if sat is not None else "no candidate admitted")
        + f"** of the candidates the predictor admitted; the picked architecture within budget in "
        f"{sum(picked_ok)}/{len(picked_ok)} runs. Goal ≥ 95 %. The host table's calibrated safety margin: "
        f"{100 * hardware.margin.get('latency_ms', 0):.1f} % (a budget is checked on the prediction × (1 + margin); "
        "mean abs. rel. error is of the point estimate).\n\n" + table)
    print(f"wrote {out}: satisfaction {sat}")


if __name__ == "__main__":
    main()
