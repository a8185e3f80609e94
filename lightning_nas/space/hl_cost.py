"""Parameter count of an HL architecture before its cells are drawn, for budget-guided decoding of the SG.

Every op's parameter count at C channels (a multiple of 8) is exactly ``a·C² + b·C`` (convs, their BN, SE off); so a cell's op
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
def op_params(op: str) -> tuple[float, float]:
    """(a, b) with ``params(op at C channels) = a·C² + b·C`` (2-D, no SE), from the counts at C = 8 and 16; exact
    for every C on the channel grid (multiples of 8, where bottleneck widths C·r are whole)."""
    p8, p16 = (sum(p.numel() for p in build_op(op, c, 2, False).parameters()) for c in (8, 16))
    a = (p16 - 2 * p8) / 128
    return a, (p8 - 64 * a) / 8


def cell_params(cell: Cell) -> tuple[float, float]:
    """(a, b) of the cell's op nodes together."""
    parts = [op_params(op) for op in cell.ops]
    return sum(a for a, _ in parts), sum(b for _, b in parts)


class HLParamsEstimate:
    """Params of HL architectures with each cluster represented by ``cells[k]`` (see the module docstring)."""

    def __init__(self, cells: Mapping[int, Cell], in_channels: int = 3, num_classes: int = 10):
        self.coef = {k: cell_params(c) for k, c in cells.items()}
        self.in_channels, self.num_classes = in_channels, num_classes

    @classmethod
    def from_pools(cls, pools: Mapping[int, Sequence[Cell]], quantile: float = 0.9, **kw) -> HLParamsEstimate:
        """Represent cluster k by the ``quantile`` cell of ``pools[k]`` ordered by params at 64 channels."""
        if not 0 <= quantile <= 1:
            raise ValueError(f"quantile: {quantile}; need 0 ≤ q ≤ 1")
        chosen = {}
        for k, pool in pools.items():
            ranked = sorted(pool, key=lambda c: (sum(x * y for x, y in zip(cell_params(c), (64 * 64, 64))), str(c)))
            chosen[k] = ranked[round(quantile * (len(ranked) - 1))]
        return cls(chosen, **kw)

    def stem(self, channels: int) -> int:
        return self.in_channels * channels * 9 + 2 * channels

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
