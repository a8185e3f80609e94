"""ZC labelling with 1 and with 2 processes: Lightning's predict loop on the CPU (gloo, one torch thread each).

    python benchmarks/zc_scale.py [--cells 200] [--probe digits] [--batch 8] [--op-set graphnet] [--out FILE]

Labels the same ``--cells`` cells (the zc stage's seeded sample, every one labelled) twice, in two fresh run
directories: ``--workers 1`` (in-process) and ``--workers 2`` (``ddp_spawn``). ``seconds_*`` is the stage's labelling
wall time (``metrics.json`` ``seconds``: the predict loop with process start-up, merging and claims — what a user
waits for), not the start-up of Python itself; ``identical`` says the two archives hold the same cells with the same
ZC rows (values, status). Writes ``benchmarks/results/zc_scale.json`` and prints, as its last line, one JSON object
``{"cells", "seconds_1", "seconds_2", "speedup", "identical"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightning_nas.archive import Archive  # noqa: E402


def label(workdir: Path, workers: int, args) -> dict:
    cmd = [sys.executable, "-m", "lightning_nas", "zc", "--config", str(REPO / "configs/zc/tiny.yaml"),
           f"--workdir={workdir}", f"--op_set={args.op_set}", f"--unlabelled={args.cells}", f"--labelled={args.cells}",
           f"--workers={workers}", "--threads=1", f"--probe.source={args.probe}", f"--probe.batch_size={args.batch}",
           "--wandb=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"zc stage failed ({workers} process(es)):\n{done.stderr[-3000:]}")
    return json.loads((workdir / "zc" / "metrics.json").read_text())


def rows(workdir: Path) -> dict:
    with Archive(workdir / "archive.sqlite", create=False) as archive:
        probe = archive.resolve_probe()
        return {r["hash"]: (r["status"], r["values"]) for r in archive.zc_rows(probe)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=200, help="cells to label (default 200)")
    parser.add_argument("--probe", default="digits", help="probe source (digits: bundled real images)")
    parser.add_argument("--batch", type=int, default=8,
                        help="probe batch size (default 8: compute-bound; 32, the tiny config's, is bound by this "
                             "machine's memory bandwidth when two processes run)")
    parser.add_argument("--op-set", default="graphnet", choices=["graphnet", "nb201"])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "zc_scale.json"))
    args = parser.parse_args()
    if args.cells < 2:
        parser.error("--cells must be at least 2")

    with tempfile.TemporaryDirectory(prefix="zc_scale_") as tmp:
        one = label(Path(tmp) / "one", 1, args)
        two = label(Path(tmp) / "two", 2, args)
        rows_1, rows_2 = rows(Path(tmp) / "one"), rows(Path(tmp) / "two")
    identical = rows_1 == rows_2 and len(rows_1) == one["labelled"] + one["failed"]
    result = {"cells": len(rows_1), "seconds_1": one["seconds"], "seconds_2": two["seconds"],
              "speedup": round(one["seconds"] / two["seconds"], 3), "identical": identical}
    detail = {**result, "op_set": args.op_set, "probe": f"{args.probe}, batch {args.batch}",
              "seconds_per_eval_1": one["seconds_per_eval"], "seconds_per_eval_2": two["seconds_per_eval"],
              "evals_per_s_1": one["evals_per_s"], "evals_per_s_2": two["evals_per_s"],
              "cpus": os.cpu_count(), "command": " ".join(["python", "benchmarks/zc_scale.py", *sys.argv[1:]])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(detail, indent=2) + "\n")
    print(f"{len(rows_1)} cells ({args.op_set}, {args.probe} probe batch {args.batch}): "
          f"1 process {one['seconds']:.1f} s "
          f"({one['evals_per_s']:.2f} vectors/s), 2 processes {two['seconds']:.1f} s ({two['evals_per_s']:.2f} "
          f"vectors/s) -> {result['speedup']:.2f}x; identical rows: {identical}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
