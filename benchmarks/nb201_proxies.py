"""Zero-cost proxies of α_x against NAS-Bench-201 ground truth (CPU, resumable, parallel).

    python benchmarks/nb201_proxies.py [--cells 1000] [--seed 0] [--workers 2] [--probes digits,gaussian]
                                       [--zen-repeats 4] [--csv data/nb201/nats_bench_tss.csv]
                                       [--out benchmarks/results/nb201_proxies.md] [--jsonl PATH]
                                       [--report-only] [--json summary.json]

Draws ``--cells`` rows of the NATS-Bench-TSS table with ``random.Random(seed).sample`` among the 15 284 reachable
cells (the 341 whose output no path reaches have no GraphNet cell), builds α_x of each (``zc.probe_network``) and
computes, per probe (``zc.Probe.from_source(source, seed=0)``, batch 64): NASWOT (conv/linear-output variant),
LNWOT, SNIP, SNIP-SSNR (none, log1p), T-CET (log1p), Zen-score (``--zen-repeats`` draws, default 4 — the authors
use 32), ZiCo, #params and FLOPs. Then Spearman ρ and Kendall τ (``scipy.stats``) of every proxy against
CIFAR-10, CIFAR-100 and ImageNet16-120 test accuracy, written as a markdown table (``--out``).

Resumable: each finished (row, probe) is appended to the JSONL (default: ``--out`` with ``.jsonl``) as one line;
a rerun skips the pairs already there (failed pairs are retried). ``--workers W`` processes (spawn context, one
torch thread each) evaluate the cells; only the parent writes the file. ``--report-only`` rebuilds the table from
the JSONL without evaluating anything (the CSV is not needed: every line carries its accuracies).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CSV = REPO / "data" / "nb201" / "nats_bench_tss.csv"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "nb201_proxies.md"

# one shared forward/backward set for these (zc.evaluate_proxies), then ZiCo and Zen separately
PASS_PROXIES = ("naswot", "lnwot", "snip", "snip_ssnr_none", "snip_ssnr_log1p", "tcet_log1p", "params", "flops")
PROXY_ORDER = (
    "naswot", "lnwot", "snip", "snip_ssnr_none", "snip_ssnr_log1p", "tcet_log1p", "zen", "zico", "params", "flops"
)
LABELS = {
    "naswot": "NASWOT (conv/linear outputs)",
    "lnwot": "LNWOT",
    "snip": "SNIP",
    "snip_ssnr_none": "SNIP-SSNR (none)",
    "snip_ssnr_log1p": "SNIP-SSNR (log1p)",
    "tcet_log1p": "T-CET (SNIP, log1p)",
    "zen": "Zen-score",
    "zico": "ZiCo",
    "params": "#params",
    "flops": "FLOPs",
}
# published Spearman ρ with CIFAR-10 on NB201 (real CIFAR-10 batches; Mellor et al. 2021, Abdelfattah et al. 2021,
# Li et al. 2023); synflow is not computed here.
ANCHORS = {"naswot": "≈ 0.80", "params": "≈ 0.75", "snip": "≈ 0.6", "zico": "≈ 0.80"}
DATASETS = (("cifar10", "CIFAR-10"), ("cifar100", "CIFAR-100"), ("imagenet16", "ImageNet16-120"))
BATCH = 64
PROBE_SEED = 0


# ---- worker side ------------------------------------------------------------------------------------------------
_PROBES: dict = {}


def _init_worker(threads: int, ignore_sigint: bool = True) -> None:
    import signal

    import torch

    if ignore_sigint:  # Ctrl-C reaches the parent, which stops the pool; finished lines are already on disk
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    torch.set_num_threads(threads)


def _probe(source: str):
    from lightning_nas import zc

    if source not in _PROBES:
        _PROBES[source] = zc.Probe.from_source(source, seed=PROBE_SEED, batch_size=BATCH)
    return _PROBES[source]


def _clean(values: dict[str, float], problems: dict[str, str]) -> dict[str, float | None]:
    """Non-finite values become null in the JSONL (their reason is kept in ``problems``)."""
    out = {}
    for name, v in values.items():
        if math.isfinite(v):
            out[name] = v
        else:
            out[name] = None
            problems.setdefault(name, f"non-finite value ({v})")
    return out


def evaluate_task(task: dict) -> dict:
    """One (row, probe): every proxy of α_x, with timings. Never raises: a failure is returned as ``error``."""
    from lightning_nas import zc
    from lightning_nas.space.nb201 import cell_from_nb201

    line = {k: task[k] for k in ("row", "probe", "arch_str", "cifar10", "cifar100", "imagenet16", "config", "workers")}
    try:
        probe = _probe(task["probe"])
        start = time.perf_counter()
        net = zc.probe_network(cell_from_nb201(task["arch_str"]), probe)
        values, problems = zc.evaluate_proxies(net, probe.x, probe.y, PASS_PROXIES)
        t_zico = time.perf_counter()
        values["zico"] = zc.zico(net, probe.x, probe.y)
        t_zen = time.perf_counter()
        values["zen"] = zc.zen_score(net, probe.x, repeats=task["config"]["zen_repeats"])
        end = time.perf_counter()
        line.update(
            probe_id=probe.id,
            values=_clean(values, problems),
            problems=problems,
            seconds=round(end - start, 4),
            zico_seconds=round(t_zen - t_zico, 4),
            zen_seconds=round(end - t_zen, 4),
        )
    except Exception as e:  # noqa: BLE001 - recorded and retried on the next run
        line["error"] = f"{type(e).__name__}: {e}"
    return line


# ---- parent side ------------------------------------------------------------------------------------------------
def sample_rows(csv_path: Path, n: int, seed: int):
    from lightning_nas.space.nb201 import cell_from_nb201, read_nb201_csv

    reachable = []
    for record in read_nb201_csv(csv_path):
        try:
            cell_from_nb201(record.arch_str)
        except ValueError:
            continue
        reachable.append(record)
    if n > len(reachable):
        raise SystemExit(f"--cells {n}: only {len(reachable)} reachable NB201 rows")
    return random.Random(seed).sample(reachable, n), len(reachable)


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    lines = []
    with path.open() as f:
        for number, text in enumerate(f, 1):
            text = text.strip()
            if not text:
                continue
            try:
                lines.append(json.loads(text))
            except json.JSONDecodeError:  # a line cut short by a kill: ignored, the pair is redone
                print(f"warning: {path}:{number} is not valid JSON (interrupted write?); ignored", file=sys.stderr)
    return lines


def latest_ok(lines: list[dict]) -> dict[tuple[int, str], dict]:
    """(row, probe) → last successful line."""
    done = {}
    for line in lines:
        if "error" not in line:
            done[(line["row"], line["probe"])] = line
    return done


def run(args, jsonl: Path) -> None:
    config = {"batch": BATCH, "probe_seed": PROBE_SEED, "zen_repeats": args.zen_repeats}
    existing = read_jsonl(jsonl)
    other = {json.dumps(l["config"], sort_keys=True) for l in existing if l.get("config") != config}
    if other:
        raise SystemExit(
            f"{jsonl} holds results computed with another configuration ({', '.join(sorted(other))}); "
            f"this run uses {json.dumps(config, sort_keys=True)}. Pass the same --zen-repeats or another --out/--jsonl."
        )
    done = latest_ok(existing)
    rows, n_reachable = sample_rows(Path(args.csv), args.cells, args.seed)
    tasks = [
        {
            "row": r.index, "probe": probe, "arch_str": r.arch_str,
            "cifar10": r.cifar10, "cifar100": r.cifar100, "imagenet16": r.imagenet16, "config": config,
            "workers": args.workers,
        }
        for r in rows
        for probe in args.probes
        if (r.index, probe) not in done
    ]
    total = len(rows) * len(args.probes)
    print(
        f"{len(rows)} of {n_reachable} reachable NB201 rows (seed {args.seed}) × {len(args.probes)} probe(s): "
        f"{total - len(tasks)} done in {jsonl}, {len(tasks)} to evaluate with {args.workers} worker(s)",
        flush=True,
    )
    if not tasks:
        return
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    failures = 0
    if jsonl.is_file() and jsonl.stat().st_size and not jsonl.read_bytes().endswith(b"\n"):
        with jsonl.open("a") as f:  # a line cut short by a kill: end it so the next line stays valid
            f.write("\n")
    with jsonl.open("a") as f:

        def record(i: int, line: dict) -> None:
            nonlocal failures
            f.write(json.dumps(line, allow_nan=False) + "\n")
            f.flush()
            failures += "error" in line
            if "error" in line:
                print(f"  row {line['row']} {line['probe']}: {line['error']}", file=sys.stderr, flush=True)
            if i % args.progress == 0 or i == len(tasks):
                elapsed = time.perf_counter() - start
                eta = elapsed / i * (len(tasks) - i)
                print(f"  {i}/{len(tasks)}  {elapsed:.0f} s elapsed, ~{eta:.0f} s left, {failures} failed", flush=True)

        if args.workers <= 1:
            _init_worker(args.threads, ignore_sigint=False)
            for i, task in enumerate(tasks, 1):
                record(i, evaluate_task(task))
        else:
            ctx = mp.get_context("spawn")
            with ctx.Pool(args.workers, initializer=_init_worker, initargs=(args.threads,)) as pool:
                for i, line in enumerate(pool.imap_unordered(evaluate_task, tasks, chunksize=1), 1):
                    record(i, line)
    print(f"evaluated {len(tasks)} pair(s) in {time.perf_counter() - start:.1f} s wall ({failures} failed)")


# ---- report -----------------------------------------------------------------------------------------------------
def correlations(lines: list[dict]) -> dict:
    from scipy import stats

    out = {}
    for name in PROXY_ORDER:
        usable = [l for l in lines if l["values"].get(name) is not None]
        entry = {"n": len(usable), "problems": sum(name in l.get("problems", {}) for l in lines)}
        xs = [l["values"][name] for l in usable]
        for key, _ in DATASETS:
            ys = [l[key] for l in usable]
            if len(usable) < 3 or len(set(xs)) < 2:
                rho = tau = float("nan")
            else:
                rho = float(stats.spearmanr(xs, ys).statistic)
                tau = float(stats.kendalltau(xs, ys).statistic)
            entry[key] = {"spearman": rho, "kendall": tau}
        out[name] = entry
    return out


def _fmt(v: float) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:+.3f}"


def build_report(lines: list[dict], jsonl: Path) -> tuple[str, dict]:
    ok = list(latest_ok(lines).values())
    failed = {(l["row"], l["probe"]) for l in lines if "error" in l} - {(l["row"], l["probe"]) for l in ok}
    by_probe: dict[str, list[dict]] = defaultdict(list)
    for line in ok:
        by_probe[line["probe"]].append(line)
    configs = {json.dumps(l["config"], sort_keys=True) for l in ok}
    zen_repeats = sorted({l["config"]["zen_repeats"] for l in ok})
    summary: dict = {"jsonl": str(jsonl), "failed_pairs": len(failed), "probes": {}}
    md = [
        "# Zero-cost proxies of α_x vs NAS-Bench-201 accuracy",
        "",
        f"Generated by `benchmarks/nb201_proxies.py` from `{jsonl.name}` "
        f"({len(ok)} evaluated (row, probe) pairs{f', {len(failed)} failed' if failed else ''}).",
        "Network: α_x of each NB201 cell (17 cells, 16/32/64 channels, `zc.probe_network`), one batch of 64 "
        "(3×32×32), CPU, one torch thread per worker. Rows: seeded `random.Random(seed).sample` of the reachable "
        "NATS-Bench-TSS rows. Accuracy: 200-epoch test accuracy (CIFAR-10, CIFAR-100, ImageNet16-120).",
        "",
        "Notes:",
        "",
        "- **NASWOT here is the conv/linear-output variant** (alethiometer `nwot`: codes of every Conv/Linear "
        "output, eval mode), not Mellor et al.'s ReLU-input variant in train mode.",
        f"- **Zen-score uses {', '.join(map(str, zen_repeats)) or '?'} repeat(s)** of batch 16 "
        "(the authors average 32), to keep the CPU cost down.",
        "- SNIP-SSNR and T-CET as in alethiometer 1.1.2 (`snr_snip_<mode>`, `tcet_snip_log1p`); FLOPs = 2 × "
        "conv/linear MACs of one sample. ZiCo: two half-batch passes.",
        "- Published Spearman ρ with CIFAR-10 on NB201, measured on *real CIFAR-10 batches* (ours: digits / "
        "Gaussian probes): NASWOT ≈ 0.80, #params ≈ 0.75, SNIP ≈ 0.6, synflow 0.78 (not computed here), "
        "ZiCo ≈ 0.80.",
        "- ρ = Spearman, τ = Kendall τ-b (scipy.stats). A proxy value that hit a numerical dead end is the "
        "library's sentinel (e.g. 0 for a singular NASWOT/LNWOT kernel) and counted under *problems*; "
        "null (non-finite) values are left out of n.",
        "- LNWOT *problems* = n is expected: the classifier's kernel (10 output units, rank ≤ 11 < 64 samples) is "
        "singular in every cell, so that layer always contributes the sentinel 0.",
        "- Zen-score re-initialises the weights and draws its own Gaussian inputs (only the probe's shape is used), "
        "so its column is the same for every probe.",
    ]
    if len(configs) > 1:
        md.append(f"- **Warning: the JSONL mixes configurations** {sorted(configs)}.")
    for probe in sorted(by_probe):
        plines = by_probe[probe]
        secs = [l["seconds"] for l in plines]
        zen_s = [l["zen_seconds"] for l in plines]
        zico_s = [l["zico_seconds"] for l in plines]
        corr = correlations(plines)
        probe_ids = sorted({l.get("probe_id", "?") for l in plines})
        workers = sorted({l.get("workers", "?") for l in plines}, key=str)
        summary["probes"][probe] = {
            "cells": len(plines),
            "probe_id": probe_ids,
            "seconds_per_cell_mean": statistics.mean(secs),
            "seconds_per_cell_median": statistics.median(secs),
            "zen_seconds_mean": statistics.mean(zen_s),
            "zico_seconds_mean": statistics.mean(zico_s),
            "correlations": corr,
        }
        md += [
            "",
            f"## Probe `{probe}` ({', '.join(probe_ids)})",
            "",
            f"Cells evaluated: **{len(plines)}**. Seconds per cell (one thread; build + all proxies): "
            f"mean {statistics.mean(secs):.2f}, median {statistics.median(secs):.2f} "
            f"(of which ZiCo {statistics.mean(zico_s):.2f}, Zen {statistics.mean(zen_s):.2f} on average); "
            f"worker processes running side by side: {', '.join(map(str, workers))} "
            "(wall seconds inside a worker: they grow when the workers outnumber free cores).",
            "",
            "| proxy | ρ C10 | τ C10 | ρ C100 | τ C100 | ρ IN16 | τ IN16 | published ρ C10 | n | problems |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name in PROXY_ORDER:
            c = corr[name]
            label = LABELS[name] + (f" ({', '.join(map(str, zen_repeats))} rep.)" if name == "zen" else "")
            cells = [f"{_fmt(c[k]['spearman'])} | {_fmt(c[k]['kendall'])}" for k, _ in DATASETS]
            md.append(
                f"| {label} | {' | '.join(cells)} | {ANCHORS.get(name, '—')} | {c['n']} | {c['problems']} |"
            )
    if failed:
        md += ["", f"Failed pairs (retried on the next run): {len(failed)}, e.g. {sorted(failed)[:5]}."]
    return "\n".join(md) + "\n", summary


def _finite(obj):
    """NaN/±inf → null, so ``--json`` writes standard JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=1000, help="NB201 rows to sample (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="row-sampling seed (default 0)")
    parser.add_argument("--probes", default="digits,gaussian", help="comma-separated probe sources")
    parser.add_argument("--zen-repeats", type=int, default=4, help="Zen-score draws per cell (default 4)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (spawn; default 1 = in-process)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    parser.add_argument("--csv", default=str(DEFAULT_CSV), help=f"NATS-Bench-TSS table (default {DEFAULT_CSV})")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="markdown report (default %(default)s)")
    parser.add_argument("--jsonl", help="raw per-(row, probe) values (default: --out with .jsonl)")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the report from the JSONL")
    parser.add_argument("--progress", type=int, default=10, help="print progress every this many pairs")
    parser.add_argument("--json", help="also write the summary (correlations, timings) to this file")
    args = parser.parse_args()
    args.probes = [p.strip() for p in args.probes.split(",") if p.strip()]
    from lightning_nas.zc import PROBE_SOURCES

    bad = [p for p in args.probes if p not in PROBE_SOURCES or p == "cifar10"]
    if bad:
        parser.error(f"--probes: {bad}; choose from digits, gaussian (cifar10 needs a data_dir, not wired here)")
    if args.cells < 1 or args.workers < 1 or args.zen_repeats < 1 or args.threads < 1 or args.progress < 1:
        parser.error("--cells, --workers, --threads, --zen-repeats and --progress must be positive")
    out = Path(args.out)
    jsonl = Path(args.jsonl) if args.jsonl else out.with_suffix(".jsonl")

    if not args.report_only:
        try:
            run(args, jsonl)
        except KeyboardInterrupt:
            raise SystemExit(f"interrupted: the pairs finished so far are in {jsonl}; "
                             "rerun the same command to resume") from None
    lines = read_jsonl(jsonl)
    if not lines:
        raise SystemExit(f"{jsonl}: no results to report")
    report, summary = build_report(lines, jsonl)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(report)
    print(f"wrote {out} (raw values: {jsonl})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(_finite(summary), f, indent=2)


if __name__ == "__main__":
    main()
