"""Cells as fixed-size targets for generative models, and decoding model outputs back to valid cells.

A cell has :data:`MAX_OP_NODES` op *slots*; slot ``s`` (0-based) is op node ``s + 1`` if the cell has that many op
nodes. The 8 fixed positions are [input, slot 0..5, output]. Targets per cell (:class:`CellTargets`):

- ``adjacency``: the 8×8 forward adjacency (only the strict upper triangle is used);
- ``op_type``: per slot, the op-type index in :data:`OP_TYPES` or ``ABSENT`` (= ``len(OP_TYPES)``) for an empty slot;
- ``kernel``: per slot, the kernel index in :data:`KERNELS`, or ``-1`` (skip or empty slot: ignored by the loss);
- ``first_parent``: per slot, the position of the op node's lowest-numbered input, ``-1`` for an empty slot;
- ``edge_free``: 8×8, 1 where the structured decoder models the edge with a Bernoulli (see below).

Two decoders turn logits into cells (:func:`decode_cells`):

**independent** (the authors'): every edge is a Bernoulli; edges are the logits above 0 (probability 0.5), then the
cell is repaired as REFERENCE.md describes (an op node without an input gets its likeliest parent, an op node without
a consumer feeds the output, an output without an input gets its likeliest parent), and whether a cell needed repair is
reported, so validity is measured honestly.

**structured** (ours, the default of the G-VAE): the parameterisation covers valid cells only, as D-VAE's node-by-node
decoder does. An op node's input set is non-empty, so it is written as its *first parent* (a categorical over the
earlier nodes) plus Bernoulli edges from the nodes after the first parent; every op node must feed something, so an op
node that feeds no later op node feeds the output (that edge is implied, not modelled); the other edges into the
output, the input's included, are Bernoulli. This is a bijection between valid cells and (first parents, free edges),
so the likelihood is exact and no decoded cell ever needs repair.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

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


class CellTargets(NamedTuple):
    """Decoder targets of one cell or (stacked) of a batch; see the module docstring."""

    adjacency: torch.Tensor
    op_type: torch.Tensor
    kernel: torch.Tensor
    first_parent: torch.Tensor
    edge_free: torch.Tensor


def cell_targets(cell: Cell) -> CellTargets:
    """The :class:`CellTargets` of one cell."""
    adj = torch.zeros(NODES, NODES)
    for i, j in cell.edges:
        adj[_slot_node(cell, i), _slot_node(cell, j)] = 1.0
    op_type = torch.full((MAX_OP_NODES,), ABSENT, dtype=torch.long)
    kernel = torch.full((MAX_OP_NODES,), -1, dtype=torch.long)
    first_parent = torch.full((MAX_OP_NODES,), -1, dtype=torch.long)
    edge_free = torch.zeros(NODES, NODES)
    n = cell.num_op_nodes
    for s, op in enumerate(cell.ops):
        spec = OPS[op]
        op_type[s] = OP_TYPES.index(spec.type)
        if spec.kernel is not None:
            kernel[s] = KERNELS.index(spec.kernel)
        v = s + 1
        first = int(adj[:v, v].nonzero()[0])
        first_parent[s] = first
        edge_free[first + 1 : v, v] = 1.0  # edges from the nodes after the first parent
    for v in range(n + 1):  # into the output: free unless implied (an op node feeding no op node; no op node at all)
        feeds_op = bool(adj[v, 1 : n + 1].any())
        edge_free[v, NODES - 1] = float(feeds_op)
    return CellTargets(adj, op_type, kernel, first_parent, edge_free)


def batch_targets(cells: Sequence[Cell]) -> CellTargets:
    """The :class:`CellTargets` of ``cells``, stacked."""
    return CellTargets(*(torch.stack(t) for t in zip(*(cell_targets(c) for c in cells), strict=True)))


def upper_triangle(adj: torch.Tensor) -> torch.Tensor:
    """The 28 forward-edge entries of B×8×8 adjacency matrices, as B×28."""
    return adj[:, _UPPER[0], _UPPER[1]]


def decode_cells(
    edge_logits: torch.Tensor,
    type_logits: torch.Tensor,
    kernel_logits: torch.Tensor,
    parent_logits: torch.Tensor | None = None,
) -> tuple[list[Cell], list[bool]]:
    """Cells from decoder outputs: ``edge_logits`` B×8×8 (strict upper triangle used), ``type_logits`` B×6×11,
    ``kernel_logits`` B×6×3 and, for the structured decoder, ``parent_logits`` B×6×7 (slot s: logits of positions
    0..s as its first parent; the rest is ignored). Without ``parent_logits`` the independent decoder with repair is
    used. Returns the cells and, per cell, whether it needed repair (never, for the structured decoder)."""
    types = type_logits.argmax(-1).tolist()
    kernels = kernel_logits.argmax(-1).tolist()
    logits = edge_logits.detach().float().cpu()
    parents = parent_logits.detach().float().cpu() if parent_logits is not None else None
    cells, repaired = [], []
    for b in range(len(types)):
        slots = [s for s in range(MAX_OP_NODES) if types[b][s] != ABSENT]
        ops = tuple(_op_name(types[b][s], kernels[b][s]) for s in slots)
        nodes = [0, *(s + 1 for s in slots), NODES - 1]  # fixed positions of the kept nodes, in order
        score = logits[b][nodes][:, nodes]  # edge logits between kept nodes, renumbered 0..out
        if parents is None:
            edges, fixed = _threshold_and_repair(score)
        else:
            first = parents[b][[s for s in slots]][:, nodes[:-1]]  # kept slots × kept positions (input, op nodes)
            edges, fixed = _structured(score, first), False
        cells.append(Cell(ops, tuple(sorted(edges))))
        repaired.append(fixed)
    return cells, repaired


def _op_name(op_type: int, kernel: int) -> str:
    name = OP_TYPES[op_type]
    return "skip" if name == "skip" else f"{name}_k{KERNELS[kernel]}"


def _threshold_and_repair(score: torch.Tensor) -> tuple[set[tuple[int, int]], bool]:
    out = len(score) - 1
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
    return edges, edges != before


def _structured(score: torch.Tensor, first: torch.Tensor) -> set[tuple[int, int]]:
    out = len(score) - 1
    edges = set()
    for v in range(1, out):  # op node v: its first parent, then free edges from the nodes after it
        f = int(first[v - 1, :v].argmax())
        edges.add((f, v))
        edges.update((u, v) for u in range(f + 1, v) if score[u, v] > 0)
    for v in range(out):  # into the output: implied for a node feeding no op node, else free
        if any(i == v for i, _ in edges):
            if score[v, out] > 0:
                edges.add((v, out))
        else:  # an op node without a consumer, or the input of a cell without op nodes
            edges.add((v, out))
    return edges
