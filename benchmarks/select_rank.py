"""Final selection's ranking judged on trained ground truth (issue #29, item 4): does ``select.rank: train_loss`` pick
networks that train well, and what does it add to the objective?

    python benchmarks/select_rank.py [--steps 20] [--pools 2000] [--pool 30] [--top-n 10]
                                     [--out benchmarks/results/select_rank.md]

For every network of ``data/graphnet_digits`` (group ``random-500k``, training seed 0): the training-speed estimator
exactly as the generate stage computes it (:func:`lightning_nas.select.training_loss_candidates`: the sum of the
first ``--steps`` training losses of the demo's evaluate recipe, ``configs/evaluate/digits.yaml`` at 32 px with
gradient clipping 5.0, scheduled for 15 epochs, training seed 0), stored one line per network in
``select_rank.jsonl`` beside the table (resumable). Then:

- Spearman ρ of −TSE with the network's test accuracy after 5 and after 15 epochs (those are separate trainings with
  seed 0 of the same recipe: TSE sees only its first steps);
- a simulation of generate on random pools: ``--pools`` pools of ``--pool`` networks drawn from the sample, and the
  test accuracy of what each rule keeps — the objective's best (``guarded_tcet``; the guard's range set
  out of sample, on the networks outside the pool), the objective's top ``--top-n`` ranked by TSE (what
  ``select.rank: train_loss`` does), TSE over the whole pool, the pool's first network (random, no proxy). The
  random pools stand in for the SG's candidates; the chain's own answer is :mod:`benchmarks.found_vs`'s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

ROWS = REPO / "data" / "graphnet_digits" / "rows.jsonl"
OUT = REPO / "benchmarks" / "results" / "select_rank.md"
RECIPE = {"data.init_args.image_size": 32, "trainer.gradient_clip_val": 5.0, "trainer.accelerator": "cpu"}


def ground_truth() -> list[dict]:
    rows = [json.loads(line) for line in ROWS.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["group"] == "random-500k" and r["train_seed"] == 0]


def measure(rows: list[dict], steps: int, path: Path) -> dict[int, dict]:
    """TSE of every row (resumable: one JSON line per network in ``path``)."""
    from lightning_nas.select import SelectConfig, training_loss_candidates
    from lightning_nas.space.arch import Arch

    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                item = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            if item.get("steps") == steps:
                done[item["index"]] = item
    config = SelectConfig(top_n=1, config=str(REPO / "configs" / "evaluate" / "digits.yaml"), rank="train_loss",
                          epochs=15, steps=steps, seed=0, set=RECIPE)
    todo = [r for r in rows if r["index"] not in done]
    print(f"[select-rank] {len(todo)} networks to measure, {len(done)} done -> {path}", flush=True)
    for n, row in enumerate(todo, 1):
        with tempfile.TemporaryDirectory() as tmp:
            result = training_loss_candidates([Arch.from_json(row["spec"])], config, Path(tmp), log=lambda _: None)[0]
        item = {"index": row["index"], "steps": steps, "train_loss_sum": result["train_loss_sum"],
                "seconds": result["seconds"]}
        done[row["index"]] = item
        with open(path, "a") as f:
            f.write(json.dumps(item) + "\n")
        print(f"[select-rank] {n}/{len(todo)} [{row['index']}] TSE {item['train_loss_sum']:.4g} "
              f"{item['seconds']} s", flush=True)
    return done


def simulate(rows: list[dict], tse: dict[int, dict], pools: int, pool_size: int, top_n: int, seed: int = 0) -> dict:
    """Mean test accuracy (%, 5 and 15 epochs) of what each rule keeps from random pools (module docstring)."""
    from objectives import measured_range

    rng = random.Random(seed)
    picks = {"guarded_tcet": [], f"guarded_tcet top {top_n} + TSE": [], "TSE over the pool": [], "random": []}
    for _ in range(pools):
        pool = rng.sample(rows, pool_size)
        inside = {r["index"] for r in pool}
        trainable, _ = measured_range([{"accuracy": {"graphnet-digits": 100 * r["test_acc_15"]},
                                        "grad_norm_at_init": r["grad_norm_at_init"]}
                                       for r in rows if r["index"] not in inside])
        admitted = [r for r in pool if trainable.admits(r["grad_norm_at_init"])] or pool
        order = sorted(range(len(admitted)), key=lambda i: -admitted[i]["proxies"]["tcet"])
        top = [admitted[i] for i in order[:top_n]]  # random draws: every network its own HL architecture
        chosen = {"guarded_tcet": admitted[order[0]],
                  f"guarded_tcet top {top_n} + TSE": min(top, key=lambda r: tse[r["index"]]["train_loss_sum"]),
                  "TSE over the pool": min(pool, key=lambda r: tse[r["index"]]["train_loss_sum"]),
                  "random": pool[0]}
        for name, r in chosen.items():
            picks[name].append((100 * r["test_acc_5"], 100 * r["test_acc_15"]))
    return {name: {"e5": statistics.fmean(a for a, _ in v), "e15": statistics.fmean(b for _, b in v)}
            for name, v in picks.items()}


def report(rows: list[dict], tse: dict[int, dict], sim: dict, args) -> str:
    from scipy.stats import spearmanr

    v = [-tse[r["index"]]["train_loss_sum"] for r in rows]
    rho = {e: float(spearmanr(v, [r[f"test_acc_{e}"] for r in rows]).statistic) for e in (5, 15)}
    tcet = {e: float(spearmanr([r["proxies"]["tcet"] for r in rows], [r[f"test_acc_{e}"] for r in rows]).statistic)
            for e in (5, 15)}
    seconds = statistics.median(tse[r["index"]]["seconds"] for r in rows)
    lines = ["# Final selection's ranking against trained accuracy", "",
             "Generated by `benchmarks/select_rank.py` (see its docstring) on the "
             f"{len(rows)} `random-500k` networks of `data/graphnet_digits` (500k params / 20M MACs). TSE = the sum "
             f"of the first {args.steps} training losses of the demo's evaluate recipe, computed by "
             f"`lightning_nas.select.training_loss_candidates` (median {seconds:.1f} s per network on this CPU).", "",
             "| rank | ρ with test acc. (5 ep) | ρ (15 ep) |", "|---|---:|---:|",
             f"| −TSE ({args.steps} steps) | {rho[5]:+.3f} | {rho[15]:+.3f} |",
             f"| T-CET | {tcet[5]:+.3f} | {tcet[15]:+.3f} |", "",
             f"## What a rule keeps from a pool of {args.pool} ({args.pools} random pools)", "",
             "The guard's range is set on the networks outside each pool (out of sample). Test accuracy in %.", "",
             "| rule | trained candidates | 5 epochs | 15 epochs |", "|---|---:|---:|---:|"]
    trained = {"guarded_tcet": 0, "TSE over the pool": args.pool, "random": 0}
    for name, acc in sim.items():
        n = trained.get(name, args.top_n)
        lines.append(f"| {name} | {f'{n} × {args.steps} steps' if n else '0'} | {acc['e5']:.2f} | {acc['e15']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--pools", type=int, default=2000)
    parser.add_argument("--pool", type=int, default=30, help="networks per pool (generate's demo candidates: 30)")
    parser.add_argument("--top-n", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "disabled")
    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = ground_truth()
    tse = measure(rows, args.steps, args.out.with_suffix(".jsonl"))
    sim = simulate(rows, tse, args.pools, args.pool, args.top_n)
    args.out.write_text(report(rows, tse, sim, args))
    args.out.with_suffix(".json").write_text(json.dumps({"steps": args.steps, "pools": args.pools, "pool": args.pool,
                                                         "top_n": args.top_n, "rules": sim}, indent=1) + "\n")
    print(f"wrote {args.out} in {time.perf_counter() - start:.0f} s", flush=True)
    print(args.out.read_text())


if __name__ == "__main__":
    main()
