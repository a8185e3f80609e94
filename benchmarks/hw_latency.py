"""Host latency repeatability (issue [hw], item 1): how stable is one measurement on this machine?

    python benchmarks/hw_latency.py [--repeats 5] [--runs 50] [--pause PATTERN]

Three GraphNet networks of the CIFAR-10 task (the smallest, median and 75th percentile by MACs of 20 random
architectures,
:func:`lightning_nas.hw.cost.random_archs`) are measured ``--repeats`` times each with
:func:`lightning_nas.hw.measure.measure_latency` (batch 1 and batch 8, 1 thread, 10 warm-up runs, median of
``--runs``; batch 8 not for the large one), in torch eager and onnxruntime. Repeatability = the spread of the
repeated medians (and of the
repeated 10th percentiles, the latency the project uses), ``(max − min) / median``; the IQR/median of single
measurements is reported beside it. ``--pause`` stops this user's
processes matching the pattern while measuring (as ``hw_predictors.py`` does); without it the machine's load is
part of the figure. Writes ``benchmarks/results/hw_latency.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).parent))

from hw_predictors import paused  # noqa: E402

from lightning_nas.hw.cost import random_archs  # noqa: E402
from lightning_nas.hw.measure import cpu_model, measure_latency  # noqa: E402
from lightning_nas.space.cost import count_cost  # noqa: E402
from lightning_nas.space.network import task_network  # noqa: E402
from lightning_nas.space.task import named_task  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--pause", default=None)
    parser.add_argument("--out", default=str(RESULTS / "hw_latency.json"))
    args = parser.parse_args()
    task = named_task("cifar10")
    candidates = []
    for arch in random_archs(task, 20, seed=1):
        torch.manual_seed(0)
        candidates.append((count_cost(task_network(task, arch), task.input_shape)["macs"], arch))
    candidates.sort(key=lambda c: c[0])
    picked = {"small": candidates[0], "median": candidates[len(candidates) // 2],
              "large": candidates[3 * len(candidates) // 4]}
    rows = []
    start = time.perf_counter()
    with paused(args.pause) as pids:
        for name, (macs, arch) in picked.items():
            torch.manual_seed(0)
            model = task_network(task, arch)
            for runtime in ("eager", "onnxruntime"):
                for batch in (1, 8) if name != "large" else (1,):
                    ms = [measure_latency(model, task.input_shape, runtime, batch, threads=1, runs=args.runs)
                          for _ in range(args.repeats)]
                    medians, p10s = [m.median_ms for m in ms], [m.p10_ms for m in ms]
                    centre = statistics.median(medians)
                    rows.append({"network": name, "macs": macs, "runtime": runtime, "batch": batch,
                                 "medians_ms": [round(v, 4) for v in medians], "p10s_ms": [round(v, 4) for v in p10s],
                                 "spread": round((max(medians) - min(medians)) / centre, 4),
                                 "spread_p10": round((max(p10s) - min(p10s)) / statistics.median(p10s), 4),
                                 "iqr_over_median": round(statistics.mean(m.iqr_ms / m.median_ms for m in ms), 4)})
                    r = rows[-1]
                    print(f"{name} ({macs / 1e6:.1f}M MACs) {runtime} batch {batch}: median {centre:.3f} ms, spread "
                          f"{100 * r['spread']:.1f} % (10th percentile: {100 * r['spread_p10']:.1f} %), IQR/median "
                          f"{100 * r['iqr_over_median']:.1f} %", flush=True)
    seconds = time.perf_counter() - start
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    info = {"cpu": cpu_model(), "threads": 1, "torch": torch.__version__, "repeats": args.repeats, "runs": args.runs,
            "paused_processes": len(pids), "seconds": round(seconds, 1)}
    out.write_text(json.dumps({"rows": rows, **info}, indent=1) + "\n")
    table = "| network | MACs | runtime | batch | median (ms) | spread of the medians | 10th pct. (ms) | " \
            "spread of the 10th pct. | IQR / median |\n|---|---|---|---|---|---|---|---|---|\n" + "".join(
                f"| {r['network']} | {r['macs'] / 1e6:.1f}M | {r['runtime']} | {r['batch']} | "
                f"{statistics.median(r['medians_ms']):.3f} | {100 * r['spread']:.1f} % | "
                f"{statistics.median(r['p10s_ms']):.3f} | {100 * r['spread_p10']:.1f} % | "
                f"{100 * r['iqr_over_median']:.1f} % |\n" for r in rows)
    worst, worst_p10 = max(r["spread"] for r in rows), max(r["spread_p10"] for r in rows)
    eager = [r["spread_p10"] for r in rows if r["runtime"] == "eager" and r["batch"] == 1]
    out.with_suffix(".md").write_text(
        "# Host latency repeatability\n\n`python benchmarks/hw_latency.py` — the same network measured "
        f"{args.repeats} times (each: 10 warm-up runs, median of {args.runs} timed runs, 1 thread) on {info['cpu']}; "
        f"spread = (max − min) / median of the {args.repeats} medians. {len(pids)} background processes of this user "
        f"were paused while measuring. Worst spread of the medians: {100 * worst:.1f} %; of the 10th percentiles (the "
        f"latency :mod:`lightning_nas.hw.measure` reports): {100 * worst_p10:.1f} % (eager, batch 1: "
        f"{', '.join(f'{100 * v:.1f} %' for v in eager)}).\n\n" + table)
    print(f"wrote {out}; worst spread {100 * worst:.1f} %, of the 10th percentiles {100 * worst_p10:.1f} % "
          f"({seconds:.0f} s)")


if __name__ == "__main__":
    main()
