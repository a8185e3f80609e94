"""``python -m lightning_nas export``: a trained :class:`~lightning_nas.models.ClassifierModule` or
:class:`~lightning_nas.models.DenseModule` checkpoint as a file that runs without lightning_nas (batch axis dynamic).

Usage: ``python -m lightning_nas export --ckpt model.ckpt --format onnx|torchscript|pt2 [--arch arch.json]
[--out FILE] [--input_shape 3,32,32]``. The network is rebuilt from the checkpoint alone (weights only, see
:func:`lightning_nas.models.classifier.network_from_checkpoint`); ``--arch`` only checks that the checkpoint trained
that architecture. The example input is ``--input_shape`` (C,H,W; C,L for sequences) or else the shape the checkpoint
saw in training. After exporting, the file is run on random batches of 2 and 3 and compared with the network
(max abs diff ≤ ``atol``). Formats, default file next to the checkpoint, and how to run each with no lightning_nas:

- ``onnx`` (``<ckpt stem>.onnx``, opset 18, the ``torch.onnx`` dynamo exporter; needs ``pip install
  'lightning-nas[export]'``)::

      import numpy as np, onnxruntime as ort
      session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
      y = session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[0]

- ``torchscript`` (``<ckpt stem>.pt``, ``torch.jit.trace``)::

      import torch
      model = torch.jit.load("model.pt", map_location="cpu")
      y = model(x)

- ``pt2`` (``<ckpt stem>.pt2``, ``torch.export`` with a dynamic batch dimension)::

      import torch
      model = torch.export.load("model.pt2").module()
      y = model(x)

``x`` is a float32 batch of shape N×C×H×W (N×C×L for sequences), standardised as in training; ``y`` holds the
logits (N×classes) or the dense outputs (N×outputs×H×W). Prints ``format``, ``out``, ``input_shape``,
``max_abs_diff``, ``seconds``, ``bytes`` and ``kind`` as JSON.
"""

from __future__ import annotations

import importlib
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ExportFormat = Literal["onnx", "torchscript", "pt2"]
SUFFIX: dict[str, str] = {"onnx": ".onnx", "torchscript": ".pt", "pt2": ".pt2"}  # one per ExportFormat
ONNX_OPSET = 18
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
VERIFY_BATCHES = (2, 3)  # 3 differs from the export example's batch of 2: checks the batch axis is dynamic


@dataclass
class ExportConfig:
    """Settings of the ``export`` stage.

    Args:
        ckpt: a ClassifierModule/DenseModule checkpoint (``.ckpt``) saved by ``fit``/``evaluate``.
        format: ``onnx`` (onnxruntime), ``torchscript`` (``torch.jit.load``) or ``pt2`` (``torch.export.load``).
        arch: optional ``arch.json``; the export is refused if the checkpoint trained another architecture.
        out: output file (default: next to the checkpoint, ``<ckpt stem>.onnx``, ``.pt`` or ``.pt2``).
        input_shape: example input shape without the batch dimension, e.g. ``3,32,32`` (default: the shape the
            checkpoint saw in training).
        atol: largest allowed absolute difference between the exported file's outputs and the network's.
        seed: seed of the random verification inputs.
    """

    ckpt: str
    format: ExportFormat  # checked by jsonargparse at the command line
    arch: str | None = None
    out: str | None = None
    input_shape: str | list[int] | None = None
    atol: float = 1e-4
    seed: int = 0

    def __post_init__(self):
        if self.input_shape is not None:
            self.input_shape = parse_shape(self.input_shape)
        if not self.atol > 0:
            raise ValueError(f"atol: {self.atol}; must be positive")


def parse_shape(value: str | list[int] | tuple[int, ...]) -> list[int]:
    """``"3,32,32"`` (or ``[3, 32, 32]``) → ``[3, 32, 32]``; every size must be a positive integer."""
    parts = value.strip().strip("[]()").split(",") if isinstance(value, str) else list(value)
    try:
        shape = [int(p) for p in parts]
    except (TypeError, ValueError):
        shape = []
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_shape: {value!r}; write the sizes without the batch, e.g. --input_shape 3,32,32")
    return shape


def require_onnx() -> None:
    """Raise a clear error when the optional ONNX packages are not installed."""
    missing = []
    for name in ONNX_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ModuleNotFoundError(f"--format onnx needs {', '.join(ONNX_PACKAGES)} (missing: {', '.join(missing)}): "
                                  "pip install 'lightning-nas[export]'")


