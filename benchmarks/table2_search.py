"""The paper's Table 2 at our scale: search methods under one budget and equal evaluation counts (CPU).

    python benchmarks/table2_search.py [--workdir runs/tiny] [--budget-params 1000000] [--iterations 100]
                                       [--population 16] [--seeds 0,1,2] [--methods all]
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
which trains best. Writes a markdown table (``--out``) and the raw rows (``.json``).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightning_nas.archive import Archive  # noqa: E402
from lightning_nas.generator import CellGenerator  # noqa: E402
from lightning_nas.search import ArchEvaluator, Budget, HLEvoConfig, hl_evo  # noqa: E402
from lightning_nas.search.mutations import mutate_cell  # noqa: E402
from lightning_nas.space import Arch, Cell  # noqa: E402
from lightning_nas.zc import Probe  # noqa: E402

METHODS = {
    "HL-Evo(T-CET)+CCNF": {"objective": "tcet", "hl": True},
    "Evo(T-CET)": {"objective": "tcet", "hl": False},
    "Evo(Zen)": {"objective": "zen", "hl": False},
    "Evo(ZiCo)": {"objective": "zico", "hl": False},
    "Random(T-CET)": {"objective": "tcet", "hl": False, "random": True},
}


def graphnet_cell(cell: Cell | None, cluster: int, rng: random.Random) -> Cell:
    """The GraphNet baselines' cells: random at the start, then cell-level mutations."""
    return Cell.random(rng=random.Random(rng.randrange(2**31))) if cell is None else mutate_cell(cell, rng)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="runs/tiny")
    parser.add_argument("--budget-params", type=float, default=1e6)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--population", type=int, default=16)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default="all")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "table2_search.md"))
    parser.add_argument("--rows-from", help="JSON/JSONL rows of an earlier, interrupted study with the same settings: "
                                            "their (method, seed) runs are reused instead of rerun")
    args = parser.parse_args()
    w = Path(args.workdir)
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = METHODS if args.methods == "all" else {m: METHODS[m] for m in args.methods.split(",")}
    generator = CellGenerator.from_workdir(w)
    k = len(generator.clusters["means"])
    with Archive(w / "archive.sqlite", create=False) as archive:
        probe = Probe.from_archive(archive)
    budget = Budget(f"{args.budget_params:.0e}", max_params=args.budget_params)
    tcet = ArchEvaluator(probe, budget, "tcet")

    def ccnf_cell(cell, cluster, rng):
        return generator.sample(1, cluster=cluster, temperature=0.4, seed=rng.randrange(2**31)).cells[0]

    rows = []
    if args.rows_from:
        text = Path(args.rows_from).read_text().strip()
        earlier = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines()]
        rows = [r for r in earlier if r["method"] in methods and r["seed"] in seeds]
    done = {(r["method"], r["seed"]) for r in rows}
    with tempfile.TemporaryDirectory() as tmp, Archive(Path(tmp) / "study.sqlite", op_set="graphnet") as study:
        for name, m in methods.items():
            for seed in seeds:
                if (name, seed) in done:
                    continue
                start = time.perf_counter()
                config = HLEvoConfig(args.population, args.iterations, seed, two_phase=m["hl"],
                                     random_search=m.get("random", False))
                run = f"{name}-{seed}"
                state = hl_evo(config, ArchEvaluator(probe, budget, m["objective"]),
                               ccnf_cell if m["hl"] else graphnet_cell, k if m["hl"] else 1, study, run, method=name)
                history = study.archs(stage="search", run=run)
                row = {"method": name, "seed": seed, "evaluations": state.evaluations,
                       "over_budget": state.over_budget, "failed": state.failed,
                       "seconds": round(time.perf_counter() - start, 1)}
                for share in (0.25, 0.5, 1.0):
                    upto = [r for r in history if r["metrics"]["iteration"] <= share * args.iterations
                            and r["metrics"]["status"] == "ok"]
                    best = max(upto, key=lambda r: r["metrics"]["score"])
                    score = best["metrics"]["score"] if m["objective"] == "tcet" else tcet(Arch.from_json(best["spec"])).score
                    row[f"tcet@{int(share * 100)}%"] = score
                row["params"], row["macs"] = best["metrics"]["params"], best["metrics"]["macs"]
                rows.append(row)
                print(json.dumps(row), flush=True)
    rows.sort(key=lambda r: (list(methods).index(r["method"]), r["seed"]))

    def cell(method, key, fmt="{:.3g}"):
        values = [r[key] for r in rows if r["method"] == method and r[key] is not None]
        if not values:
            return "–"
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{fmt.format(statistics.mean(values))} ± {fmt.format(sd)}"

    table = ("| method | best T-CET @25 % | @50 % | @100 % of iterations | params of best | MACs of best | scored | "
             "over budget | s per run |\n|---|---|---|---|---|---|---|---|---|\n")
    for name in methods:
        table += (f"| {name} | {cell(name, 'tcet@25%')} | {cell(name, 'tcet@50%')} | {cell(name, 'tcet@100%')} | "
                  f"{cell(name, 'params')} | {cell(name, 'macs')} | {cell(name, 'evaluations', '{:.0f}')} | "
                  f"{cell(name, 'over_budget', '{:.0f}')} | {cell(name, 'seconds', '{:.0f}')} |\n")
    note = (f"\nBudget {args.budget_params:.3g} params; {args.iterations} iterations after α₀, population "
            f"{args.population}, seeds {seeds}; probe `{probe.id}` (the archive's). T-CET of the best architecture "
            "by each method's own objective (Zen/ZiCo winners rescored with T-CET); mean ± std over seeds.\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("# Table 2 at our scale: search methods under one budget\n\n" + table + note)
    Path(args.out).with_suffix(".json").write_text(json.dumps(rows, indent=1))
    print(table + note)


if __name__ == "__main__":
    main()
