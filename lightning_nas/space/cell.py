"""The GraphNet cell x = (A, ops): a DAG of up to six op nodes between an input and an output (paper §3).

Nodes are numbered in a topological order: ``0`` is the input, ``1..n`` are op nodes (``n = len(ops)``),
``n + 1`` is the output, and every edge ``(i, j)`` goes forward (``i < j``). An op node sums its inputs and
applies its op; the output sums its inputs (so an edge input → output is a residual). A cell is valid iff
the output has an input and every op node has an input and a consumer — in a DAG numbered topologically that
is the same as "every op node lies on a path input → output".

Cells keep ``skip`` op nodes as they are: rerouting a skip node's edges (as the authors' encoding does) is not
function-preserving when it creates a repeated term, so we do not do it implicitly.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import numbers
import random as _random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch

from .ops import KERNELS, OP_TYPES, OPS, resolve_op_set

MAX_OP_NODES = 6
"""Most op nodes a cell may have (paper §3)."""

# Tensor encoding for the G-VAE (paper Table 6 sizes plus a skip column): rows are
# [global, input, op 1..6, output]; columns are the op-type one-hot (skip included), the
# input/output/global flags and the kernel one-hot.
ENCODING_NODES = MAX_OP_NODES + 3
_FLAG_INPUT, _FLAG_OUTPUT, _FLAG_GLOBAL = len(OP_TYPES), len(OP_TYPES) + 1, len(OP_TYPES) + 2
_KERNEL_COL0 = len(OP_TYPES) + 3
ENCODING_FEATURES = _KERNEL_COL0 + len(KERNELS)
_GLOBAL_ROW, _INPUT_ROW, _OUTPUT_ROW = 0, 1, ENCODING_NODES - 1


def labelled_space_size(op_set: str | Sequence[str] = "graphnet", max_op_nodes: int = MAX_OP_NODES) -> int:
    """Size of the labelled micro space: every forward adjacency over ``max_op_nodes + 2`` nodes times an op per
    op node, ignoring validity and isomorphism (2^28 · 28^6 ≈ 1.3·10^17 for GraphNet, paper §3)."""
    nodes = max_op_nodes + 2
    return 2 ** (nodes * (nodes - 1) // 2) * len(resolve_op_set(op_set)) ** max_op_nodes


@dataclass(frozen=True)
class Cell:
    """A validated cell. ``edges`` is stored sorted; construct with any iterable of ``(i, j)`` pairs."""

    ops: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]

    def __post_init__(self):
        ops = tuple(self.ops)
        for n, op in enumerate(ops):
            if not isinstance(op, str):
                raise ValueError(f"ops[{n}]: expected an op name (a string), got {op!r}")
        for edge in self.edges:
            if not (isinstance(edge, tuple | list) and len(edge) == 2 and all(map(_is_index, edge))):
                raise ValueError(f"edges: {edge!r} is not a pair of integer node indices [i, j]")
        edges = tuple(sorted((int(i), int(j)) for i, j in self.edges))
        object.__setattr__(self, "ops", ops)
        object.__setattr__(self, "edges", edges)
        self._validate()

    # ---- structure -------------------------------------------------------------------------------
    @property
    def num_op_nodes(self) -> int:
        return len(self.ops)

    @property
    def output(self) -> int:
        """Index of the output node."""
        return len(self.ops) + 1

    @cached_property
    def predecessors(self) -> tuple[tuple[int, ...], ...]:
        """``predecessors[j]``: the nodes feeding node ``j``, ascending."""
        preds: list[list[int]] = [[] for _ in range(self.output + 1)]
        for i, j in self.edges:
            preds[j].append(i)
        return tuple(tuple(p) for p in preds)

    @cached_property
    def successors(self) -> tuple[tuple[int, ...], ...]:
        succs: list[list[int]] = [[] for _ in range(self.output + 1)]
        for i, j in self.edges:
            succs[i].append(j)
        return tuple(tuple(s) for s in succs)

    def _validate(self) -> None:
        if len(self.ops) > MAX_OP_NODES:
            raise ValueError(f"ops: {len(self.ops)} op nodes; a cell has at most {MAX_OP_NODES}")
        for n, op in enumerate(self.ops):
            if op not in OPS:
                raise ValueError(f"ops[{n}]: unknown op {op!r}; known: {', '.join(OPS)}")
        out = self.output
        for e, (i, j) in enumerate(self.edges):
            if i >= j:
                raise ValueError(f"edges: edge ({i}, {j}) must go forward (i < j); nodes are numbered topologically")
            if i < 0 or j > out:
                raise ValueError(f"edges: edge ({i}, {j}) names a node outside 0..{out} (0 input, {out} output)")
            if e and self.edges[e - 1] == (i, j):
                raise ValueError(f"edges: edge ({i}, {j}) is listed twice")
        if not self.predecessors[out]:
            raise ValueError("edges: the output node has no input")
        for v in range(1, out):
            role = f"op node {v} ({self.ops[v - 1]})"
            if not self.predecessors[v]:
                raise ValueError(f"edges: {role} has no input; every op node must lie on a path input → output")
            if not self.successors[v]:
                raise ValueError(f"edges: {role} has no consumer; every op node must lie on a path input → output")

    def uses_only(self, op_set: str | Sequence[str]) -> bool:
        """Whether every op of this cell is in ``op_set``."""
        allowed = set(resolve_op_set(op_set))
        return all(op in allowed for op in self.ops)

    def relabel(self, order: Sequence[int]) -> Cell:
        """The same cell with op nodes renumbered: ``order[k]`` is the old index of new op node ``k + 1``.

        ``order`` must be a topological order of the op nodes (edges still go forward)."""
        if sorted(order) != list(range(1, self.output)):
            raise ValueError(f"order: must be a permutation of the op nodes 1..{self.num_op_nodes}")
        new = {0: 0, self.output: self.output} | {old: k + 1 for k, old in enumerate(order)}
        return Cell(tuple(self.ops[old - 1] for old in order), tuple((new[i], new[j]) for i, j in self.edges))

    # ---- isomorphism -----------------------------------------------------------------------------
    @cached_property
    def _canonical(self) -> Cell:
        return self.relabel(_canonical_order(self))

    def canonical(self) -> Cell:
        """The canonical representative of this cell's isomorphism class (same for every relabelling)."""
        return self._canonical

    @cached_property
    def _hash(self) -> str:
        c = self._canonical
        text = ";".join(c.ops) + "|" + ";".join(f"{i}-{j}" for i, j in c.edges)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def canonical_hash(self) -> str:
        """Isomorphism-invariant key (128-bit hex): equal iff the cells are the same labelled DAG up to a
        renumbering of op nodes. It is computed from an exact canonical form, so unequal cells never collide."""
        return self._hash

    def is_isomorphic(self, other: Cell) -> bool:
        return self._canonical == other._canonical

    # ---- serialisation ---------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """Readable spec: ``{"ops": [...], "edges": [[i, j], ...]}`` (0 input, 1..n ops, n+1 output)."""
        return {"ops": list(self.ops), "edges": [[i, j] for i, j in self.edges]}

    @classmethod
    def from_json(cls, spec: dict[str, Any] | str) -> Cell:
        """Inverse of :meth:`to_json`; also accepts the JSON text. Raises ``ValueError`` naming the field."""
        if isinstance(spec, str):
            spec = json.loads(spec)
        if not isinstance(spec, dict):
            raise ValueError(f"cell: expected an object with 'ops' and 'edges', got {type(spec).__name__}")
        unknown = set(spec) - {"ops", "edges"}
        if unknown:
            raise ValueError(f"cell: unknown field(s) {sorted(unknown)}; a cell has 'ops' and 'edges'")
        for key in ("ops", "edges"):
            if not isinstance(spec.get(key), list):
                raise ValueError(f"{key}: missing or not a list")
        for e, edge in enumerate(spec["edges"]):
            if not (isinstance(edge, list | tuple) and len(edge) == 2 and all(map(_is_index, edge))):
                raise ValueError(f"edges[{e}]: {edge!r} is not a pair of integer node indices")
        return cls(tuple(spec["ops"]), tuple(tuple(edge) for edge in spec["edges"]))

    def __str__(self) -> str:
        return f"Cell(ops={list(self.ops)}, edges={[list(e) for e in self.edges]})"

    # ---- tensor encoding for the G-VAE ---------------------------------------------------------------
    def to_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, F)``: a 9×9 adjacency and 9×16 feature matrix (rows: global, input, op 1..6, output).

        ``A`` is strictly upper triangular: the global node (row 0) points to every present node, and each cell
        edge ``(i, j)`` sets ``A[row(i), row(j)]``. ``F`` one-hot encodes op type (10 columns, skip included),
        the input/output/global flags and the kernel (3 columns). Absent op rows are all zero. Exact inverse:
        :meth:`from_tensors`."""
        adj = torch.zeros(ENCODING_NODES, ENCODING_NODES)
        feat = torch.zeros(ENCODING_NODES, ENCODING_FEATURES)
        row = self._row
        for v in range(self.output + 1):
            adj[_GLOBAL_ROW, row(v)] = 1.0
        for i, j in self.edges:
            adj[row(i), row(j)] = 1.0
        feat[_GLOBAL_ROW, _FLAG_GLOBAL] = 1.0
        feat[_INPUT_ROW, _FLAG_INPUT] = 1.0
        feat[_OUTPUT_ROW, _FLAG_OUTPUT] = 1.0
        for v, op in enumerate(self.ops, start=1):
            spec = OPS[op]
            feat[row(v), OP_TYPES.index(spec.type)] = 1.0
            if spec.kernel is not None:
                feat[row(v), _KERNEL_COL0 + KERNELS.index(spec.kernel)] = 1.0
        return adj, feat

    def _row(self, v: int) -> int:
        return _OUTPUT_ROW if v == self.output else v + 1

    @classmethod
    def from_tensors(cls, adj: torch.Tensor, feat: torch.Tensor) -> Cell:
        """Decode an exact 0/1 encoding (see :meth:`to_tensors`). Op rows left empty are skipped, so op nodes
        are renumbered compactly. Raises ``ValueError`` for a malformed encoding or an invalid cell."""
        if tuple(adj.shape) != (ENCODING_NODES, ENCODING_NODES) or tuple(feat.shape) != (
            ENCODING_NODES,
            ENCODING_FEATURES,
        ):
            raise ValueError(
                f"encoding: expected A {ENCODING_NODES}×{ENCODING_NODES} and F {ENCODING_NODES}×{ENCODING_FEATURES}, "
                f"got {tuple(adj.shape)} and {tuple(feat.shape)}"
            )
        a = adj.detach().to("cpu", torch.float32)
        f = feat.detach().to("cpu", torch.float32)
        if not bool(((a == 0) | (a == 1)).all() and ((f == 0) | (f == 1)).all()):
            raise ValueError("encoding: entries must be exactly 0 or 1 (threshold decoder outputs first)")
        ops: list[str] = []
        rows = [_INPUT_ROW]
        for r in range(_INPUT_ROW + 1, _OUTPUT_ROW):
            types = torch.nonzero(f[r, : len(OP_TYPES)]).flatten().tolist()
            kernels = torch.nonzero(f[r, _KERNEL_COL0:]).flatten().tolist()
            if not types:
                if kernels or a[r].any() or a[:, r][1:].any():
                    raise ValueError(f"encoding: row {r} has kernel or edges but no op type")
                continue
            if len(types) != 1:
                raise ValueError(f"encoding: row {r} has {len(types)} op types; exactly one expected")
            op_type = OP_TYPES[types[0]]
            if op_type == "skip":
                if kernels:
                    raise ValueError(f"encoding: row {r} is a skip node with a kernel")
                ops.append("skip")
            else:
                if len(kernels) != 1:
                    raise ValueError(f"encoding: row {r} ({op_type}) needs exactly one kernel, got {len(kernels)}")
                ops.append(f"{op_type}_k{KERNELS[kernels[0]]}")
            rows.append(r)
        rows.append(_OUTPUT_ROW)
        index = {r: v for v, r in enumerate(rows)}
        edges = [
            (index[r], index[c])
            for r, c in torch.nonzero(a[_INPUT_ROW:, _INPUT_ROW:]).add(_INPUT_ROW).tolist()
            if r in index and c in index
        ]
        return cls(tuple(ops), tuple(edges))

    # ---- sampling and NAS-Bench-201 --------------------------------------------------------------------
    @classmethod
    def random(
        cls,
        seed: int | None = None,
        op_set: str | Sequence[str] = "graphnet",
        num_op_nodes: int | None = None,
        rng: _random.Random | None = None,
    ) -> Cell:
        """Draw a random valid cell of up to six op nodes, as the authors' sampler does (``num_op_nodes=None``), or
        of exactly ``num_op_nodes`` op nodes.

        Default (``num_op_nodes=None``): every node ``j`` of the full frame (op nodes ``1..6``, then the output
        ``7``) draws a parent count ``k ~ U{1..j}`` and ``k`` distinct parents uniformly among nodes ``0..j−1``. The
        cell is the output's ancestors: op nodes with no path to the output are dropped and the rest renumbered
        in order, so a cell has fewer than six op nodes whenever some node feeds nothing the output reads. A
        cell with fewer than 3 edges (``input → output`` alone, or a single chain ``input → op → output``) is
        redrawn. This is the authors' sampler (HGENNAS ``SearchSpace.sample``: parents are sampled recursively
        from the output, so only its ancestors get edges; ``minimum_edges = 3``).

        Measured over 3,000 samples (``sample_cells(3000, seed=0)``; seed 1 in brackets): 14.58 [14.70] edges on
        average, 3–27 [3–28]; op-node counts 1..6: 45, 173, 249, 396, 716, 1421 [33, 183, 235, 403, 680, 1466],
        so about half the cells have fewer than six op nodes (over 400,000 draws: mean 14.66 edges, σ 5.67;
        counts 1..6 ≈ 1.1, 6.0, 8.4, 13.2, 23.1, 48.2 %). The former rule (always six op nodes, dead ends fed to
        the output) gave 18.22 [18.19] edges, 10–28. The authors report 13.9 edges (3–28); a port of their
        sampler gives 13.97 over 30,000 draws (43 % six-op cells) and 14.68 (48 %) with its skip step left out.
        That step is the gap, and we do not copy it: after drawing ops it reroutes around skip nodes (off by
        one: node ``i`` is rerouted when node ``i − 1`` is a skip, and a skip in slot 6 empties the output),
        then re-checks the parent counts, which every rerouting breaks, so the cell is redrawn. Their sampler
        thus rejects nearly every cell that contains a skip (what leaks through is the ~1.4 % zero-op rows),
        and as each op node is a skip with probability 0.1 this favours cells with fewer op nodes and edges.
        Here a skip stays an op node (the encoding has a skip column; see the module note on rerouting), so no
        cell is rejected for its ops.

        ``num_op_nodes=n``: every op node ``j`` and the output draw parents as above over the ``n + 2`` nodes;
        every op node still without a consumer then feeds the output, so all ``n`` op nodes are used (more
        edges than the default rule: the dead ends become residuals).

        Ops (both rules): an op type uniformly from the types present in ``op_set`` (skip included), then a
        kernel uniformly. Pass ``seed`` for one reproducible cell or ``rng`` to draw a stream
        (:func:`sample_cells`). Skip nodes stay in the cell (no skip removal).
        """
        if num_op_nodes is not None and not (_is_index(num_op_nodes) and 1 <= num_op_nodes <= MAX_OP_NODES):
            raise ValueError(f"num_op_nodes: must be None or in 1..{MAX_OP_NODES}, got {num_op_nodes!r}")
        ops_by_type = _ops_by_type(op_set if isinstance(op_set, str) else resolve_op_set(op_set))
        rng = rng if rng is not None else _random.Random(seed)
        edges: set[tuple[int, int]] | list[tuple[int, int]]
        if num_op_nodes is None:
            out = MAX_OP_NODES + 1
            while True:  # parents of every node of the full frame; keep the output's ancestors
                parents = [()] + [tuple(rng.sample(range(j), rng.randint(1, j))) for j in range(1, out + 1)]
                kept: set[int] = set()
                stack = [out]
                while stack:
                    for i in parents[stack.pop()]:
                        if i and i not in kept:
                            kept.add(i)
                            stack.append(i)
                nodes = sorted(kept)
                if len(parents[out]) + sum(len(parents[v]) for v in nodes) >= 3:  # the authors' minimum_edges
                    break
            n = len(nodes)
            index = {0: 0, out: n + 1} | {v: k + 1 for k, v in enumerate(nodes)}
            edges = [(index[i], index[j]) for j in (*nodes, out) for i in parents[j]]
        else:
            n = num_op_nodes
            edges = set()
            for j in range(1, n + 2):
                for i in rng.sample(range(j), rng.randint(1, j)):
                    edges.add((i, j))
            has_consumer = {i for i, _ in edges}
            edges.update((v, n + 1) for v in range(1, n + 1) if v not in has_consumer)
        types = list(ops_by_type)
        ops = tuple(rng.choice(ops_by_type[rng.choice(types)]) for _ in range(n))
        return cls(ops, tuple(edges))


def sample_cells(
    n: int, seed: int = 0, op_set: str | Sequence[str] = "graphnet", num_op_nodes: int | None = None
) -> Iterator[Cell]:
    """``n`` cells from :meth:`Cell.random` drawn from one seeded stream: cells of up to six op nodes by the
    authors' rule, or of exactly ``num_op_nodes`` op nodes when given."""
    rng = _random.Random(seed)
    for _ in range(n):
        yield Cell.random(op_set=op_set, num_op_nodes=num_op_nodes, rng=rng)


