"""Where HL-Evo's time goes: cell generation (CCNF + decoder), network build + cost count, and the T-CET pass.

    python benchmarks/search.py [--workdir runs/tiny] [--archs 30] [--seed 0] [--json out.json]

Needs the tiny artifacts (archive with its probe, G-VAE, CCNF, clusters.json). Draws ``--archs`` HL architectures
by mutating the authors' α₀ (exploration phase) and times each part of an evaluation on this CPU.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch
from _report import report

from lightning_nas.archive import Archive
from lightning_nas.generator import CellGenerator
from lightning_nas.search import Candidate, HLEvoConfig, mutate
from lightning_nas.space import build_network, count_cost
from lightning_nas.zc import Probe
from lightning_nas.zc.proxies import evaluate_proxies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="runs/tiny")
    parser.add_argument("--archs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    w = Path(args.workdir)
    gen = CellGenerator.from_workdir(w)
    with Archive(w / "archive.sqlite", create=False) as archive:
        probe = Probe.from_archive(archive)
    x, y = probe.x, probe.y
    k = len(gen.clusters["means"])
    times = {"generate_cell_s": 0.0, "build_and_cost_s": 0.0, "tcet_s": 0.0}
    cells_made = 0

    def gen_cell(cell, cluster, rng):
        nonlocal cells_made
        start = time.perf_counter()
        cell = gen.sample(1, cluster=cluster, temperature=0.4, seed=rng.randrange(2**31)).cells[0]
        times["generate_cell_s"] += time.perf_counter() - start
        cells_made += 1
        return cell

    rng = random.Random(args.seed)
    hl = HLEvoConfig().initial_hl()
    candidate = Candidate(hl, tuple(gen_cell(None, s.cluster, rng) for s in hl.stages))
    params = []
    for _ in range(args.archs):
        candidate, _ = mutate(candidate, rng, k, gen_cell, exploration=True)
        start = time.perf_counter()
        model = build_network(candidate.hl.materialise(candidate.cells), in_channels=x.shape[1])
        cost = count_cost(model, x.shape[1:])
        times["build_and_cost_s"] += time.perf_counter() - start
        start = time.perf_counter()
        evaluate_proxies(model, x, y, ["tcet"])
        times["tcet_s"] += time.perf_counter() - start
        params.append(cost["params"])
    total = sum(times.values())
    figures = {
        "archs": args.archs,
        "evals_per_s": round(args.archs / total, 3),
        **{k_: round(v / args.archs, 4) for k_, v in times.items()},
        "share_tcet": round(times["tcet_s"] / total, 3),
        "cells_generated_per_s": round(cells_made / max(times["generate_cell_s"], 1e-9), 1),
        "median_params": sorted(params)[len(params) // 2],
        "probe": f"{probe.source} batch {len(y)}",
    }
    report(figures, args.json)


if __name__ == "__main__":
    main()
