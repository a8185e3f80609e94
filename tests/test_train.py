"""Final training: NAS-Bench-360 tasks through `evaluate`, task/architecture mismatches, mixup and distillation,
recipes composed onto task configs, and resuming a killed training."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings

import lightning as L
import pytest
import torch
import yaml
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from lightning_nas.cli import main
from lightning_nas.models import ClassifierModule, DenseModule
from lightning_nas.models.classifier import network_from_checkpoint
from lightning_nas.tasks import COSMIC_IGNORE, NB360_TASKS
from tests.conftest import REPO, write_darcy_flow, write_ecg

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


class FeatureTeacher(torch.nn.Module):
    """A tiny teacher that keeps the distillation contract: forward → (logits, pre-pool features), here 6 channels at
    4×4 for 8×8 inputs (the digits student has 256 channels at 2×2)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 6, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(6, 10)

    def forward(self, x):
        features = self.conv(x).relu()
        return self.fc(features.mean((2, 3))), features


def export_teacher(teacher, x, folder) -> list[str]:
    """The teacher as TorchScript and as torch.export files."""
    with warnings.catch_warnings():  # TorchScript is deprecated in torch 2.14 but still loads
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)
        torch.jit.trace(teacher, x).save(str(folder / "teacher.pt"))
    torch.export.save(torch.export.export(teacher, (x,)), folder / "teacher.pt2")
    return [str(folder / "teacher.pt"), str(folder / "teacher.pt2")]


def test_feature_distillation_adds_smooth_l1_of_projected_features(tmp_path):
    """loss = CE + w_logit · soft CE(teacher, student) + w_feature · smooth-L1(1×1 proj(student features), teacher
    features resized to the student's 2×2), by hand; the gradient reaches the projection."""
    torch.manual_seed(0)
    arch = str(CONFIGS / "archs" / "digits.json")
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    teacher = FeatureTeacher().eval()
    with torch.no_grad():
        teacher_logits, teacher_features = teacher(x)
    target_features = F.interpolate(teacher_features, size=(2, 2), mode="bilinear")
    for path in export_teacher(teacher, x, tmp_path):
        for logit_weight, feature_weight in ((1.0, 1.0), (0.5, 2.0), (1.0, 0.0)):
            model = ClassifierModule(arch=arch, in_channels=1, label_smoothing=0.0, teacher=path,
                                     distill_logit_weight=logit_weight, distill_feature_weight=feature_weight,
                                     teacher_feature_channels=6)
            model.log = lambda *a, **k: None
            model.optimizers = lambda: torch.optim.SGD(model.parameters(), lr=0.1)  # training_step logs the lr
            if feature_weight == 0:
                assert model.feature_projection is None
            else:
                torch.nn.init.normal_(model.feature_projection.weight, std=0.1)  # not its near-0 start
            loss = model.training_step((x, y), 0)
            features = model.network.forward_features(x)
            logits = model.network.classifier(model.network.pool(features))
            ce = F.cross_entropy(logits, y)
            soft_ce = -(teacher_logits.softmax(-1) * logits.log_softmax(-1)).sum(-1).mean()
            expected = ce + logit_weight * soft_ce
            if feature_weight:
                feature = F.smooth_l1_loss(model.feature_projection(features), target_features)
                assert feature > 0.01
                expected = expected + feature_weight * feature
            assert torch.isclose(loss, expected, rtol=1e-5), (path, logit_weight, feature_weight)
            loss.backward()
            if feature_weight:
                assert model.feature_projection.weight.grad.abs().sum() > 0
                assert model.feature_projection.bias.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs teacher_feature_channels"):
        ClassifierModule(arch=arch, in_channels=1, teacher=path, distill_feature_weight=1.0)
    logits_only = tmp_path / "logits_only"
    logits_only.mkdir()
    path = export_teacher(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), x, logits_only)[1]
    model = ClassifierModule(arch=arch, in_channels=1, teacher=path, distill_feature_weight=1.0,
                             teacher_feature_channels=6)
    model.log = lambda *a, **k: None
    with pytest.raises(ValueError, match="the teacher returned logits only"):
        model.training_step((x, y), 0)


