"""``python -m lightning_nas export``: real checkpoints (a digits classifier, a dense network) exported to ONNX,
TorchScript and torch.export, then loaded in a fresh Python where lightning_nas cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_nas.cli import main as cli_main
from lightning_nas.models import ClassifierModule, DenseModule
from lightning_nas.space import Arch

DIGITS_ARCH = "configs/archs/digits.json"
FORMATS = ("onnx", "torchscript", "pt2")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "pt2": ".pt2"}


def _trainer() -> L.Trainer:
    return L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, accelerator="cpu", logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


def _dense_arch() -> dict:
    """The digits architecture with every stride 1 (dense networks keep the resolution)."""
    spec = Arch.load(DIGITS_ARCH).to_json()
    spec["stem"]["stride"] = 1
    for stage in spec["stages"]:
        stage["stride"] = 1
    return spec


class RandomDenseData(L.LightningDataModule):
    """8 random 3×17×17 inputs with 1×17×17 targets (the Darcy Flow layout, smaller)."""

    def setup(self, stage: str | None = None) -> None:
        self.data = TensorDataset(torch.randn(8, 3, 17, 17), torch.randn(8, 1, 17, 17))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=4, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=4)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """``{"classifier": (ckpt, network), "dense": (ckpt, network)}``: checkpoints saved by a real Trainer, and the
    trained networks (eval mode) as reference."""
    from datamodules import DigitsDataModule

    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    classifier = ClassifierModule(arch=DIGITS_ARCH, num_classes=10, in_channels=1, dims=2)
    trainer = _trainer()
    trainer.fit(classifier, datamodule=DigitsDataModule(batch_size=16))
    trainer.save_checkpoint(root / "digits.ckpt")

    dense = DenseModule(arch=_dense_arch(), task="darcy_flow")
    trainer = _trainer()
    trainer.fit(dense, datamodule=RandomDenseData())
    trainer.save_checkpoint(root / "dense.ckpt")
    return {"classifier": (root / "digits.ckpt", classifier.network.eval()),
            "dense": (root / "dense.ckpt", dense.network.eval())}


# Runs in a fresh interpreter: lightning_nas and datamodules are blocked, only torch/onnxruntime/numpy load the file.
STANDALONE = textwrap.dedent("""
    import sys
    sys.modules["lightning_nas"] = None
    sys.modules["datamodules"] = None
    try:
        import lightning_nas
        raise AssertionError("lightning_nas is importable")
    except ImportError:
        pass
    import numpy as np
    fmt, path = sys.argv[1], sys.argv[2]
    if fmt == "onnx":
        import onnx, onnxruntime as ort
        assert onnx.load(path).opset_import[0].version >= 17
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        run = lambda x: session.run(None, {session.get_inputs()[0].name: x})[0]
    else:
        import torch
        model = torch.export.load(path).module() if fmt == "pt2" else torch.jit.load(path, map_location="cpu")
        run = lambda x: model(torch.from_numpy(x)).detach().numpy()
    data = np.load("io.npz")
    for n in (2, 5):
        x, y = data[f"x{n}"], data[f"y{n}"]
        got = run(x)
        assert got.shape == y.shape, (got.shape, y.shape)
        assert np.abs(got - y).max() <= 1e-4, np.abs(got - y).max()
    print("ok")
