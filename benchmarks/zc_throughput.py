"""Throughput of z(x) + T-CET on α_x: lightning-nas vs the authors' library alethiometer 1.1.2 (CPU, same run).

    python benchmarks/zc_throughput.py [--networks 8] [--threads 2] [--seed 0] [--rtol 1e-4] [--json out.json]

For ``--networks`` K α_x networks of seeded random GraphNet cells (``Cell.random(seed=seed + i)``, built once with
``zc.probe_network``, not timed) and the digits probe (64 × 3×32×32, ``Probe.from_source("digits", seed=0)``), times

- **ours**: ``zc.evaluate_proxies(net, x, y, ["naswot", "snip_ssnr", "params", "flops", "tcet"])`` — what
  ``zc.cell_scores`` does on a prebuilt network (NASWOT, SNIP-SSNR none, #params, FLOPs, T-CET SNIP log1p);
- **alethiometer**: ``calc_zc_metrics(["nwot", "snr_snip_none", "tcet_snip_log1p"], net, DataLoader(...), cpu)``
  plus #params (sum of ``numel``) and FLOPs from ``lightning_nas.space.count_cost`` — alethiometer has no FLOPs
  counter, so both sides pay the same FLOP count.

The network is put in train mode before each call (alethiometer scores deep copies of it in the mode it finds).
One untimed warm-up call of each side comes first; per network the order of the two measurements alternates
(ours first on even networks) so warm-up and cache effects do not favour one side. Every value is checked to agree
within ``--rtol`` (relative). Prints one row per network and a summary: networks/s of both, the speed-up
ours/alethiometer (goal ≥ 2.5×) and the torch threads used.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from _report import report
from torch.utils.data import DataLoader, TensorDataset

from lightning_nas import zc
from lightning_nas.space import Cell, count_cost

OURS = ("naswot", "snip_ssnr", "params", "flops", "tcet")
ALETHIOMETER = {"naswot": "nwot", "snip_ssnr": "snr_snip_none", "tcet": "tcet_snip_log1p"}
GOAL = 2.5


def ours(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, float], dict[str, str]]:
    net.train()
    return zc.evaluate_proxies(net, x, y, OURS)


def theirs(net: torch.nn.Module, loader: DataLoader, input_shape: tuple[int, ...]) -> dict[str, float]:
    import alethiometer

    net.train()
    raw = alethiometer.calc_zc_metrics(list(ALETHIOMETER.values()), net, loader, torch.device("cpu"))
    values = {ours_name: float(raw[their_name]) for ours_name, their_name in ALETHIOMETER.items()}
    values["params"] = float(sum(p.numel() for p in net.parameters()))
    values["flops"] = float(count_cost(net, input_shape)["flops"])
    return {name: values[name] for name in OURS}


def rel_diff(a: float, b: float) -> float:
    if a == b:
        return 0.0
    if not (math.isfinite(a) and math.isfinite(b)):
        return math.inf
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", type=int, default=8, help="α_x networks to score (default 8)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="cell i is Cell.random(seed=seed + i) (default 0)")
    parser.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance of the agreement check")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.networks < 1 or args.threads < 1:
        parser.error("--networks and --threads must be positive")
    torch.set_num_threads(args.threads)
    from importlib.metadata import version

    import alethiometer  # noqa: F401 - fail early when it is missing

    probe = zc.Probe.from_source("digits", seed=0, batch_size=64)
    x, y = probe.x, probe.y
    loader = DataLoader(TensorDataset(x, y), batch_size=len(y), shuffle=False)
    shape = tuple(x.shape[1:])
    cells = [Cell.random(seed=args.seed + i) for i in range(args.networks)]
    nets = [zc.probe_network(c, probe) for c in cells]

    start = time.perf_counter()
    ours(nets[0], x, y)  # untimed warm-up of both sides (reported, not counted)
    warm_ours = time.perf_counter() - start
    start = time.perf_counter()
    theirs(nets[0], loader, shape)
    warm_theirs = time.perf_counter() - start
    print(f"warm-up on network 0 (not counted): ours {warm_ours:.3f} s, alethiometer {warm_theirs:.3f} s")

    rows = []
    print(f"{'net':>3} {'ops':>3} {'params':>9} {'ours s':>7} {'aleth s':>7} {'×':>5} {'max rel diff':>12}  first")
    for i, net in enumerate(nets):
        times: dict[str, float] = {}
        sides = ("ours", "alethiometer") if i % 2 == 0 else ("alethiometer", "ours")
        for side in sides:
            start = time.perf_counter()
            if side == "ours":
                mine, problems = ours(net, x, y)
            else:
                other = theirs(net, loader, shape)
            times[side] = time.perf_counter() - start
        diffs = {name: rel_diff(mine[name], other[name]) for name in OURS}
        worst = max(diffs, key=diffs.get)
        row = {
            "network": i,
            "cell_seed": args.seed + i,
            "op_nodes": len(cells[i].ops),
            "first": sides[0],
            "ours_s": times["ours"],
            "alethiometer_s": times["alethiometer"],
            "ours": mine,
            "alethiometer": other,
            "rel_diff": diffs,
            "agree": all(d <= args.rtol for d in diffs.values()),
            "problems": problems,
        }
        rows.append(row)
        flag = "" if row["agree"] else f"  DISAGREE ({worst}: ours {mine[worst]!r} vs {other[worst]!r})"
        flag += f"  problems: {problems}" if problems else ""
        print(
            f"{i:>3} {len(cells[i].ops):>3} {int(mine['params']):>9} {times['ours']:>7.3f} "
            f"{times['alethiometer']:>7.3f} {times['alethiometer'] / times['ours']:>5.2f} "
            f"{diffs[worst]:>12.2e}  {sides[0]}{flag}",
            flush=True,
        )

    ours_total = sum(r["ours_s"] for r in rows)
    their_total = sum(r["alethiometer_s"] for r in rows)
    per_network = [r["alethiometer_s"] / r["ours_s"] for r in rows]
    figures = {
        "networks": len(rows),
        "threads": torch.get_num_threads(),
        "batch": len(y),
        "probe": probe.id,
        "alethiometer_version": version("alethiometer"),
        "torch_version": torch.__version__,
        "ours_networks_per_s": round(len(rows) / ours_total, 3),
        "alethiometer_networks_per_s": round(len(rows) / their_total, 3),
        "speedup_ours_over_alethiometer": round(their_total / ours_total, 2),
        "speedup_per_network_median": round(statistics.median(per_network), 2),
        "speedup_per_network_min": round(min(per_network), 2),
        "speedup_per_network_max": round(max(per_network), 2),
        "warmup_s": {"ours": round(warm_ours, 3), "alethiometer": round(warm_theirs, 3)},
        "goal": GOAL,
        "goal_met": their_total / ours_total >= GOAL,
        "all_agree": all(r["agree"] for r in rows),
        "max_rel_diff": {name: max(r["rel_diff"][name] for r in rows) for name in OURS},
        "rtol": args.rtol,
        "flops_note": "alethiometer has no FLOPs counter: its side uses lightning_nas.space.count_cost too",
    }
    print()
    report(figures, args.json, {"rows": rows})


if __name__ == "__main__":
    main()
