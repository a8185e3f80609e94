"""``generate`` answers every feasible budget (issue [hardening], item 1): a grid of params × MACs budgets on two
tasks, each run through the ``generate`` stage on one run directory's generators; every answer is checked within
its budget and the path that answered (``sg``, ``repaired``, ``search``, ``smallest``) is recorded.

    python benchmarks/generate_budget_grid.py [--workdir runs/demo] [--tasks digits,cifar10]
                                              [--params 150k,500k,2M] [--macs 8M,20M,50M,200M] [--candidates 30]

Writes ``benchmarks/results/generate_budget_grid.json`` (one row per budget: params, MACs, answer, T-CET, seconds,
the fallback's counts) and prints the table. A run that raises is a row with its error: the goal is none.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lightning_nas.generate import GenerateConfig, parse_quantity, run_generate  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="runs/demo")
    parser.add_argument("--tasks", default="digits,cifar10")
    parser.add_argument("--params", default="150k,500k,2M")
    parser.add_argument("--macs", default="8M,20M,50M,200M")
    parser.add_argument("--candidates", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/generate_budget_grid.json")
    args = parser.parse_args(argv)
    rows = []
    for task in args.tasks.split(","):
        for p in args.params.split(","):
            for m in args.macs.split(","):
                start = time.perf_counter()
                row = {"task": task, "max_params": parse_quantity(p, "params"), "max_macs": parse_quantity(m, "macs")}
                try:
                    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        metrics = run_generate(GenerateConfig(
                            workdir=args.workdir, budget={"params": p, "macs": m}, task=task,
                            candidates=args.candidates, seed=args.seed, out=out))
                    row.update({k: metrics.get(k) for k in ("answer", "params", "macs", "tcet", "zc_evaluations",
                                                            "budget_satisfaction", "fallback")})
                    row["within"] = metrics["params"] <= row["max_params"] and metrics["macs"] <= row["max_macs"]
                except Exception as err:  # noqa: BLE001 — the row records what a user would have seen
                    row.update({"answer": None, "error": f"{type(err).__name__}: {err}", "within": False})
                row["seconds"] = round(time.perf_counter() - start, 1)
                rows.append(row)
                print(f"{task:8} params ≤ {p:>5} MACs ≤ {m:>5}: {row['answer'] or row.get('error')!s:10} "
                      f"{(row.get('params') or 0) / 1e3:7.1f}k {(row.get('macs') or 0) / 1e6:7.2f}M "
                      f"within={row['within']} {row['seconds']:.0f}s", flush=True)
    summary = {"budgets": len(rows), "within": sum(r["within"] for r in rows),
               "raised": sum("error" in r for r in rows),
               "answers": {a: sum(r["answer"] == a for r in rows) for a in ("sg", "repaired", "search", "smallest")},
               "workdir": args.workdir, "candidates": args.candidates, "seed": args.seed, "rows": rows}
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}))
    return 0 if summary["within"] == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
