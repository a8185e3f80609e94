"""Parameter count of an HL architecture before its cells are drawn, for budget-guided decoding of the SG.

Every op's parameter count at C channels (a multiple of 8) is exactly ``a·C² + b·C`` (convs, their BN; with SE, whose
width is a quarter of the op's, exact for multiples of 16 and within a few parameters otherwise); so a cell's op
parameters are ``a_cell·C² + b_cell·C`` and a :class:`~lightning_nas.space.network.CellBlock` adds a projection
``C_in·C_out + 2·C_out`` when channels or stride change. :class:`HLParamsEstimate` stands each cluster in by one of
its cells — the ``quantile`` one by size among cells drawn from it — and counts a whole network exactly as
:class:`~lightning_nas.space.network.GraphNet` builds it (stem, cells, head), so with quantile 1 the estimate is an
upper bound over those cells.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache

from .cell import Cell
from .hl import HLArch
from .ops import build_op


@cache
def op_params(op: str, dims: int = 2, se: bool = False) -> tuple[float, float]:
    """(a, b) with ``params(op at C channels) = a·C² + b·C``, from the counts at C = 16 and 32; exact for every C
    on the channel grid without SE (multiples of 8, where bottleneck widths C·r are whole), for multiples of 16
    with SE."""
    p16, p32 = (sum(p.numel() for p in build_op(op, c, dims, se).parameters()) for c in (16, 32))
    a = (p32 - 2 * p16) / 512
    return a, (p16 - 256 * a) / 16


def cell_params(cell: Cell, dims: int = 2, se: bool = False) -> tuple[float, float]:
    """(a, b) of the cell's op nodes together."""
    parts = [op_params(op, dims, se) for op in cell.ops]
    return sum(a for a, _ in parts), sum(b for _, b in parts)


class HLParamsEstimate:
    """Params of HL architectures with each cluster represented by ``cells[k]`` (see the module docstring), for a
    network of ``dims`` (2: images, 1: sequences) with or without SE; :meth:`for_task` takes all of it from a
    :class:`~lightning_nas.space.task.Task`."""

    def __init__(self, cells: Mapping[int, Cell], in_channels: int = 3, num_classes: int = 10, dims: int = 2,
                 se: bool = False):
        self.cells = dict(cells)
        self.coef = {k: cell_params(c, dims, se) for k, c in cells.items()}
        self.in_channels, self.num_classes, self.dims = in_channels, num_classes, dims

    @classmethod
    def for_task(cls, pools: Mapping[int, Sequence[Cell]], quantile: float, task) -> HLParamsEstimate:
        """:meth:`from_pools` for the network of ``task`` (its input channels, outputs, dimensionality and SE)."""
        return cls.from_pools(pools, quantile, in_channels=task.in_channels, num_classes=task.num_classes,
                              dims=task.dims, se=task.se)

    @classmethod
    def from_pools(cls, pools: Mapping[int, Sequence[Cell]], quantile: float = 0.9, **kw) -> HLParamsEstimate:
        """Represent cluster k by the ``quantile`` cell of ``pools[k]`` ordered by params at 64 channels."""
        if not 0 <= quantile <= 1:
            raise ValueError(f"quantile: {quantile}; need 0 ≤ q ≤ 1")
        chosen = {}
        dims, se = kw.get("dims", 2), kw.get("se", False)

        def size(c: Cell) -> float:
            a, b = cell_params(c, dims, se)
            return a * 64 * 64 + b * 64

        for k, pool in pools.items():
            ranked = sorted(pool, key=lambda c: (size(c), str(c)))
            chosen[k] = ranked[round(quantile * (len(ranked) - 1))]
        return cls(chosen, **kw)

    def stem(self, channels: int) -> int:
        return self.in_channels * channels * 3 ** self.dims + 2 * channels

    def stage(self, cluster: int, in_channels: int, channels: int, stride: int, repeats: int) -> int:
        a, b = self.coef[cluster]
        project = in_channels * channels + 2 * channels if in_channels != channels or stride != 1 else 0
        return project + repeats * round(a * channels * channels + b * channels)

    def head(self, channels: int, final_channels: int | None) -> int:
        out = 2 * channels
        if final_channels is not None:
            out += channels * final_channels + 2 * final_channels
            channels = final_channels
        return out + channels * self.num_classes + self.num_classes

    def prefix(self, stages: Sequence[tuple[int, int, int, int]]) -> tuple[int, int]:
        """(params, output channels) of the stem and the complete ``(cluster, channels, stride, repeats)`` stages."""
        total, channels = self.stem(stages[0][1]), stages[0][1]
        for k, c, s, r in stages:
            total += self.stage(k, channels, c, s, r)
            channels = c
        return total, channels

    def __call__(self, hl: HLArch) -> int:
        stages = [(s.cluster, s.channels, s.stride, s.repeats) for s in hl.stages]
        total, channels = self.prefix(stages)
        return total + self.head(channels, hl.final_channels)