@contextmanager
def _quiet_jit():
    """torch 2.14 deprecates ``torch.jit.trace``/``load`` (FutureWarning); the TorchScript format still needs them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.(trace|trace_method|load)` is deprecated", FutureWarning)
        yield


def export_network(network, example, fmt: str, out: Path) -> None:
    """Write ``network`` (eval mode, CPU) traced on ``example`` to ``out`` in format ``fmt``, batch axis dynamic.

    The file is serialised in memory first and written by Python, so a full disk is an ``OSError`` (ENOSPC: one
    paragraph from the CLI) rather than an abort inside torch's C++ writer, and a half-written file is removed."""
    import io
    import tempfile

    import torch

    batch = torch.export.Dim("batch", min=1)
    buffer = io.BytesIO()
    if fmt == "pt2":
        program = torch.export.export(network, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, buffer)
    elif fmt == "torchscript":
        with _quiet_jit():
            traced = torch.jit.trace(network, example)
        buffer.write(traced.save_to_buffer())
    else:
        onnx_program = torch.onnx.export(network, (example,), dynamo=True, opset_version=ONNX_OPSET,
                                         dynamic_shapes=({0: batch},), input_names=["input"], output_names=["output"],
                                         verbose=False, external_data=False)
        with tempfile.TemporaryDirectory() as tmp:
            onnx_program.save(Path(tmp) / "model.onnx", external_data=False)
            buffer.write((Path(tmp) / "model.onnx").read_bytes())
    try:
        with open(out, "wb") as file:
            file.write(buffer.getvalue())
    except OSError:
        if Path(out).is_file():
            Path(out).unlink()  # no half-written model for a later step to load
        raise


def load_exported(fmt: str, out: Path):
    """A function ``x (torch.Tensor) → torch.Tensor`` running the exported file, loaded as a user without
    lightning_nas would (see the module docstring)."""
    import torch

    if fmt == "pt2":
        return torch.export.load(out).module()
    if fmt == "torchscript":
        with _quiet_jit():
            return torch.jit.load(str(out), map_location="cpu")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def file_bytes(out: Path) -> int:
    """Size of the exported file (plus an ONNX external-data file beside it, should one exist)."""
    data = out.with_name(out.name + ".data")
    return out.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def run_export(config: ExportConfig) -> dict:
    """Export the network of ``config.ckpt`` and verify the file against it; returns the metrics."""
    import torch

    from .models.classifier import load_arch, network_from_checkpoint
    from .space import Arch

    start = time.perf_counter()
    if config.format == "onnx":
        require_onnx()
    ckpt = Path(config.ckpt)
    network, record = network_from_checkpoint(ckpt)
    if config.arch is not None and load_arch(config.arch) != Arch.from_json(record["arch"]):
        raise ValueError(f"{config.arch} is not the architecture that {ckpt} trained; export without --arch, or "
                         f"pass the arch.json the checkpoint was trained from")
    dims, in_channels = record["dims"], record["in_channels"]
    shape = config.input_shape or record.get("input_shape")
    layout = "C,H,W" if dims == 2 else "C,L" if dims == 1 else "C," + ",".join(f"D{i}" for i in range(dims))
    if not shape:
        raise ValueError(f"{ckpt} records no input shape (saved before the network saw data): pass "
                         f"--input_shape {layout}, e.g. --input_shape {in_channels},{','.join(['32'] * dims)}")
    shape = [int(s) for s in shape]
    if len(shape) != dims + 1 or shape[0] != in_channels:
        raise ValueError(f"input_shape {shape}: the network takes {dims}-D inputs with {in_channels} channels; "
                         f"pass --input_shape {layout} with C = {in_channels}")
    out = Path(config.out) if config.out else ckpt.with_suffix(SUFFIX[config.format])
    out.parent.mkdir(parents=True, exist_ok=True)

    network = network.cpu().eval().requires_grad_(False)
    generator = torch.Generator().manual_seed(config.seed)
    export_network(network, torch.randn(2, *shape, generator=generator), config.format, out)

    exported = load_exported(config.format, out)
    diff = 0.0
    with torch.no_grad():
        for n in VERIFY_BATCHES:
            x = torch.randn(n, *shape, generator=generator)
            expected, got = network(x), exported(x)
            if got.shape != expected.shape:
                raise RuntimeError(f"{out}: output of shape {tuple(got.shape)} for a batch of {n}, the network gives "
                                   f"{tuple(expected.shape)}")
            diff = max(diff, float((got - expected).abs().max()))
    if not diff <= config.atol:  # also catches NaN
        raise RuntimeError(f"{out}: the exported {config.format} model differs from the network by {diff:.3g} "
                           f"(> atol {config.atol:g}); the file is kept for inspection")
    return {"format": config.format, "out": str(out), "input_shape": shape, "max_abs_diff": diff,
            "seconds": round(time.perf_counter() - start, 3), "bytes": file_bytes(out), "kind": record["kind"]}


def main(argv: list[str]) -> dict:
    from .cli import run_stage

    return run_stage(argv, ExportConfig, run_export, "export", __doc__)
