"""The LightningCLI entry point on the bundled digits data: real training, real checkpoints, real errors."""

import json
import os
import subprocess
import sys

import pytest
import torch

from datamodules import DigitsDataModule
from lightning_nas.cli import main
from lightning_nas.models import ClassifierModule
from tests.conftest import REPO

CONFIG = str(REPO / "configs" / "evaluate" / "digits.yaml")


def run_cli(*args, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "lightning_nas", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_evaluate_digits_config_reaches_96_5_percent_with_offline_wandb(tmp_path):
    """The shipped config, unchanged but for its output directory, clears 96.5 % test accuracy. The bar is a margin
    under a measured spread, not one machine's number: seeds 0–4 on this CPU gave 0.983, 0.981, 0.981, 0.972, 0.978
    (350–354 of the 360 test digits) and another CPU gave 0.978 for the config's seed; 96.5 % is three digits under
    the worst. Its time is a benchmark's business (benchmarks/digits_evaluate.py), not an assertion a busy machine
    fails."""
    proc = run_cli(
        "evaluate",
        "--config",
        CONFIG,
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.callbacks.dirpath={tmp_path / 'checkpoints'}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        env={"WANDB_MODE": "offline"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test_acc"] >= 0.965 and metrics["test_metric"] == metrics["test_acc"], metrics
    assert metrics["task"] == "digits" and metrics["test_metric_name"] == "acc" and metrics["epochs"] == 30
    assert metrics["params"] > 0 and metrics["flops"] == 2 * metrics["macs"]
    assert "DigitsDataModule: " in proc.stdout and "test/acc" in proc.stdout
    assert list((tmp_path / "wandb").glob("offline-run-*")), "the W&B logger did not write an offline run"


def test_fit_then_validate_test_predict_from_checkpoint(tmp_path, capsys, monkeypatch):
    """Lightning's own commands, with the W&B logger switched off on the command line."""
    monkeypatch.setattr(sys, "argv", ["lightning_nas"])  # main() gets its arguments, not pytest's
    root = tmp_path / "fit"
    main(["fit", "--config", CONFIG, "--trainer.logger=false", "--trainer.max_epochs=2",
          f"--trainer.default_root_dir={root}",
          f"--trainer.callbacks.dirpath={root / 'checkpoints'}"])
    last = root / "checkpoints" / "last.ckpt"
    assert last.is_file() and (root / "config.yaml").is_file()
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)  # plain data: safe to load
    assert checkpoint["hyper_parameters"]["arch"]["stages"][0]["channels"] == 32
    for command in ("validate", "test", "predict"):
        main([command, "--config", CONFIG, "--trainer.logger=false", f"--ckpt_path={last}",
              f"--trainer.default_root_dir={root}",
              f"--trainer.callbacks.dirpath={root / 'checkpoints'}"])
    out = capsys.readouterr().out
    table = [line.split()[-2] for line in out.splitlines() if "│" in line and ("val/acc" in line or "test/acc" in line)]
    assert len(table) == 2 and all(float(a) > 0.8 for a in table), out[-2000:]

    # the checkpoint alone rebuilds the network (its hparams hold the arch spec, not a path) and predicts
    model = ClassifierModule.load_from_checkpoint(last, weights_only=True).eval()
    data = DigitsDataModule()
    data.setup()
    x, y = next(iter(data.predict_dataloader()))
    probs = model.predict_step((x, y), 0)
    assert torch.allclose(probs.sum(-1), torch.ones(len(x)), atol=1e-5)
    assert (probs.argmax(-1) == y).float().mean() > 0.8


def test_wandb_disabled_by_environment(tmp_path):
    proc = run_cli(
        "fit", "--config", CONFIG, "--trainer.max_epochs=1", f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.callbacks.dirpath={tmp_path / 'checkpoints'}", f"--trainer.logger.init_args.save_dir={tmp_path}",
        env={"WANDB_MODE": "disabled"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not list(tmp_path.rglob("offline-run-*"))


def test_missing_arch_file_is_a_clear_error(tmp_path):
    proc = run_cli("fit", "--config", CONFIG, "--trainer.logger=false", "--model.init_args.arch=nowhere/arch.json",
                   f"--trainer.default_root_dir={tmp_path}")
    assert proc.returncode != 0
    assert "nowhere/arch.json" in proc.stderr and "arch.json" in proc.stderr


def test_malformed_arch_spec_names_the_field(tmp_path):
    spec = json.loads((REPO / "configs" / "archs" / "digits.json").read_text())
    spec["stages"][1]["stride"] = 3
    bad = tmp_path / "arch.json"
    bad.write_text(json.dumps(spec))
    proc = run_cli("fit", "--config", CONFIG, "--trainer.logger=false", f"--model.init_args.arch={bad}",
                   f"--trainer.default_root_dir={tmp_path}")
    assert proc.returncode != 0
    assert "stages[1].stride" in proc.stderr


def test_unknown_command_and_help():
    proc = run_cli("serch")
    assert proc.returncode != 0 and "unknown command 'serch'" in proc.stderr
    assert "evaluate" in run_cli("--help").stdout