@cache
def op_macs(op: str, dims: int = 2, se: bool = False) -> tuple[float, float]:
    """(a, b) with ``MACs(op at C channels) ≈ (a·C² + b·C) · positions`` (output pixels or steps), counted
    (:func:`~lightning_nas.space.cost.count_cost`) on an 8×8 (64-step) input at C = 16 and 32. Exact for ops whose
    MACs scale with the positions; SE's two linear layers (on the pooled vector) are counted as if they did, which
    over-estimates them — on the safe side for a budget guide."""
    from .cost import count_cost

    shape = (8, 8) if dims == 2 else (64,)
    m16, m32 = (count_cost(build_op(op, c, dims, se), (c, *shape))["macs"] / 64 for c in (16, 32))
    a = (m32 - 2 * m16) / 512
    return a, (m16 - 256 * a) / 16


class HLMacsEstimate:
    """MACs of HL architectures at the task's input size, each cluster represented by ``cells[k]`` (as
    :class:`HLParamsEstimate`): the stem's 3×3 (3-tap) conv, per cell its op nodes (:func:`op_macs`) at the stage's
    output resolution and the 1×1 projection when channels or stride change, the head's 1×1 conv and the
    classifier; strides halve the resolution rounding up, as the convolutions do."""

    def __init__(self, cells: Mapping[int, Cell], input_size: Sequence[int], in_channels: int = 3,
                 num_classes: int = 10, dims: int = 2, se: bool = False, stem_stride: int = 1):
        self.coef = {k: tuple(map(sum, zip(*(op_macs(op, dims, se) for op in c.ops), strict=True)))
                     for k, c in cells.items()}
        self.input_size, self.in_channels, self.num_classes = tuple(input_size), in_channels, num_classes
        self.dims, self.stem_stride = dims, stem_stride

    @classmethod
    def for_task(cls, cells: Mapping[int, Cell], task) -> HLMacsEstimate:
        return cls(cells, task.input_size, task.in_channels, task.num_classes, task.dims, task.se, task.stem_stride)

    @staticmethod
    def _down(size: tuple[int, ...], stride: int) -> tuple[int, ...]:
        return tuple(-(-s // stride) for s in size)

    @staticmethod
    def _positions(size: tuple[int, ...]) -> int:
        out = 1
        for s in size:
            out *= s
        return out

    def prefix(self, stages: Sequence[tuple[int, int, int, int]]) -> tuple[int, int, tuple[int, ...]]:
        """(MACs, output channels, output size) of the stem and the complete stages."""
        size = self._down(self.input_size, self.stem_stride)
        channels = stages[0][1]
        total = self.in_channels * channels * 3 ** self.dims * self._positions(size)
        for k, c, s, r in stages:
            size = self._down(size, s)
            n = self._positions(size)
            a, b = self.coef[k]
            if channels != c or s != 1:
                total += channels * c * n
            total += r * (a * c * c + b * c) * n
            channels = c
        return round(total), channels, size

    def head(self, channels: int, size: tuple[int, ...], final_channels: int | None) -> int:
        out = 0
        if final_channels is not None:
            out += channels * final_channels * self._positions(size)
            channels = final_channels
        return out + channels * self.num_classes

    def __call__(self, hl: HLArch) -> int:
        stages = [(s.cluster, s.channels, s.stride, s.repeats) for s in hl.stages]
        total, channels, size = self.prefix(stages)
        return total + self.head(channels, size, hl.final_channels)
