"""Final training: NAS-Bench-360 tasks through `evaluate`, task/architecture mismatches, mixup and distillation,
recipes composed onto task configs, and resuming a killed training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch

from lightning_nas.cli import main
from lightning_nas.models import ClassifierModule, DenseModule
from tests.conftest import REPO
from tests.test_nb360 import write_darcy_flow, write_ecg

CONFIGS = REPO / "configs"


def evaluate_on(task: str, folder, tmp_path, monkeypatch) -> dict:
    monkeypatch.setattr(sys, "argv", ["lightning_nas"])
    main(["evaluate", "--config", str(CONFIGS / "evaluate" / f"{task}.yaml"), "--trainer.logger=false",
          "--trainer.max_epochs=1", "--trainer.accelerator=cpu", f"--trainer.default_root_dir={tmp_path / 'run'}",
          f"--trainer.callbacks.dirpath={tmp_path / 'run' / 'checkpoints'}", f"--data.init_args.data_dir={folder}",
          "--data.init_args.batch_size=4"])
    return json.loads((tmp_path / "run" / "metrics.json").read_text())


@pytest.mark.parametrize("task,write,metric", [("ecg", write_ecg, "macro_f1"),
                                               ("darcy_flow", write_darcy_flow, "relative_l2")])
def test_nb360_task_config_trains_and_reports_its_metric(task, write, metric, tmp_path, monkeypatch):
    """The shipped task config on small files in the published format (1-D classification; dense 2-D regression)."""
    data = tmp_path / "data"
    data.mkdir()
    write(data)
    metrics = evaluate_on(task, data, tmp_path, monkeypatch)
    assert metrics["task"] == task and metrics["test_metric_name"] == metric
    assert metrics["test_metric"] == metrics[f"test_{metric}"] and metrics["test_metric"] >= 0
    assert metrics["params"] > 0 and metrics["macs"] > 0 and metrics["epochs"] == 1 and metrics["seconds"] > 0
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["lightning_nas"]["kind"] == ("dense" if task == "darcy_flow" else "classifier")
    assert checkpoint["lightning_nas"]["input_shape"] == ([3, 85, 85] if task == "darcy_flow" else [1, 1000])


def test_mismatches_name_the_fix():
    with pytest.raises(ValueError, match="set num_classes: 4, in_channels: 1, dims: 1"):
        ClassifierModule(arch=str(CONFIGS / "archs" / "seq1d.json"), task="ecg")
    with pytest.raises(ValueError, match="dense task; train it with lightning_nas.models.DenseModule"):
        ClassifierModule(arch=str(CONFIGS / "archs" / "dense.json"), task="darcy_flow")
    with pytest.raises(ValueError, match=r"set the stride of stages\[1\] \(stride 2\), stages\[2\] \(stride 2\) to 1"):
        DenseModule(arch=str(CONFIGS / "archs" / "digits.json"), task="cosmic")
    with pytest.raises(ValueError, match="not a NAS-Bench-360 task"):
        ClassifierModule(arch=str(CONFIGS / "archs" / "digits.json"), task="mnist")
    model = ClassifierModule(arch=str(CONFIGS / "archs" / "digits.json"), in_channels=3)
    with pytest.raises(ValueError, match="built for 3 channels and 2-D data: set model.init_args.in_channels"):
        model.training_step((torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)), 0)


def test_dense_network_keeps_resolution_and_one_d_networks_run():
    dense = DenseModule(arch=str(CONFIGS / "archs" / "dense.json"), task="psicov")
    assert dense(torch.zeros(2, 57, 24, 24)).shape == (2, 1, 24, 24)
    seq = ClassifierModule(arch=str(CONFIGS / "archs" / "seq1d.json"), num_classes=36, in_channels=4, dims=1,
                           task="deepsea")
    assert seq(torch.zeros(2, 4, 1000)).shape == (2, 36)


def test_mixup_and_distillation_change_the_training_loss(tmp_path):
    torch.manual_seed(0)
    arch = str(CONFIGS / "archs" / "digits.json")
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with warnings.catch_warnings():  # TorchScript is deprecated in torch 2.14 but still loads
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)
        torch.jit.trace(teacher, x).save(str(tmp_path / "teacher.pt"))
    torch.export.save(torch.export.export(teacher, (x,)), tmp_path / "teacher.pt2")

    def loss(**kw):
        torch.manual_seed(1)
        model = ClassifierModule(arch=arch, in_channels=1, **kw)
        model.load_state_dict(base.state_dict(), strict=False)
        model.optimizers = lambda: torch.optim.SGD(model.parameters(), lr=0.1)  # training_step logs the lr
        model.log = lambda *a, **k: None
        torch.manual_seed(2)
        return model.training_step((x, y), 0).item()

    base = ClassifierModule(arch=arch, in_channels=1)
    plain = loss()
    assert loss() == plain  # deterministic
    assert loss(mixup_alpha=0.2) != plain
    for name in ("teacher.pt", "teacher.pt2"):
        distilled = loss(teacher=str(tmp_path / name))
        assert distilled > plain  # + KL(teacher ∥ student) ≥ 0, here > 0
    with pytest.raises(FileNotFoundError, match="export the teacher once"):
        ClassifierModule(arch=arch, in_channels=1, teacher=str(tmp_path / "none.pt"))


RECIPES = [("digits", "fast"), ("cifar10", "zennas_cifar"), ("cifar100", "fast"), ("imagenet", "zennas_imagenet")]


@pytest.mark.parametrize("task,recipe", RECIPES)
def test_recipes_compose_onto_task_configs(task, recipe, capsys, monkeypatch):
    import yaml

    monkeypatch.setattr(sys, "argv", ["lightning_nas"])
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(CONFIGS / "evaluate" / f"{task}.yaml"), "--config",
              str(CONFIGS / "recipes" / f"{recipe}.yaml"), "--print_config"])
    config = yaml.safe_load(capsys.readouterr().out)
    wanted = yaml.safe_load((CONFIGS / "recipes" / f"{recipe}.yaml").read_text())
    assert config["trainer"]["max_epochs"] == wanted["trainer"]["max_epochs"]
    for key, value in wanted["model"]["init_args"].items():
        assert config["model"]["init_args"][key] == value, key
    for key, value in wanted.get("data", {}).get("init_args", {}).items():
        assert config["data"]["init_args"][key] == value, key


def test_killed_training_resumes_from_its_last_checkpoint(tmp_path):
    """kill -9 during `evaluate`, then `--ckpt_path last`: training continues from the saved epoch, not from 0."""
    root = tmp_path / "run"
    args = [sys.executable, "-m", "lightning_nas", "evaluate", "--config", str(CONFIGS / "evaluate" / "digits.yaml"),
            "--trainer.logger=false", "--trainer.max_epochs=6", f"--trainer.default_root_dir={root}",
            f"--trainer.callbacks.dirpath={root / 'checkpoints'}", "--trainer.enable_progress_bar=false"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = root / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if last.is_file() and torch.load(last, weights_only=True)["epoch"] >= 1:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = torch.load(last, weights_only=True)
    assert 1 <= saved["epoch"] < 5, "the run finished before it could be killed"
    resumed = subprocess.run(args + ["--ckpt_path", "last"], cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Restoring states from the checkpoint path at {last}" in resumed.stdout + resumed.stderr
    final = torch.load(last, weights_only=True)
    steps_per_epoch = saved["global_step"] // (saved["epoch"] + 1)
    assert final["global_step"] == 6 * steps_per_epoch, (saved["epoch"], saved["global_step"], final["global_step"])
    assert json.loads((root / "metrics.json").read_text())["test_acc"] > 0.8
