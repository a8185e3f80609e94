"""Cells as fixed-size targets for generative models, and decoding model outputs back to valid cells.

A cell has :data:`MAX_OP_NODES` op *slots*; slot ``s`` (0-based) is op node ``s + 1`` if the cell has that many op
nodes. Targets per cell (see :func:`cell_targets`):

- ``adjacency``: the 8×8 forward adjacency over [input, slot 0..5, output] (only the strict upper triangle is used);
- ``op_type``: per slot, the op-type index in :data:`OP_TYPES` or ``ABSENT`` (= ``len(OP_TYPES)``) for an empty slot;
- ``kernel``: per slot, the kernel index in :data:`KERNELS`, or ``-1`` (skip or empty slot: ignored by the loss).

:func:`decode_cells` turns logits into cells and always returns *valid* cells, repairing as the authors do
(REFERENCE.md, CCNF sampling): edges are the logits above 0 (probability 0.5); an op node without an input gets its
likeliest parent, an op node without a consumer feeds the output, and an output without an input gets its
likeliest parent. Whether a cell needed any repair is reported so validity can be measured honestly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .cell import MAX_OP_NODES, Cell
from .ops import KERNELS, OP_TYPES, OPS

NODES = MAX_OP_NODES + 2
ABSENT = len(OP_TYPES)
"""Op-type class of an empty slot."""
NUM_TYPE_CLASSES = len(OP_TYPES) + 1
NUM_KERNELS = len(KERNELS)
_UPPER = torch.triu_indices(NODES, NODES, offset=1)


def _slot_node(cell: Cell, v: int) -> int:
    """Position of cell node ``v`` among the 8 fixed nodes (the output is always last)."""
    return NODES - 1 if v == cell.output else v


def cell_targets(cell: Cell) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(adjacency 8×8 float, op_type [6] long, kernel [6] long)`` of one cell."""
    adj = torch.zeros(NODES, NODES)
    for i, j in cell.edges:
        adj[_slot_node(cell, i), _slot_node(cell, j)] = 1.0
    op_type = torch.full((MAX_OP_NODES,), ABSENT, dtype=torch.long)
    kernel = torch.full((MAX_OP_NODES,), -1, dtype=torch.long)
    for s, op in enumerate(cell.ops):
        spec = OPS[op]
        op_type[s] = OP_TYPES.index(spec.type)
        if spec.kernel is not None:
            kernel[s] = KERNELS.index(spec.kernel)
    return adj, op_type, kernel


def batch_targets(cells: Sequence[Cell]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    adj, op_type, kernel = zip(*(cell_targets(c) for c in cells), strict=True)
    return torch.stack(adj), torch.stack(op_type), torch.stack(kernel)


def upper_triangle(adj: torch.Tensor) -> torch.Tensor:
    """The 28 forward-edge entries of B×8×8 adjacency matrices, as B×28."""
    return adj[:, _UPPER[0], _UPPER[1]]


def decode_cells(
    edge_logits: torch.Tensor, type_logits: torch.Tensor, kernel_logits: torch.Tensor
) -> tuple[list[Cell], list[bool]]:
    """Cells from decoder outputs: ``edge_logits`` B×8×8 (strict upper triangle used), ``type_logits``
    B×6×11, ``kernel_logits`` B×6×3. Returns the cells and, per cell, whether it needed repair."""
    types = type_logits.argmax(-1).tolist()
    kernels = kernel_logits.argmax(-1).tolist()
    probs = edge_logits.detach().float().cpu()
    cells, repaired = [], []
    for b in range(len(types)):
        cell, fixed = _decode_one(probs[b], types[b], kernels[b])
        cells.append(cell)
        repaired.append(fixed)
    return cells, repaired


def _decode_one(logits: torch.Tensor, types: list[int], kernels: list[int]) -> tuple[Cell, bool]:
    slots = [s for s in range(MAX_OP_NODES) if types[s] != ABSENT]
    ops = []
    for s in slots:
        op_type = OP_TYPES[types[s]]
        ops.append("skip" if op_type == "skip" else f"{op_type}_k{KERNELS[kernels[s]]}")
    nodes = [0, *(s + 1 for s in slots), NODES - 1]  # fixed positions of the kept nodes, in order
    out = len(nodes) - 1
    score = logits[nodes][:, nodes]  # logits between kept nodes, renumbered 0..out
    edges = {(i, j) for i in range(out + 1) for j in range(i + 1, out + 1) if score[i, j] > 0}
    before = set(edges)
    for v in range(1, out):  # orphans: their likeliest parent
        if not any(j == v for _, j in edges):
            edges.add((int(score[:v, v].argmax()), v))
    for v in range(1, out):  # dead ends: feed the output
        if not any(i == v for i, _ in edges):
            edges.add((v, out))
    if not any(j == out for _, j in edges):  # an output without input (only possible with no op node)
        edges.add((int(score[:out, out].argmax()), out))
    return Cell(tuple(ops), tuple(edges)), edges != before
