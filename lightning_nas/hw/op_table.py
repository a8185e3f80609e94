"""FBNet / nn-Meter style op-level latency lookup table for the host.

Every kernel-running layer of a network (each leaf module: convolution, BN, activation, pooling, linear) is timed
*alone* at the input shape it sees in the network, once per (layer, shape) on this machine, and stored in the
archive's ``latency`` table under the host's device fingerprint (``task = "op"``); a network's features are then
``[1, Σ layer latencies (ms), number of layers]``, and :class:`~lightning_nas.hw.cost.HardwareCost` maps them to the
network's measured latency with a fitted affine table (what the sum misses: the cells' additions, Python overhead).
Per-layer timing captures what a per-MAC cost cannot: small layers are slow per MAC, depthwise convolutions slower
still, and each kernel has a fixed overhead.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import nn

from .measure import host_fingerprint, measure_latency
from .predictors import run_hooked

OP_TABLE_FEATURES = ("constant", "layers_ms", "layers")


class OpLatencyTable:
    """Per-layer host latencies, measured on demand and kept in ``archive`` (or in memory without one)."""

    def __init__(self, archive=None, runtime: str = "eager", threads: int = 1, runs: int = 20, warmup: int = 3):
        self.archive, self.runtime, self.threads, self.runs, self.warmup = archive, runtime, threads, runs, warmup
        self.device = host_fingerprint(runtime, threads)
        self._memory: dict[str, float] = {}
        self.measured = 0  # layers timed by this table (not found stored)

    @staticmethod
    def key(module: nn.Module, shape: tuple[int, ...]) -> str:
        return "op:" + hashlib.sha1(f"{module!r}|{tuple(shape)}".encode()).hexdigest()

    def layer_ms(self, module: nn.Module, shape: tuple[int, ...]) -> float:
        """The latency of ``module`` alone on one input of ``shape`` (batch included), measured once."""
        k = self.key(module, shape)
        if k in self._memory:
            return self._memory[k]
        stored = self.archive.latency(k, self.device.id, shape[0]) if self.archive is not None else None
        if stored is None:
            m = measure_latency(module, tuple(shape[1:]), self.runtime, shape[0], self.threads, self.warmup, self.runs)
            self.measured += 1
            if self.archive is not None:
                self.archive.add_latency(k, m, {"module": repr(module), "input": list(shape)}, task="op")
            value = m.ms
        else:
            value = stored["p10_ms"]
        self._memory[k] = value
        return value

    def features(self, model: nn.Module, input_shape: tuple[int, ...]) -> np.ndarray:
        """``[1, Σ layer latencies (ms), layers]`` of ``model`` on one sample of ``input_shape`` (batch 1)."""
        layers: list[tuple[nn.Module, tuple[int, ...]]] = []

        def hook(module, inputs, _output):
            if inputs and isinstance(inputs[0], torch.Tensor):
                layers.append((module, tuple(inputs[0].shape)))

        no_kernel = nn.Identity | nn.Flatten | nn.Dropout
        run_hooked(model, input_shape, [(m, hook) for m in model.modules()
                                        if not list(m.children()) and not isinstance(m, no_kernel)])
        total = sum(self.layer_ms(module, shape) for module, shape in layers)  # each layer timed alone, eval mode
        return np.array([1.0, total, float(len(layers))])

