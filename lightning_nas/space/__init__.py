"""The GraphNet search space: ops, cells (micro), architectures (macro), the network builder and cost counting."""

from .arch import CHANNEL_GRID, MAX_CELLS, Arch, Stage
from .cell import MAX_OP_NODES, Cell, labelled_space_size, sample_cells
from .cost import count_cost
from .network import CellBlock, GraphNet, build_network
from .ops import OP_SETS, OP_TYPES, OPS, build_op, resolve_op_set
from .task import TASKS, Task

__all__ = [
    "Arch",
    "Cell",
    "CellBlock",
    "CHANNEL_GRID",
    "GraphNet",
    "MAX_CELLS",
    "MAX_OP_NODES",
    "OP_SETS",
    "OP_TYPES",
    "OPS",
    "Stage",
    "TASKS",
    "Task",
    "build_network",
    "build_op",
    "count_cost",
    "labelled_space_size",
    "resolve_op_set",
    "sample_cells",
]
