"""Inference latency measured on the host (issue [hw]; REFERENCE.md "Measuring on a CPU").

One measurement = a network in eval mode, a fixed number of threads, ``warmup`` untimed runs, then ``runs`` timed
forward passes of a batch of ``batch`` inputs, summarised by the **median** and **IQR** of the runs and their **10th
percentile** (all in ms). The latency a budget or predictor uses is the 10th percentile (:attr:`LatencyMeasurement.ms`):
on a shared machine interference only ever *adds* time and comes in bursts that move the median of a whole
measurement (measured here: the median of 30 runs of a 1 ms network spread 47 % over 5 repetitions, its 10th
percentile 3 %; ``benchmarks/hw_latency.py``). A measurement is only comparable with measurements of the same
:class:`DeviceFingerprint`
(CPU model, threads, runtime and the versions of the libraries that run it): the archive keys every stored latency
by the fingerprint's id, so measurements from different machines or runtimes never mix.

Runtimes: ``eager`` (``torch`` in inference mode) and ``onnxruntime`` (the network exported with
:func:`lightning_nas.export.export_network`, the CPU execution provider, all graph optimisations, ``threads`` intra-op
threads and one inter-op thread).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from ..space.network import task_network

Runtime = Literal["eager", "onnxruntime"]
RUNTIMES: tuple[str, ...] = ("eager", "onnxruntime")


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@dataclass(frozen=True)
class DeviceFingerprint:
    """What a latency depends on besides the network. ``id`` (a short hash of all fields) keys the archive."""

    cpu: str
    cores: int
    threads: int
    runtime: str
    versions: dict[str, str] = field(default_factory=dict)
    machine: str = ""

    @property
    def id(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def to_json(self) -> dict:
        return {**asdict(self), "id": self.id}

    @classmethod
    def from_json(cls, spec: dict) -> DeviceFingerprint:
        return cls(**{k: v for k, v in spec.items() if k != "id"})


@functools.cache
def host_fingerprint(runtime: Runtime = "eager", threads: int = 1) -> DeviceFingerprint:
    """This machine running ``runtime`` with ``threads`` threads (read once per process: the op table measures
    hundreds of layers, each tagged with it)."""
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    if runtime == "onnxruntime":
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    return DeviceFingerprint(cpu=cpu_model(), cores=os.cpu_count() or 1, threads=threads, runtime=runtime,
                             versions=versions, machine=platform.machine())


@dataclass(frozen=True)
class LatencyMeasurement:
    """``median_ms``/``iqr_ms``/``p10_ms`` over ``runs`` timed passes of batch ``batch`` on ``device``."""

    median_ms: float
    iqr_ms: float
    runs: int
    batch: int
    device: DeviceFingerprint
    p10_ms: float

    @property
    def ms(self) -> float:
        """The latency budgets and predictors use: the 10th percentile (see the module docstring)."""
        return self.p10_ms

    def to_json(self) -> dict:
        return {"ms": self.ms, "median_ms": self.median_ms, "iqr_ms": self.iqr_ms, "p10_ms": self.p10_ms,
                "runs": self.runs, "batch": self.batch, "device": self.device.to_json()}


def _onnx_runner(model: nn.Module, example: torch.Tensor, threads: int) -> Callable[[], object]:
    from ..export import export_network, require_onnx

    require_onnx()
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_network(model, example, "onnx", path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name, feed = session.get_inputs()[0].name, example.numpy()
    return lambda: session.run(None, {name: feed})


def measure_latency(model: nn.Module, input_shape: tuple[int, ...], runtime: Runtime = "eager", batch: int = 1,
                    threads: int = 1, warmup: int = 10, runs: int = 50, seed: int = 0) -> LatencyMeasurement:
    """Latency of ``model`` on inputs of ``(batch, *input_shape)`` (see the module docstring). The model is put in
    eval mode; torch's thread count is restored afterwards."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime: {runtime!r}; choose one of {RUNTIMES}")
    for name, value in (("batch", batch), ("threads", threads), ("runs", runs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    if runs < 4:
        raise ValueError(f"runs: {runs}; an IQR needs at least 4 timed runs")
    generator = torch.Generator().manual_seed(seed)
    example = torch.randn((batch, *input_shape), generator=generator)
    model = model.eval()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if runtime == "onnxruntime":
            run = _onnx_runner(model, example, threads)
        else:
            def run():
                with torch.inference_mode():
                    return model(example)
        for _ in range(warmup):
            run()
        times = []
        for _ in range(runs):
            start = time.perf_counter_ns()
            run()
            times.append((time.perf_counter_ns() - start) / 1e6)
    finally:
        torch.set_num_threads(previous)
    q1, _, q3 = statistics.quantiles(times, n=4)
    p10 = statistics.quantiles(times, n=10)[0]
    return LatencyMeasurement(statistics.median(times), q3 - q1, runs, batch, host_fingerprint(runtime, threads), p10)


def network_key(arch_spec: dict, input_shape: tuple[int, ...], task: str = "") -> str:
    """The archive key of a measured network: its architecture spec, the task and the input shape (one sample)."""
    text = json.dumps({"arch": arch_spec, "input": list(input_shape), "task": task}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()


def measure_arch(arch, task, runtime: Runtime = "eager", batch: int = 1, threads: int = 1, runs: int = 50,
                 warmup: int = 10, archive=None, seed: int = 0) -> LatencyMeasurement:
    """Host latency of ``task``'s network for ``arch`` (the network ``evaluate`` trains). With an ``archive``, a
    stored measurement of the same network, batch and device fingerprint is returned instead of measuring again,
    and a new one is stored."""
    key = network_key(arch.to_json(), task.input_shape, task.name)
    fingerprint = host_fingerprint(runtime, threads)
    if archive is not None:
        stored = archive.latency(key, fingerprint.id, batch)
        if stored is not None:
            return LatencyMeasurement(stored["median_ms"], stored["iqr_ms"], stored["runs"], batch, fingerprint,
                                      stored["p10_ms"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = task_network(task, arch)
    measurement = measure_latency(model, task.input_shape, runtime, batch, threads, warmup, runs, seed)
    if archive is not None:
        archive.add_latency(key, measurement, arch_spec=arch.to_json(), task=task.name)
    return measurement
