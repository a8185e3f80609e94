"""Throughput of the search-space hot paths on this machine (CPU).

    python benchmarks/space.py [--cells 20000] [--networks 20] [--threads 2] [--json out.json]

Prints: cells sampled/s, canonical hashes/s (fresh cells, no cache), encodings round-tripped/s, α_x networks
built/s, α_x forward ms at batch 64 (3×32×32) in eval and train mode, and the edge statistics of the sampler.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _report import report

from lightning_nas.space import Arch, Cell, build_network, count_cost, sample_cells


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=20_000)
    parser.add_argument("--networks", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    t = time.perf_counter()
    cells = list(sample_cells(args.cells, seed=args.seed))
    sample_s = time.perf_counter() - t

    fresh = [Cell(c.ops, c.edges) for c in cells]  # no cached canonical form
    t = time.perf_counter()
    hashes = {c.canonical_hash() for c in fresh}
    hash_s = time.perf_counter() - t

    t = time.perf_counter()
    for c in cells[:5000]:
        assert Cell.from_tensors(*c.to_tensors()) == c
    encode_s = time.perf_counter() - t

    probe_cells = cells[: args.networks]
    t = time.perf_counter()
    nets = [build_network(Arch.zc_probe(c), 3, 10) for c in probe_cells]
    build_s = time.perf_counter() - t

    x = torch.randn(64, 3, 32, 32)
    eval_ms, train_ms, params = [], [], []
    for net in nets[: min(10, len(nets))]:
        params.append(count_cost(net, (3, 32, 32))["params"])
        net.eval()
        with torch.no_grad():
            net(x)  # warm-up
            t = time.perf_counter()
            net(x)
            eval_ms.append(1000 * (time.perf_counter() - t))
        net.train()
        t = time.perf_counter()
        net(x).sum().backward()
        train_ms.append(1000 * (time.perf_counter() - t))

    edges = [len(c.edges) for c in cells]
    figures = {
        "cells_sampled_per_s": round(rate(len(cells), sample_s)),
        "hashes_per_s": round(rate(len(fresh), hash_s)),
        "distinct_hash_fraction": round(len(hashes) / len(cells), 5),
        "encodings_round_tripped_per_s": round(rate(min(5000, len(cells)), encode_s)),
        "alpha_x_built_per_s": round(rate(len(probe_cells), build_s), 2),
        "alpha_x_forward_eval_ms_b64_median": round(statistics.median(eval_ms), 1),
        "alpha_x_forward_backward_train_ms_b64_median": round(statistics.median(train_ms), 1),
        "alpha_x_params_median": int(statistics.median(params)),
        "edges_mean": round(statistics.mean(edges), 2),
        "edges_min": min(edges),
        "edges_max": max(edges),
        "threads": args.threads,
    }
    report(figures, args.json)


if __name__ == "__main__":
    main()
