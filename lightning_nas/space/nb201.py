"""Exact embedding of NAS-Bench-201 cells into the GraphNet space (DESIGN.md §3).

An NB201 cell has 4 nodes and an op on each of its 6 edges ``i → j`` (``i < j``); node ``j`` sums its incoming
edges and node 3 is the output. In GraphNet the ops sit on nodes, so each non-``none`` edge ``i → j`` becomes an
op node whose inputs are the op nodes of the edges ``· → i`` (the cell input when ``i = 0``) and whose consumers
are the op nodes of the edges ``j → ·`` (plus the cell output when ``j = 3``). ``none`` edges vanish, and op
nodes left off every input → output path (dead edges) are pruned: they cannot change the output.
NB201's ops map to ``conv_k1``, ``conv_k3``, ``avg_pool_k3`` and ``skip`` (see :mod:`.ops` for the one BN
difference of ``avg_pool``).
"""

from __future__ import annotations

import csv
import itertools
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .cell import Cell
from .ops import NB201_OPS

NB201_EDGE_OPS = ("none", *NB201_OPS)
_EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))  # the order of an arch string
_TOKEN = re.compile(r"^(?P<op>[a-z0-9_]+)~(?P<src>\d)$")
NB201_DATA = Path(__file__).resolve().parents[2] / "data" / "nb201"
"""The NAS-Bench-201 tables shipped with the project (``data/nb201/README.md``: sources and licences)."""


def parse_nb201(arch_str: str) -> list[tuple[int, int, str]]:
    """``[(i, j, op), ...]`` for the six edges of an arch string, in the string's order."""
    groups = arch_str.strip().split("+")
    if len(groups) != 3:
        raise ValueError(f"arch_str: expected 3 '+'-separated node groups, got {len(groups)} in {arch_str!r}")
    edges = []
    for j, group in enumerate(groups, start=1):
        tokens = group.strip("|").split("|")
        if len(tokens) != j:
            raise ValueError(f"arch_str: node {j} needs {j} incoming edges, got {len(tokens)} in {arch_str!r}")
        for i, token in enumerate(tokens):
            m = _TOKEN.match(token)
            if not m or int(m["src"]) != i or m["op"] not in NB201_EDGE_OPS:
                raise ValueError(
                    f"arch_str: edge {token!r} into node {j} must be 'op~{i}' with op in {NB201_EDGE_OPS}"
                )
            edges.append((i, j, m["op"]))
    return edges


def cell_from_nb201(arch_str: str) -> Cell:
    edges = [(i, j, op) for i, j, op in parse_nb201(arch_str) if op != "none"]
    out = len(edges) + 1  # provisional numbering: op node k + 1 for edge k, then the output
    graph: set[tuple[int, int]] = set()
    for k, (i, j, _) in enumerate(edges):
        node = k + 1
        if i == 0:
            graph.add((0, node))
        graph.update((m + 1, node) for m, (_, j2, _) in enumerate(edges) if j2 == i)
        if j == 3:
            graph.add((node, out))
    live = _forward_reachable(graph, 0) & _backward_reachable(graph, out)
    if out not in live:
        raise ValueError(
            f"arch_str: the output of {arch_str!r} is not reachable from the input (every path has a 'none' edge); "
            "NAS-Bench-201 scores such cells at chance level (10 % on CIFAR-10) and they have no GraphNet cell"
        )
    keep = sorted(live)  # string order is topological, so keeping the order keeps edges forward
    index = {v: n for n, v in enumerate(keep)}
    ops = tuple(NB201_OPS[edges[v - 1][2]] for v in keep[1:-1])
    return Cell(ops, tuple((index[a], index[b]) for a, b in graph if a in index and b in index))


def nb201_from_cell(cell: Cell) -> str | None:
    if not cell.uses_only("nb201"):
        return None
    return _nb201_by_hash().get(cell.canonical_hash())


def nb201_arch_strings() -> list[str]:
    """All 15,625 NAS-Bench-201 arch strings, in the benchmark's edge-op order."""
    out = []
    for ops in itertools.product(NB201_EDGE_OPS, repeat=len(_EDGES)):
        by_node = [[f"{op}~{i}" for (i, j), op in zip(_EDGES, ops, strict=True) if j == node] for node in (1, 2, 3)]
        out.append("+".join("|" + "|".join(group) + "|" for group in by_node))
    return out


def sample_nb201_cells(n: int, seed: int = 0):
    """``n`` cells of NB201's shape: the reachable NB201 arch strings (15,284 of 15,625) in a seeded random order,
    each as its GraphNet cell; past the last string the order repeats. Isomorphic strings give equal cells (8,764
    distinct), so the archive keeps each once."""
    import random

    strings = []
    for arch_str in nb201_arch_strings():
        try:
            strings.append((arch_str, cell_from_nb201(arch_str)))
        except ValueError:
            continue
    random.Random(seed).shuffle(strings)
    for i in range(n):
        yield strings[i % len(strings)][1]


