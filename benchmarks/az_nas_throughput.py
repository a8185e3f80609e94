"""Throughput of AZ-NAS (``zc.az_nas_cell``) on α_x of NAS-Bench-201 cells (CPU).

    python benchmarks/az_nas_throughput.py [--cells 20] [--threads 1] [--seed 0] [--batch 32] [--json out.json]

Scores ``--cells`` NB201 cells (``space.nb201.sample_nb201_cells(cells, seed)``: reachable arch strings in a seeded
order) with ``zc.az_nas_cell(cell, probe)`` on the digits probe (``Probe.from_source("digits", seed=0,
batch_size=batch)``, 3×32×32). Each timed call does everything AZ-NAS needs for one cell: build α_x
(``zc.probe_network``), Kaiming re-initialisation, one train-mode forward with the block hooks, one backward per
block pair (trainability) and the FLOP count. One untimed warm-up call comes first. Prints one row per cell (its
four components and seconds) and a summary: cells/s, median seconds per cell and the torch threads used.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _report import report

from lightning_nas import zc
from lightning_nas.space.nb201 import nb201_from_cell, sample_nb201_cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=20, help="NB201 cells to score (default 20)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the cell order (default 0)")
    parser.add_argument("--batch", type=int, default=32, help="probe batch size (default 32)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.cells < 1 or args.threads < 1 or args.batch < 2:
        parser.error("--cells and --threads must be positive, --batch at least 2")
    torch.set_num_threads(args.threads)

    probe = zc.Probe.from_source("digits", seed=0, batch_size=args.batch)
    cells = list(sample_nb201_cells(args.cells, seed=args.seed))
    start = time.perf_counter()
    zc.az_nas_cell(cells[0], probe)
    warm = time.perf_counter() - start
    print(f"warm-up on cell 0 (not counted): {warm:.3f} s")

    rows = []
    print(f"{'cell':>4} {'ops':>3} {'expressivity':>12} {'progress.':>9} {'trainab.':>9} {'MFLOPs':>8} {'s':>6}  arch")
    for i, cell in enumerate(cells):
        start = time.perf_counter()
        values = zc.az_nas_cell(cell, probe)
        seconds = time.perf_counter() - start
        arch = nb201_from_cell(cell)
        rows.append({"cell": i, "arch": arch, "seconds": seconds, **values})
        print(f"{i:>4} {len(cell.ops):>3} {values['expressivity']:>12.3f} {values['progressivity']:>9.3f} "
              f"{values['trainability']:>9.3f} {values['complexity'] / 1e6:>8.1f} {seconds:>6.3f}  {arch}",
              flush=True)

    total = sum(r["seconds"] for r in rows)
    figures = {
        "cells": len(rows),
        "threads": torch.get_num_threads(),
        "probe": probe.id,
        "torch_version": torch.__version__,
        "cells_per_s": round(len(rows) / total, 3),
        "median_s_per_cell": round(statistics.median(r["seconds"] for r in rows), 4),
        "warmup_s": round(warm, 3),
    }
    print()
    report(figures, args.json, {"rows": rows})


if __name__ == "__main__":
    main()