def test_zennas_init_and_bn_eps():
    """weight_init: zennas draws conv/linear weights with xavier-normal std = 3.26 · √(2 / (fan_in + fan_out));
    bn_eps sets every BN's eps; both are off by default."""
    torch.manual_seed(0)
    arch = str(CONFIGS / "archs" / "digits.json")

    def layers(model):
        return [m for m in model.network.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]

    def xavier_std(weight):
        receptive = math.prod(weight.shape[2:])
        return 3.26033 * math.sqrt(2 / (weight.shape[1] * receptive + weight.shape[0] * receptive))

    model = ClassifierModule(arch=arch, in_channels=1, weight_init="zennas", bn_eps=1e-3)
    big = [m for m in layers(model) if m.weight.numel() >= 2000]
    assert len(big) >= 5
    for m in big:
        assert abs(m.weight.std().item() / xavier_std(m.weight) - 1) < 0.05, m
        assert abs(m.weight.mean().item()) < 0.2 * xavier_std(m.weight)
    assert all(m.bias is None or not m.bias.any() for m in layers(model))
    norms = [m for m in model.network.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.eps == 1e-3 and (m.weight == 1).all() and not m.bias.any() for m in norms)
    default = ClassifierModule(arch=arch, in_channels=1)
    assert all(m.eps == 1e-5 for m in default.network.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert all(m.weight.std().item() < 0.5 * xavier_std(m.weight) for m in layers(default) if m.weight.numel() >= 2000)
    with pytest.raises(ValueError, match="weight_init: 'xavier' is not one of"):
        ClassifierModule(arch=arch, in_channels=1, weight_init="xavier")


def test_fit_step_with_exported_feature_teacher(tmp_path):
    """A Lightning fit step with the ImageNet recipe's options on a tiny torch.export teacher: the projection trains
    with the network, the teacher stays out of the checkpoint, the network rebuilds from it."""
    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    path = export_teacher(FeatureTeacher().eval(), x[:4], tmp_path)[1]
    model = ClassifierModule(arch=str(CONFIGS / "archs" / "digits.json"), in_channels=1, teacher=path,
                             teacher_feature_channels=6, distill_feature_weight=1.0, distill_logit_weight=1.0,
                             weight_init="zennas", bn_eps=1e-3, bn_momentum=0.01, mixup_alpha=0.2, warmup_epochs=0)
    before = model.feature_projection.weight.detach().clone()
    data = DataLoader(TensorDataset(x, y), batch_size=4)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    trainer.fit(model, train_dataloaders=data, val_dataloaders=data)
    assert not torch.equal(model.feature_projection.weight, before)
    assert {"train/distill_logit", "train/distill_feature", "val/acc"} <= set(trainer.callback_metrics)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]
    assert not any(k.startswith("teacher.") for k in state) and "feature_projection.weight" in state
    network, _ = network_from_checkpoint(tmp_path / "last.ckpt")
    assert torch.allclose(network(x), model.network.eval()(x))


def test_cosmic_logs_one_minus_auroc_and_fnr_and_monitors_the_headline():
    """DenseModule on Cosmic logs every metric of the task; the config monitors the headline 1 − AUROC."""
    torch.manual_seed(0)
    spec = json.loads((CONFIGS / "archs" / "dense.json").read_text())
    spec["stem"]["channels"] = 8
    spec["stages"] = [dict(spec["stages"][0], channels=8, repeats=1)]
    model = DenseModule(arch=spec, task="cosmic")
    x = torch.randn(4, 1, 16, 16)
    y = (torch.rand(4, 1, 16, 16) < 0.2).float()
    y[:, :, :2] = COSMIC_IGNORE
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    results = trainer.validate(model, DataLoader(TensorDataset(x, y), batch_size=2), verbose=False)[0]
    from sklearn.metrics import roc_auc_score

    with torch.no_grad():
        logits = model.eval()(x)
    kept = y != COSMIC_IGNORE
    assert math.isclose(results["val/one_minus_auroc"], 1 - roc_auc_score(y[kept], logits[kept]), rel_tol=1e-5)
    positive = y == 1
    assert math.isclose(results["val/fnr"], ((logits <= 0) & positive).sum().item() / positive.sum().item(),
                        rel_tol=1e-6)
    config = yaml.safe_load((CONFIGS / "evaluate" / "cosmic.yaml").read_text())
    checkpoint = config["trainer"]["callbacks"][0]["init_args"]
    assert checkpoint["monitor"] == f"val/{NB360_TASKS['cosmic'].metric_name}" == "val/one_minus_auroc"
    assert checkpoint["mode"] == NB360_TASKS["cosmic"].metric_direction == "min"


RECIPES = [("digits", "fast"), ("cifar10", "zennas_cifar"), ("cifar100", "fast"), ("imagenet", "zennas_imagenet")]


@pytest.mark.parametrize("task,recipe", RECIPES)
def test_recipes_compose_onto_task_configs(task, recipe, capsys, monkeypatch):
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
    deadline = time.time() + 900  # generous for a busy machine: the loop ends as soon as epoch 1 is saved
    while time.time() < deadline and proc.poll() is None:
        if last.is_file() and torch.load(last, weights_only=True)["epoch"] >= 1:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = torch.load(last, weights_only=True)
    assert 1 <= saved["epoch"] < 5, "killed before epoch 1 was saved, or after the run finished"
    resumed = subprocess.run(args + ["--ckpt_path", "last"], cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Restoring states from the checkpoint path at {last}" in resumed.stdout + resumed.stderr
    final = torch.load(last, weights_only=True)
    steps_per_epoch = saved["global_step"] // (saved["epoch"] + 1)
    assert final["global_step"] == 6 * steps_per_epoch, (saved["epoch"], saved["global_step"], final["global_step"])
    assert json.loads((root / "metrics.json").read_text())["test_acc"] > 0.8
