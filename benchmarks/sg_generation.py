"""SG generation study (paper Table 2's claim at our scale): budgeted generation vs the HL-Evo history (CPU).

    python benchmarks/sg_generation.py [--workdir runs/tiny] [--budgets 150k,...] [--candidates 100] [--seed 0]
                                       [--out benchmarks/results/sg_generation.md]

For every params budget of the grid (default 10, log-spaced over the sizes the search explored) it runs the
``generate`` stage's procedure (:func:`lightning_nas.generate.generate_architectures`: SG beam search → CCNF cells →
T-CET of those within budget) and reports

- the share of generated candidates within budget, with the budget guide and without it (the SG's conditioning
  alone — the cost check runs on both; only the guided run is scored);
- the T-CET and size of the selected architecture vs the best architecture within the same budget in the whole HL-Evo
  search history of the archive (thousands of evaluations across the search budgets);
- T-CET evaluations and wall time of the generation (SG decoding, cell drawing, scoring).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightning_nas.archive import Archive  # noqa: E402
from lightning_nas.generate import generate_architectures, parse_quantity  # noqa: E402
from lightning_nas.generator import CellGenerator  # noqa: E402
from lightning_nas.models.sg import SGModule  # noqa: E402
from lightning_nas.search import ArchEvaluator, Budget  # noqa: E402
from lightning_nas.zc import Probe  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="runs/tiny")
    parser.add_argument("--sg", default=None, help="SG checkpoint (default <workdir>/sg/checkpoints/last.ckpt)")
    parser.add_argument("--budgets", default=None, help="comma-separated params budgets, e.g. 150k,300k,1M")
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "sg_generation.md"))
    args = parser.parse_args()
    w = Path(args.workdir)
    sg = SGModule.from_checkpoint(args.sg or w / "sg" / "checkpoints" / "last.ckpt")
    generator = CellGenerator.from_workdir(w)
    with Archive(w / "archive.sqlite", create=False) as archive:
        probe = Probe.from_archive(archive)
        history = [r["metrics"] for r in archive.archs(stage="search")]
    scored = [m for m in history if m["status"] == "ok" and m.get("objective", "tcet") == "tcet"]
    if args.budgets:
        budgets = [parse_quantity(b, "budgets") for b in args.budgets.split(",")]
    else:
        sizes = sorted(m["params"] for m in scored)
        lo, hi = math.log10(sizes[len(sizes) // 20]), math.log10(sizes[-1])
        budgets = [float(f"{10 ** (lo + (hi - lo) * i / 9):.2g}") for i in range(10)]

    rows = []
    for budget in budgets:
        evaluator = ArchEvaluator(probe, Budget("grid", max_params=budget))
        start = time.perf_counter()
        result = generate_architectures(sg, generator, evaluator, args.candidates, args.sequences,
                                        seed=args.seed, progress=False)
        seconds = time.perf_counter() - start
        cost_only = ArchEvaluator(probe, evaluator.budget, objective=None)
        unguided = generate_architectures(sg, generator, cost_only, args.candidates, args.sequences, seed=args.seed,
                                          guide_quantile=None, progress=False)
        best = result.candidates[result.best][2] if result.best is not None else None
        within = [m for m in scored if m["params"] <= budget]
        evo = max(within, key=lambda m: m["score"]) if within else None
        row = {"budget": budget, "within": result.within_budget / args.candidates,
               "within_unguided": unguided.within_budget / args.candidates,
               "tcet": best.score if best else None, "params": best.params if best else None,
               "evo_tcet": evo["score"] if evo else None, "evo_params": evo["params"] if evo else None,
               "zc_evaluations": result.zc_evaluations, "seconds": round(seconds, 1),
               **{f"{k}_seconds": round(v, 2) for k, v in result.seconds.items()}}
        rows.append(row)
        print(json.dumps(row), flush=True)

    def fmt(v, spec="{:.3g}"):
        return "–" if v is None else spec.format(v)

    table = ("| params budget | within budget (guided) | within (SG alone) | T-CET selected | its params | "
             "best HL-Evo T-CET ≤ budget | its params | ratio | T-CET evals | s (SG / cells / scoring) |\n"
             "|---|---|---|---|---|---|---|---|---|---|\n")
    for r in rows:
        ratio = r["tcet"] / r["evo_tcet"] if r["tcet"] and r["evo_tcet"] else None
        table += (f"| {fmt(r['budget'])} | {r['within']:.0%} | {r['within_unguided']:.0%} | {fmt(r['tcet'])} | "
                  f"{fmt(r['params'])} | {fmt(r['evo_tcet'])} | {fmt(r['evo_params'])} | {fmt(ratio, '{:.2f}')} | "
                  f"{r['zc_evaluations']} | {r['seconds']:.1f} ({r['sg_seconds']:.1f} / {r['cells_seconds']:.1f} / "
                  f"{r['scoring_seconds']:.1f}) |\n")
    ratios = [r["tcet"] / r["evo_tcet"] for r in rows if r["tcet"] and r["evo_tcet"]]
    note = (f"\n{args.candidates} candidates per budget from {args.sequences} SG beams, seed {args.seed}, probe "
            f"`{probe.id}`; HL-Evo reference: the best of {len(scored)} scored architectures of the archive's search "
            f"history within the budget. Mean within budget: {statistics.mean(r['within'] for r in rows):.1%} guided, "
            f"{statistics.mean(r['within_unguided'] for r in rows):.1%} SG alone; mean T-CET ratio selected / "
            f"HL-Evo: {statistics.mean(ratios):.2f}; "
            f"mean wall time {statistics.mean(r['seconds'] for r in rows):.1f} s.\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("# SG generation study at our scale\n\n" + table + note)
    Path(args.out).with_suffix(".json").write_text(json.dumps(rows, indent=1))
    print(table + note)


if __name__ == "__main__":
    main()
