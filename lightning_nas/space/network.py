"""Network builder: an :class:`~lightning_nas.space.arch.Arch` becomes a plain ``torch.nn.Module`` (1-D or 2-D)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .arch import Arch
from .cell import Cell
from .ops import build_op, layer_types


def _sum(tensors: list[torch.Tensor]) -> torch.Tensor:
    out = tensors[0]
    for t in tensors[1:]:
        out = out + t
    return out


class CellBlock(nn.Module):
    """One cell at ``out_channels``: project the input if channels or stride change (ReLU → 1×1 conv → BN), then
    run the op nodes in order; every node sums its inputs, the output sums its inputs."""

    def __init__(self, cell: Cell, in_channels: int, out_channels: int, stride: int = 1, dims: int = 2,
                 se: bool = False):
        super().__init__()
        conv, bn, _, _ = layer_types(dims)
        self.project = (
            nn.Sequential(nn.ReLU(), conv(in_channels, out_channels, 1, stride=stride, bias=False), bn(out_channels))
            if in_channels != out_channels or stride != 1
            else None
        )
        self.nodes = nn.ModuleList(build_op(op, out_channels, dims, se) for op in cell.ops)
        self.inputs = cell.predecessors  # inputs[j]: nodes summed into node j

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.project is not None:
            x = self.project(x)
        values = [x]
        for node, op in enumerate(self.nodes, start=1):
            values.append(op(_sum([values[i] for i in self.inputs[node]])))
        return _sum([values[i] for i in self.inputs[-1]])


class GraphNet(nn.Module):
    """Stem (3×3 conv + BN) → cells → head (BN → ReLU → [1×1 conv → BN] → global pool → linear)."""

    def __init__(self, arch: Arch, in_channels: int = 3, num_classes: int = 10, dims: int = 2):
        super().__init__()
        conv, bn, _, pool = layer_types(dims)
        self.arch = arch
        self.dims = dims
        self.stem = nn.Sequential(
            conv(in_channels, arch.stem_channels, 3, stride=arch.stem_stride, padding=1, bias=False),
            bn(arch.stem_channels),
        )
        cells, channels = [], arch.stem_channels
        for stage in arch.stages:
            for r in range(stage.repeats):
                stride = stage.stride if r == 0 else 1
                cells.append(CellBlock(stage.cell, channels, stage.channels, stride, dims, arch.se))
                channels = stage.channels
        self.cells = nn.Sequential(*cells)
        head: list[nn.Module] = [bn(channels), nn.ReLU()]
        if arch.final_channels is not None:
            head += [conv(channels, arch.final_channels, 1, bias=False), bn(arch.final_channels)]
            channels = arch.final_channels
        self.head = nn.Sequential(*head)
        self.pool = nn.Sequential(pool(1), nn.Flatten())
        self.classifier = nn.Linear(channels, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map before global pooling (what Zen-score measures)."""
        return self.head(self.cells(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.forward_features(x)))


class DenseGraphNet(GraphNet):
    """GraphNet with a per-pixel head for dense tasks (NAS-Bench-360's Darcy Flow, PSICOV, Cosmic): stem → cells →
    BN → ReLU [→ 1×1 conv → BN] → 1×1 conv to ``out_channels``; no pooling, so every stride must be 1."""

    def __init__(self, arch: Arch, in_channels: int = 3, out_channels: int = 1, dims: int = 2):
        strided = ([f"stem (stride {arch.stem_stride})"] if arch.stem_stride != 1 else []) + [
            f"stages[{i}] (stride {s.stride})" for i, s in enumerate(arch.stages) if s.stride != 1]
        if strided:
            raise ValueError(f"dense tasks keep the input resolution: set the stride of {', '.join(strided)} to 1")
        super().__init__(arch, in_channels, 1, dims)
        conv = layer_types(dims)[0]
        self.pool = nn.Identity()
        self.classifier = conv(arch.final_channels or arch.stages[-1].channels, out_channels, 1)


def build_network(arch: Arch | dict[str, Any], in_channels: int = 3, num_classes: int = 10, dims: int = 2) -> GraphNet:
    """Build ``arch`` (an :class:`Arch` or its JSON spec) for ``in_channels`` inputs and ``num_classes`` outputs on
    ``dims``-D data (2: images ``N×C×H×W``; 1: sequences ``N×C×L``)."""
    if isinstance(arch, dict):
        arch = Arch.from_json(arch)
    if not isinstance(arch, Arch):
        raise ValueError(f"arch: expected an Arch or its JSON spec, got {type(arch).__name__}")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels: expected a positive integer, got {in_channels!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes: expected a positive integer, got {num_classes!r}")
    return GraphNet(arch, in_channels, num_classes, dims)


def task_network(task, arch: Arch) -> nn.Module:
    """The network ``evaluate`` trains for ``arch`` on ``task`` (a :class:`~lightning_nas.space.task.Task`): a
    classifier, or a per-pixel head if the task is dense."""
    if task.dense:
        return DenseGraphNet(arch, task.in_channels, task.num_classes, task.dims)
    return build_network(arch, task.in_channels, task.num_classes, task.dims)


def task_cost(task, arch: Arch) -> dict[str, int]:
    """Params/MACs/FLOPs of :func:`task_network` for one sample of ``task.input_shape``."""
    from .cost import count_cost

    return count_cost(task_network(task, arch), task.input_shape)
