"""Mutations of HL architectures (paper App. C, Algorithm 1 lines 6–19, with the authors' stage operations).

One random stage is mutated; a random non-empty subset of these changes is applied to it (REFERENCE.md, HL-Evo):

- ``cell``: a new cell for the stage — in HL-Evo drawn from the same cluster (GenCell, Eq. 9), in the GraphNet baseline
  a cell-level mutation of the current cell (:func:`mutate_cell`);
- ``cluster`` (exploration phase only): a new cluster, uniformly, and a new cell from it;
- ``channels``: × one of :data:`WIDTH_FACTORS`, clamped to [8, 1024] and rounded down to a multiple of 8;
- ``stride``: 1 or 2, uniformly;
- ``repeats``: + one of {0, 1, 2, −1, −2}; a stage that reaches 0 is deleted (unless it is the only one); the total
  stays ≤ 20 cells;
- ``insert`` (exploration phase only): a copy of the stage with stride 1 is inserted after it (room permitting);
- ``final``: the head width × one of :data:`WIDTH_FACTORS` (when the architecture has a head conv).

Every mutation returns a valid :class:`HLArch` (and one cell per stage), so the search never builds an invalid network.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace

from ..space.arch import MAX_CELLS
from ..space.cell import Cell
from ..space.hl import MAX_DOWNSAMPLINGS, HLArch, HLStage
from ..space.ops import resolve_op_set

WIDTH_FACTORS = (2.5, 2.0, 1.5, 1.25, 1.0, 1 / 1.25, 1 / 1.5, 1 / 2, 1 / 2.5)
REPEAT_DELTAS = (0, 1, 2, -1, -2)
CHANGES = ("cell", "cluster", "channels", "stride", "repeats", "insert", "final")
EXPLOITATION_CHANGES = ("cell", "channels", "stride", "repeats", "final")


@dataclass(frozen=True)
class Candidate:
    """An HL architecture with one concrete cell per stage (α̂ and the cells of α(α̂))."""

    hl: HLArch
    cells: tuple[Cell, ...]


def scale_width(channels: int, factor: float) -> int:
    """``channels × factor`` clamped to [8, 1024], rounded down to a multiple of 8."""
    return int(min(1024, max(8, channels * factor)) // 8 * 8)


def mutate(
    candidate: Candidate,
    rng: random.Random,
    num_clusters: int,
    new_cell: Callable[[Cell, int, random.Random], Cell],
    exploration: bool,
    max_downsamplings: int = MAX_DOWNSAMPLINGS,
) -> tuple[Candidate, list[str]]:
    """A mutated copy of ``candidate`` and the changes applied. ``new_cell(current cell, cluster, rng)`` gives the
    stage's next cell; a stride change keeps at most ``max_downsamplings`` stride-2 stages (the task's limit)."""
    stages, cells = list(candidate.hl.stages), list(candidate.cells)
    final = candidate.hl.final_channels
    i = rng.randrange(len(stages))
    allowed = [c for c in (CHANGES if exploration else EXPLOITATION_CHANGES) if c != "final" or final is not None]
    if num_clusters < 2:
        allowed = [c for c in allowed if c != "cluster"]
    chosen = [c for c in allowed if rng.random() < 0.5] or [rng.choice(allowed)]
    stage = stages[i]
    repeats = stage.repeats
    for change in chosen:
        if change == "cluster":
            stage = replace(stage, cluster=rng.choice([k for k in range(num_clusters) if k != stage.cluster]))
            cells[i] = new_cell(cells[i], stage.cluster, rng)
        elif change == "cell" and "cluster" not in chosen:
            cells[i] = new_cell(cells[i], stage.cluster, rng)
        elif change == "channels":
            stage = replace(stage, channels=scale_width(stage.channels, rng.choice(WIDTH_FACTORS)))
        elif change == "stride":  # no more than max_downsamplings stride-2 stages
            others = sum(s.stride == 2 for j, s in enumerate(stages) if j != i)
            stage = replace(stage, stride=rng.choice((1, 2)) if others < max_downsamplings else 1)
        elif change == "repeats":
            others = sum(s.repeats for j, s in enumerate(stages) if j != i)
            repeats = min(stage.repeats + rng.choice(REPEAT_DELTAS), MAX_CELLS - others)
        elif change == "final":
            final = scale_width(final, rng.choice(WIDTH_FACTORS))
    if repeats <= 0 and len(stages) > 1:  # the stage is deleted
        del stages[i], cells[i]
    else:
        stages[i] = replace(stage, repeats=max(1, repeats))
        if "insert" in chosen and sum(s.repeats for s in stages) < MAX_CELLS:
            stages.insert(i + 1, HLStage(stages[i].cluster, stages[i].channels, 1, 1))
            cells.insert(i + 1, cells[i])
    return Candidate(HLArch(tuple(stages), final), tuple(cells)), chosen


def mutate_cell(cell: Cell, rng: random.Random, op_set: str = "graphnet", attempts: int = 50) -> Cell:
    """A cell-level mutation (the GraphNet baselines): replace one node's op, add a forward edge or remove an edge;
    redrawn until the result is a valid cell different from ``cell``."""
    ops_pool = resolve_op_set(op_set)
    for _ in range(attempts):
        ops, edges = list(cell.ops), set(cell.edges)
        kind = rng.choice(("op", "add_edge", "remove_edge"))
        if kind == "op" and ops:
            ops[rng.randrange(len(ops))] = rng.choice(ops_pool)
        elif kind == "add_edge":
            missing = [(i, j) for j in range(1, cell.output + 1) for i in range(j) if (i, j) not in edges]
            if missing:
                edges.add(rng.choice(missing))
        elif kind == "remove_edge" and len(edges) > 1:
            edges.discard(rng.choice(sorted(edges)))
        try:
            child = Cell(tuple(ops), tuple(sorted(edges)))
        except ValueError:
            continue
        if child != cell:
            return child
    return cell
