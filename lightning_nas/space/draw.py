"""A picture of an architecture: its stages in a row (stem → stages → head), and below, each stage's cell as a DAG."""

from __future__ import annotations

import os
from pathlib import Path

from .arch import Arch
from .cell import Cell
from .hl import HLArch


def _draw_cell(ax, cell: Cell, title: str) -> None:
    from matplotlib.patches import FancyArrowPatch

    names = ["in", *cell.ops, "out"]
    xs = list(range(len(names)))
    for i, j in cell.edges:
        rad = -0.25 - 0.08 * (j - i - 1) if j - i > 1 else 0.0
        ax.add_patch(FancyArrowPatch((xs[i], 0), (xs[j], 0), connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>",
                                     mutation_scale=8, lw=0.8, color="0.35", shrinkA=9, shrinkB=9))
    for x, name in zip(xs, names, strict=True):
        ax.plot([x], [0], "o", ms=14, color="#cfe2f3" if 0 < x < len(names) - 1 else "#f4cccc", mec="0.3")
        ax.text(x, -0.12, name, rotation=45, ha="right", va="top", fontsize=6)
    ax.set_xlim(-0.8, len(names) - 0.2)
    ax.set_ylim(-1.0, 1.2)
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def draw_arch(arch: Arch, path: str | os.PathLike, hl: HLArch | None = None, title: str = "") -> None:
    """Write a PNG of ``arch`` to ``path``: stage boxes (cluster of ``hl`` when given, channels, stride, repeats)
    and every stage's cell."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(arch.stages)
    fig = Figure(figsize=(max(6.0, 1.6 * (n + 2)), 4.2))
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, n, height_ratios=(1, 2.2))
    top = fig.add_subplot(grid[0, :])
    boxes = [f"stem\nC={arch.stem_channels}, s={arch.stem_stride}"]
    for i, s in enumerate(arch.stages):
        family = f"cluster {hl.stages[i].cluster}\n" if hl is not None else ""
        boxes.append(f"stage {i + 1}\n{family}C={s.channels}, s={s.stride}\n×{s.repeats}")
    boxes.append(f"head\n{'1×1 conv ' + str(arch.final_channels) if arch.final_channels else 'pool'}\n→ linear")
    for x, text in enumerate(boxes):
        top.text(x, 0, text, ha="center", va="center", fontsize=7,
                 bbox={"boxstyle": "round", "fc": "#fff2cc" if 0 < x < len(boxes) - 1 else "#eeeeee", "ec": "0.4"})
        if x:
            top.annotate("", (x - 0.42, 0), (x - 0.58, 0), arrowprops={"arrowstyle": "->", "color": "0.4"})
    top.set_xlim(-0.6, len(boxes) - 0.4)
    top.set_ylim(-1, 1)
    top.axis("off")
    if title:
        top.set_title(title, fontsize=9)
    for i, s in enumerate(arch.stages):
        _draw_cell(fig.add_subplot(grid[1, i]), s.cell, f"cell of stage {i + 1}")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=120)
    os.replace(tmp, path)