@lru_cache(maxsize=1)
def _nb201_by_hash() -> dict[str, str]:
    """Canonical hash → the NB201 string of that cell with the fewest non-``none`` edges (ties: smallest string)."""
    table: dict[str, tuple[int, str]] = {}
    for arch_str in nb201_arch_strings():
        try:
            cell = cell_from_nb201(arch_str)
        except ValueError:
            continue
        key = (sum(not token.startswith("none~") for token in re.findall(r"[a-z0-9_]+~\d", arch_str)), arch_str)
        h = cell.canonical_hash()
        if h not in table or key < table[h]:
            table[h] = key
    return {h: s for h, (_, s) in table.items()}


def _forward_reachable(graph: set[tuple[int, int]], start: int) -> set[int]:
    seen, frontier = {start}, [start]
    while frontier:
        v = frontier.pop()
        for a, b in graph:
            if a == v and b not in seen:
                seen.add(b)
                frontier.append(b)
    return seen


def _backward_reachable(graph: set[tuple[int, int]], start: int) -> set[int]:
    return _forward_reachable({(b, a) for a, b in graph}, start)


@dataclass(frozen=True)
class NB201Record:
    """One row of the NAS-Bench-201 ground truth (``data/nb201/nats_bench_tss.csv``); accuracies in %."""

    index: int
    arch_str: str
    unique_str: str
    cifar10: float
    cifar100: float
    imagenet16: float


def read_nb201_csv(path: str | Path) -> list[NB201Record]:
    """All rows of the NATS-Bench-TSS ground-truth CSV, in benchmark-index order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"NAS-Bench-201 table not found at {path}: expected the CSV with columns {', '.join(_CSV_COLUMNS)} "
            f"(shipped as {NB201_DATA / 'nats_bench_tss.csv'})"
        )
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = set(_CSV_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: not a NATS-Bench-TSS table, missing column(s) {sorted(missing)}")
        return [
            NB201Record(
                index=i,
                arch_str=row["ArchitectureString"],
                unique_str=row["UniqueString"],
                cifar10=float(row["CIFAR10TestAccuracy200Epochs"]),
                cifar100=float(row["CIFAR100TestAccuracy200Epochs"]),
                imagenet16=float(row["ImageNetTestAccuracy200Epochs"]),
            )
            for i, row in enumerate(reader)
        ]


_CSV_COLUMNS = (
    "CIFAR10TestAccuracy200Epochs",
    "CIFAR100TestAccuracy200Epochs",
    "ImageNetTestAccuracy200Epochs",
    "ArchitectureString",
    "UniqueString",
)


def read_nb201_valid_csv(path: str | Path) -> dict[str, float]:
    """``arch_str → CIFAR-10 validation accuracy (%)`` of ``cifar10_valid.csv`` (9,445 de-duplicated cells)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"NAS-Bench-201 validation table not found at {path}: expected the CSV with columns "
                                f"ArchitectureString, CIFAR10ValidAccuracy200Epochs (shipped as "
                                f"{NB201_DATA / 'cifar10_valid.csv'})")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not {"ArchitectureString", "CIFAR10ValidAccuracy200Epochs"} <= set(reader.fieldnames or ()):
            raise ValueError(f"{path}: not the NB201 validation table (columns ArchitectureString, "
                             "CIFAR10ValidAccuracy200Epochs)")
        return {row["ArchitectureString"]: float(row["CIFAR10ValidAccuracy200Epochs"]) for row in reader}


class NB201Table:
    """The ground truth of a searched GraphNet cell: test accuracies (to report) and CIFAR-10 validation accuracy (to
    select by — the paper's "train the top-N" step on NB201 is this lookup, never the test column).

    A cell is reported through ``nb201_from_cell`` (the isomorphic string with the fewest edges). Its validation
    accuracy is that string's, or — when the de-duplicated validation table keeps another string of the same
    GraphNet cell — the mean over the strings of that cell it does keep (every reachable cell has at least one).
    """

    def __init__(self, root: str | Path = NB201_DATA):
        root = Path(root)
        self.records = {r.arch_str: r for r in read_nb201_csv(root / "nats_bench_tss.csv")}
        valid = read_nb201_valid_csv(root / "cifar10_valid.csv")
        by_hash: dict[str, list[float]] = {}
        for arch_str, acc in valid.items():
            try:
                by_hash.setdefault(cell_from_nb201(arch_str).canonical_hash(), []).append(acc)
            except ValueError:
                continue  # an unreachable output: no GraphNet cell
        self._valid, self._valid_by_hash = valid, {h: sum(v) / len(v) for h, v in by_hash.items()}

    def test(self, cell: Cell) -> NB201Record:
        arch_str = nb201_from_cell(cell)
        if arch_str is None:
            raise ValueError(f"{cell}: not a NAS-Bench-201 cell")
        return self.records[arch_str]

    def valid(self, cell: Cell) -> float:
        arch_str = nb201_from_cell(cell)
        if arch_str is None:
            raise ValueError(f"{cell}: not a NAS-Bench-201 cell")
        return self._valid.get(arch_str, self._valid_by_hash[cell.canonical_hash()])
