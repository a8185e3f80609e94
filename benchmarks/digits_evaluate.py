"""Wall time of ``make evaluate TASK=digits`` (the shipped config, fit + test) and the accuracy it reaches.

    python benchmarks/digits_evaluate.py [--out /tmp/digits]

The README's goal: ≥ 0.98 test accuracy in ≤ 5 minutes on 2 CPU cores (about 30 s when the CPU is not shared). The
test suite checks the accuracy only (tests/test_cli_digits.py); the time depends on what else the machine runs, so it
is measured here. Prints one JSON object ``{"seconds", "test_acc", "within_goal"}`` as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output directory (default: a temporary one)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="digits-"))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lightning_nas", "evaluate", "--config", "configs/evaluate/digits.yaml",
                    f"--trainer.default_root_dir={out}", f"--trainer.callbacks.dirpath={out / 'checkpoints'}",
                    "--trainer.logger=false"], cwd=REPO, check=True, env={**os.environ, "WANDB_MODE": "disabled"})
    seconds = time.perf_counter() - start
    acc = json.loads((out / "metrics.json").read_text())["test_acc"]
    print(json.dumps({"seconds": round(seconds, 1), "test_acc": acc, "within_goal": seconds <= 300 and acc >= 0.98}))


if __name__ == "__main__":
    main()