_OPS_BY_TYPE_CACHE: dict[Any, dict[str, tuple[str, ...]]] = {}


def _ops_by_type(op_set: str | tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    if op_set not in _OPS_BY_TYPE_CACHE:
        groups: dict[str, list[str]] = {}
        for op in resolve_op_set(op_set):
            groups.setdefault(OPS[op].type, []).append(op)
        _OPS_BY_TYPE_CACHE[op_set] = {t: tuple(v) for t, v in groups.items()}
    return _OPS_BY_TYPE_CACHE[op_set]


def _canonical_order(cell: Cell) -> list[int]:
    """A canonical topological order of the op nodes.

    Colours start as (role, longest-path depth, op) and are refined Weisfeiler–Lehman style with the sorted
    colours of predecessors and successors until stable; op nodes are ordered by colour, and only nodes that
    still share a colour (same depth, hence no edges between them) are permuted, keeping the permutation whose
    edge list is smallest. The refinement is isomorphism-invariant and the final tie-break is exhaustive, so the
    result is an exact canonical form, not just a hash."""
    out = cell.output
    preds, succs = cell.predecessors, cell.successors
    depth = [0] * (out + 1)
    for j in range(1, out + 1):
        depth[j] = max(depth[i] + 1 for i in preds[j]) if preds[j] else 0
    labels = ["<in>", *cell.ops, "<out>"]
    keys = [(0 if v == 0 else 2 if v == out else 1, depth[v], labels[v]) for v in range(out + 1)]
    colour = _ranks(keys)
    while True:
        sigs = [
            (colour[v], tuple(sorted(colour[u] for u in preds[v])), tuple(sorted(colour[w] for w in succs[v])))
            for v in range(out + 1)
        ]
        refined = _ranks(sigs)
        if len(set(refined)) == len(set(colour)):
            break
        colour = refined
    op_nodes = sorted(range(1, out), key=lambda v: colour[v])
    groups = [list(g) for _, g in itertools.groupby(op_nodes, key=lambda v: colour[v])]
    if all(len(g) == 1 for g in groups):
        return op_nodes
    best_code, best_order = None, op_nodes
    for perms in itertools.product(*(itertools.permutations(g) for g in groups)):
        order = [v for p in perms for v in p]
        new = {0: 0, out: out} | {old: k + 1 for k, old in enumerate(order)}
        code = sorted((new[i], new[j]) for i, j in cell.edges)
        if best_code is None or code < best_code:
            best_code, best_order = code, order
    return best_order


def _is_index(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def encode_inputs(cells: Sequence[Cell]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stacked graph-encoder inputs of ``cells``: B×9×9 adjacency and B×9×16 node features
    (:meth:`Cell.to_tensors`)."""
    adj, feat = zip(*(c.to_tensors() for c in cells), strict=True)
    return torch.stack(adj), torch.stack(feat)


def _ranks(keys: list) -> list[int]:
    index = {k: r for r, k in enumerate(sorted(set(keys)))}
    return [index[k] for k in keys]