""")


@pytest.mark.parametrize("kind", ["classifier", "dense"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_export_runs_without_lightning_nas(checkpoints, kind, fmt, tmp_path, capsys):
    """The CLI writes the file (default name next to the checkpoint, or --out), verifies it and prints the metrics;
    plain torch / onnxruntime reproduce the network's outputs at batch sizes 2 and 5."""
    ckpt, network = checkpoints[kind]
    out = tmp_path / f"model{SUFFIX[fmt]}"
    args = ["export", "--ckpt", str(ckpt), "--format", fmt]
    cli_main(args + (["--out", str(out)] if kind == "dense" else []))
    metrics = json.loads(capsys.readouterr().out)
    if kind == "classifier":
        assert metrics["out"] == str(ckpt.with_suffix(SUFFIX[fmt]))
        out = ckpt.with_suffix(SUFFIX[fmt])
    assert metrics["format"] == fmt and metrics["out"] == str(out)
    assert metrics["input_shape"] == ([1, 8, 8] if kind == "classifier" else [3, 17, 17])
    assert metrics["max_abs_diff"] <= 1e-4 and metrics["seconds"] > 0
    assert metrics["bytes"] == out.stat().st_size > 0

    generator = torch.Generator().manual_seed(1)
    io = {}
    with torch.no_grad():
        for n in (2, 5):
            x = torch.randn(n, *metrics["input_shape"], generator=generator)
            io[f"x{n}"], io[f"y{n}"] = x.numpy(), network(x).numpy()
    np.savez(tmp_path / "io.npz", **io)
    result = subprocess.run([sys.executable, "-c", STANDALONE, fmt, str(out)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_input_shape_option_overrides_the_recorded_one(checkpoints, tmp_path):
    """``--input_shape 1,12,12`` exports for another resolution than the one trained on."""
    from lightning_nas.export import ExportConfig, run_export

    ckpt, _ = checkpoints["classifier"]
    metrics = run_export(ExportConfig(ckpt=str(ckpt), format="pt2", out=str(tmp_path / "m.pt2"),
                                      input_shape="1,12,12"))
    assert metrics["input_shape"] == [1, 12, 12]
    assert torch.export.load(tmp_path / "m.pt2").module()(torch.randn(4, 1, 12, 12)).shape == (4, 10)


def test_arch_mismatch_is_refused(checkpoints, tmp_path):
    """An ``--arch`` that differs from the checkpoint's architecture names both files."""
    ckpt, _ = checkpoints["classifier"]
    other = tmp_path / "other.json"
    Arch.from_json(_dense_arch()).save(other)
    with pytest.raises(ValueError, match="other.json.*digits.ckpt"):
        cli_main(["export", "--ckpt", str(ckpt), "--format", "pt2", "--arch", str(other),
                  "--out", str(tmp_path / "m.pt2")])
    assert not (tmp_path / "m.pt2").exists()


def test_matching_arch_is_accepted(checkpoints, tmp_path, capsys):
    """``--arch`` with the very architecture the checkpoint trained passes."""
    ckpt, _ = checkpoints["classifier"]
    cli_main(["export", "--ckpt", str(ckpt), "--format", "torchscript", "--arch", DIGITS_ARCH,
              "--out", str(tmp_path / "m.pt")])
    assert json.loads(capsys.readouterr().out)["max_abs_diff"] <= 1e-4


def test_missing_input_shape_asks_for_it(tmp_path):
    """A checkpoint that never saw data has no input shape: the error says to pass ``--input_shape C,H,W``."""
    from lightning_nas.export import ExportConfig, run_export

    model = ClassifierModule(arch=DIGITS_ARCH, num_classes=10, in_channels=1, dims=2)
    ckpt = tmp_path / "untrained.ckpt"
    torch.save({"state_dict": model.state_dict(), "lightning_nas": dict(model.record)}, ckpt)
    with pytest.raises(ValueError, match=r"--input_shape C,H,W"):
        run_export(ExportConfig(ckpt=str(ckpt), format="pt2"))
    with pytest.raises(ValueError, match="1 channels"):
        run_export(ExportConfig(ckpt=str(ckpt), format="pt2", input_shape="3,8,8"))


def test_not_a_lightning_nas_checkpoint(tmp_path):
    """A random dict saved with torch.save is refused with a clear message, and nothing is written."""
    ckpt = tmp_path / "random.ckpt"
    torch.save({"weights": torch.randn(3)}, ckpt)
    with pytest.raises(ValueError, match="not a checkpoint of a lightning_nas ClassifierModule or DenseModule"):
        cli_main(["export", "--ckpt", str(ckpt), "--format", "torchscript"])
    assert not (tmp_path / "random.pt").exists()


def test_onnx_without_its_packages_says_what_to_install(checkpoints, monkeypatch):
    """Without onnxruntime (blocked here), ``--format onnx`` fails naming the extra to install."""
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    ckpt, _ = checkpoints["classifier"]
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'lightning-nas\[export\]'"):
        cli_main(["export", "--ckpt", str(ckpt), "--format", "onnx"])


def test_a_file_that_disagrees_with_the_network_is_reported(checkpoints, tmp_path, monkeypatch):
    """The verification step raises when the exported file's outputs differ by more than ``atol``."""
    import lightning_nas.export as export

    load = export.load_exported
    monkeypatch.setattr(export, "load_exported", lambda fmt, out: (lambda x: load(fmt, out)(x) + 1e-3))
    ckpt, _ = checkpoints["classifier"]
    with pytest.raises(RuntimeError, match="differs from the network by 0.001"):
        export.run_export(export.ExportConfig(ckpt=str(ckpt), format="torchscript", out=str(tmp_path / "m.pt")))


def test_every_export_format_has_a_file_suffix_and_a_bad_one_is_refused_by_the_parser():
    from typing import get_args

    from lightning_nas.export import SUFFIX, ExportFormat

    assert set(SUFFIX) == set(get_args(ExportFormat))
    with pytest.raises(SystemExit) as exit_:
        cli_main(["export", "--ckpt", "x.ckpt", "--format", "keras"])
    assert exit_.value.code == 2


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full (every write: ENOSPC)")
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_a_full_disk_is_one_paragraph_with_rc_2(checkpoints, fmt, capsys):
    """Writing to a full disk (``/dev/full``: every write fails with ENOSPC, as on a full file system) ends in one
    paragraph naming the cause and what is kept, exit code 2 — not a torch/onnx traceback (issue #30)."""
    ckpt, _ = checkpoints["classifier"]
    with pytest.raises(SystemExit) as stop:
        cli_main(["export", "--ckpt", str(ckpt), "--format", fmt, "--out", "/dev/full"], exit_on_error=True)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the disk is full") and "Traceback" not in err
    assert "run the same command again" in err and len(err.splitlines()) == 3
