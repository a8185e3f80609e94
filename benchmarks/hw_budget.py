"""Latency budgets on the host, checked by measurement (issue [hw], item 3): of the generated architectures the
host predictor admits, how many are within the budget when *measured*?

    python benchmarks/hw_budget.py [--workdir runs/demo] [--seeds 0-2] [--quantiles 0.3,0.6] [--candidates 20]
                                   [--variants plain,tokens] [--tokens-sg runs/demo/sg_host/checkpoints/last.ckpt]

Uses a trained run directory (``make demo``'s). The host's hardware cost for the generate task is fitted on this
machine's measurements of random architectures (:func:`lightning_nas.hw.cost.hardware_cost_for`, stored in
``<workdir>/hw/`` and the archive); the budgets are quantiles of those measured latencies. For each budget and seed,
``generate`` (the SG, the CCNF, T-CET; no params/MACs limit) draws ``--candidates`` architectures; every candidate
the predictor admits (its guarded prediction, with the table's calibrated safety margin, within the budget) is then
measured (eager, batch 1, 1 thread, 10th percentile of 30 runs) and counted within the budget or
not — budget satisfaction on measured latency — and so is the architecture generate picks. ``--pause`` stops this
user's processes matching a pattern while measuring. Writes ``benchmarks/results/hw_budget.json`` and ``.md``.

Two **variants** of generation: ``plain`` — the run's SG (``<workdir>/sg``, trained without hardware tokens) decoding
without a condition or guide for latency (the check on every candidate does all the work); ``tokens`` — an SG
trained on the same history with host latency tokens (``sed 's#runs/demo/sg#runs/demo/sg_host#g'
runs/demo/pipeline/sg.yaml > sg_host.yaml && python -m lightning_nas fit --config sg_host.yaml --data.device host``),
prompted
with the latency limit and decoding with the budget guide (:func:`lightning_nas.generate.hardware_params_limit`).
What the tokens change is the share of candidates generated within the budget.
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
from lightning_nas.generate import generate_architectures, hardware_params_limit  # noqa: E402
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
    parser.add_argument("--variants", default="plain,tokens")
    parser.add_argument("--tokens-sg", default=None, help="default: <workdir>/sg_host/checkpoints/last.ckpt")
    parser.add_argument("--out", default=str(RESULTS / "hw_budget.json"))
    args = parser.parse_args()
    lo, _, hi = args.seeds.partition("-")
    seeds = list(range(int(lo), int(hi or lo) + 1))
    w = Path(args.workdir)
    task = named_task(args.task)
    variants = args.variants.split(",")
    sgs = {"plain": SGModule.from_checkpoint(w / "sg" / "checkpoints" / "last.ckpt")} if "plain" in variants else {}
    if "tokens" in variants:
        sgs["tokens"] = SGModule.from_checkpoint(args.tokens_sg or w / "sg_host" / "checkpoints" / "last.ckpt")
        if sgs["tokens"].tokenizer.device != "host":
            raise SystemExit(f"the tokens SG's hardware tokens are for {sgs['tokens'].tokenizer.device!r}, not host")
    generator = CellGenerator.from_workdir(w)
    rows = []
    start = time.perf_counter()
    with Archive(w / "archive.sqlite") as archive, paused(args.pause) as pids:
        probe = Probe.from_archive(archive)
        hardware = hardware_cost_for("host", task, w, archive)
        # the calibration set's own measurements (stored by hardware_cost_for: nothing is measured again)
        calibration = [measure_arch(a, task, archive=archive).ms for a in random_archs(task, 30, seed=0)]
        limits = [float(f"{np.quantile(calibration, float(q)):.3g}") for q in args.quantiles.split(",")]
        history = archive.archs(stage="search")
        for variant, sg in sgs.items():
            for limit in limits:
                budget = Budget(f"{limit}ms", max_latency_ms=limit, device="host")
                evaluator = ArchEvaluator(probe, budget, "tcet", task, hardware)
                implied = hardware_params_limit(history, evaluator) if variant == "tokens" else None
                for seed in seeds:
                    result = generate_architectures(sg, generator, evaluator, args.candidates, seed=seed,
                                                    guide_quantile=0.9 if variant == "tokens" else None,
                                                    progress=False, hardware_params=implied)
                    rows.append(measure_row(result, variant, limit, seed, args.candidates, task, archive, hardware))
                    print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for variant in sgs:
        mine = [r for r in rows if r["variant"] == variant]
        admitted = sum(r["admitted"] for r in mine)
        within = sum(r["within_measured"] for r in mine)
        picked_ok = [r["picked"]["measured_ms"] <= r["budget_ms"] for r in mine if r["picked"]]
        summary[variant] = {"candidates": sum(r["candidates"] for r in mine), "admitted": admitted,
                            "within_measured": within, "satisfaction": within / admitted if admitted else None,
                            "picked_within": sum(picked_ok), "picked": len(picked_ok)}
    summary.update({"calibration_archs": len(calibration), "fitted_on": hardware.fitted_on,
                    "margin": hardware.margin, "paused_processes": len(pids),
                    "seconds": round(time.perf_counter() - start, 1)})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1) + "\n")
    table = "| variant | budget (ms) | seed | admitted by the predictor | within budget, measured | mean abs. rel. " \
            "error | picked: predicted / measured (ms) |\n|---|---|---|---|---|---|---|\n" + "".join(
                f"| {r['variant']} | {r['budget_ms']} | {r['seed']} | {r['admitted']}/{r['candidates']} | "
                f"{r['within_measured']} | "
                + (f"{100 * r['abs_rel_error']:.1f} %" if r["abs_rel_error"] is not None else "–") + " | "
                + (f"{r['picked']['predicted_ms']:.3f} / {r['picked']['measured_ms']:.3f}" if r["picked"] else "–")
                + " |\n" for r in rows)
    lines = []
    for variant in sgs:
        v = summary[variant]
        sat = v["satisfaction"]
        lines.append(f"- **{variant}**: generated within the budget (predicted): {v['admitted']}/{v['candidates']} = "
                     f"{100 * v['admitted'] / v['candidates']:.1f} %; **budget satisfaction on measured latency: "
                     + (f"{v['within_measured']}/{v['admitted']} = {100 * sat:.1f} %" if sat is not None else "–")
                     + f"** of the admitted; the pick within budget, measured, in {v['picked_within']}/{v['picked']} "
                     "runs")
    out.with_suffix(".md").write_text(
        "# Host latency budgets, checked by measurement\n\n`python benchmarks/hw_budget.py` on "
        f"`{args.workdir}` (task {task.name}): budgets = quantiles {args.quantiles} of the host calibration set's "
        f"measured latencies ({len(calibration)} random architectures), {args.candidates} generated candidates per "
        f"budget and seed {seeds}. Goal ≥ 95 % budget satisfaction on measured latency. The host table's calibrated "
        f"safety margin: {100 * hardware.margin.get('latency_ms', 0):.1f} % (a budget is checked on the prediction × "
        "(1 + margin); mean abs. rel. error is of the point estimate). Variants: *plain* — the run's SG, no latency "
        "condition, no guide; *tokens* — the SG retrained on the same history with host latency tokens, prompted "
        "with the limit, with the budget guide.\n\n" + "\n".join(lines) + "\n\n" + table)
    print(f"wrote {out}: {json.dumps({k: v for k, v in summary.items() if k in sgs})}")


def measure_row(result, variant: str, limit: float, seed: int, candidates: int, task, archive, hardware) -> dict:
    """Measure every candidate the predictor admitted, and the pick."""
    admitted = [(a, e) for _, a, e in result.candidates if e.status != "over_budget"]
    measured = [measure_arch(a, task, archive=archive).ms for a, _ in admitted]
    picked = None
    if result.best is not None:
        _, arch, best = result.candidates[result.best]
        picked = {"predicted_ms": best.latency_ms, "measured_ms": measure_arch(arch, task, archive=archive).ms,
                  "tcet": best.score, "params": best.params}
    within = sum(m <= limit for m in measured)
    error = [abs(e.latency_ms / (1 + hardware.margin["latency_ms"]) - m) / m
             for (_, e), m in zip(admitted, measured, strict=True)]
    return {"variant": variant, "budget_ms": limit, "seed": seed, "candidates": candidates,
            "admitted": len(admitted), "within_measured": within,
            "satisfaction": within / len(measured) if measured else None,
            "abs_rel_error": float(np.mean(error)) if error else None, "picked": picked}


if __name__ == "__main__":
    main()
