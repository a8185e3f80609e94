"""The paper's Table 2 at our scale: search methods under one budget and equal evaluation counts (CPU).

    python benchmarks/table2_search.py [--workdir runs/tiny] [--budget-params 1000000] [--iterations 100]
                                       [--budget-macs M] [--task digits] [--population 16] [--seeds 0,1,2]
                                       [--methods all] [--diagnose 4] [--rows-from rows.jsonl]
                                       [--out benchmarks/results/table2_search.md]

Methods, all in the same harness (:func:`lightning_nas.search.hl_evo`, same α₀ structure, same budget, same number of
iterations, the archive's probe batch):

- **HL-Evo(T-CET)+CCNF**: clusters from ``clusters.json``, cells drawn by the CCNF at the cluster mean (τ = 0.4),
  exploration then exploitation;
- **Evo(T-CET)**, **Evo(Zen)**, **Evo(ZiCo)** in the GraphNet space: one cluster, cells mutated at cell level
  (:func:`lightning_nas.search.mutations.mutate_cell`), the named proxy as objective;
- **Random(T-CET)**: random architectures with random cells, the best by T-CET.

For every (method, seed): the best architecture by the method's own objective after 25 %, 50 % and 100 % of the
iterations, and its T-CET (scored again for Zen/ZiCo), params and MACs. Accuracy needs GPU training and is not here:
T-CET is what HL-Evo optimises, so this table says which search finds higher-T-CET networks under the budget, not
which trains best (on the demo, higher T-CET trained *worse*: ``benchmarks/results/demo.md``). The table also gives
the winners' number of cells and edges per cell. ``--diagnose K`` adds what the clusters give HL-Evo
(:func:`lightning_nas.studies.cluster_quality`: α₀ with each cluster's CCNF cells against random cells, K draws
each) and the G-VAE predictor's R². Writes a markdown table (``--out``) and the raw rows (``.json``); every finished
run is printed as a JSON line, which ``--rows-from`` takes back after an interruption.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightning_nas.archive import Archive  # noqa: E402
from lightning_nas.generator import CellGenerator  # noqa: E402
from lightning_nas.search import Budget  # noqa: E402
from lightning_nas.space.task import Task  # noqa: E402
from lightning_nas.studies import (  # noqa: E402
    SEARCH_METHODS,
    cluster_quality,
    cluster_quality_table,
    search_study,
    search_table,
)
from lightning_nas.zc import Probe  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="runs/tiny")
    parser.add_argument("--budget-params", type=float, default=1e6)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--population", type=int, default=16)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--task", default=None, help="the task whose network the budget is checked on (a name, e.g. "
                                                     "digits or cifar10; default: the probe's shape)")
    parser.add_argument("--budget-macs", type=float, default=None)
    parser.add_argument("--methods", default="all")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "table2_search.md"))
    parser.add_argument("--rows-from", help="JSON/JSONL rows of an earlier, interrupted study with the same settings: "
                                            "their (method, seed) runs are reused instead of rerun")
    parser.add_argument("--diagnose", type=int, default=0, metavar="SAMPLES",
                        help="also measure each cluster's cells in α₀ against random cells (this many draws each)")
    args = parser.parse_args()
    w = Path(args.workdir)
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = list(SEARCH_METHODS) if args.methods == "all" else args.methods.split(",")
    generator = CellGenerator.from_workdir(w)
    with Archive(w / "archive.sqlite", create=False) as archive:
        probe = Probe.from_archive(archive)
    budget = Budget(f"{args.budget_params:.0e}", max_params=args.budget_params, max_macs=args.budget_macs)
    task = Task.resolve(args.task) if args.task else None
    done = []
    if args.rows_from:
        text = Path(args.rows_from).read_text().strip()
        done = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines()]
    rows = search_study(generator, probe, budget, methods, seeds, args.iterations, args.population, done,
                        log=lambda row: print(json.dumps(row), flush=True), task=task)
    table = search_table(rows)
    limits = f"{args.budget_params:.3g} params" + (f", {args.budget_macs:.3g} MACs" if args.budget_macs else "")
    note = (f"\nBudget {limits} on task {task.name if task else 'of the probe'}; "
            f"{args.iterations} iterations after α₀, population "
            f"{args.population}, seeds {seeds}; probe `{probe.id}` (the archive's). T-CET of the best architecture "
            "by each method's own objective (Zen/ZiCo winners rescored with T-CET); mean ± std over seeds.\n")
    quality = []
    if args.diagnose:
        quality = cluster_quality(generator, probe, budget, samples=args.diagnose, task=task)
        gvae = json.loads((w / "gvae" / "metrics.json").read_text()) if (w / "gvae" / "metrics.json").is_file() else {}
        r2 = ", ".join(f"{k.removeprefix('predictor_r2_')} {v:.2f}" for k, v in gvae.items()
                       if k.startswith("predictor_r2_") and isinstance(v, (int, float)))
        note += ("\n## Diagnosis: what the clusters give HL-Evo\n\nα₀'s structure (the searches' start) with every "
                 f"stage's cell drawn from one cluster by the CCNF (τ = 0.4), or random GraphNet cells as the Evo and "
                 f"random baselines start, {args.diagnose} draws each, T-CET on the probe:\n\n"
                 + cluster_quality_table(quality)
                 + (f"\nThe G-VAE's ZC predictor on held-out labelled cells (R²): {r2}.\n" if r2 else ""))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("# Table 2 at our scale: search methods under one budget\n\n" + table + note)
    Path(args.out).with_suffix(".json").write_text(json.dumps({"rows": rows, "cluster_quality": quality}, indent=1)
                                                   if quality else json.dumps(rows, indent=1))
    print(table + note)


if __name__ == "__main__":
    main()
