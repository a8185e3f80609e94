"""The macro architecture α: a stem, stages of (cell, channels, stride, repeats), and a head (paper §3).

The paper's "sequence of up to 20 cells" is the special case ``repeats = 1`` for every stage. The first repeat of
a stage carries its stride; a cell whose input has other channels or resolution projects it first
(ReLU → 1×1 conv (stride) → BN). :meth:`Arch.zc_probe` is the fixed macro α_x of Eq. 1–2 used for ZC vectors.

The JSON spec (``arch.to_json()``) is plain data a person can read and edit::

    {"stem": {"channels": 16, "stride": 1},
     "stages": [{"cell": {"ops": ["conv_k3"], "edges": [[0, 1], [1, 2]]},
                 "channels": 16, "stride": 1, "repeats": 5}, ...],
     "head": {"final_channels": null},
     "se": false}

An architecture made for a task (:class:`~lightning_nas.space.task.Task`: ``search`` and ``generate`` write them)
carries it as ``"task"``, so whoever trains it knows the input and outputs its budget was checked for.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cell import Cell
from .task import Task

MAX_CELLS = 20
CHANNEL_GRID = tuple(range(8, 1025, 8))
STRIDES = (1, 2)


def _check_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    return value


def _check_channels(value: Any, name: str) -> int:
    value = _check_int(value, name)
    if value not in CHANNEL_GRID:
        raise ValueError(f"{name}: {value} is off the channel grid 8, 16, ..., 1024 (multiples of 8)")
    return value


def _check_stride(value: Any, name: str) -> int:
    value = _check_int(value, name)
    if value not in STRIDES:
        raise ValueError(f"{name}: stride {value}; must be 1 or 2")
    return value


@dataclass(frozen=True)
class Stage:
    """``repeats`` copies of ``cell`` with ``channels`` output channels; the first copy has stride ``stride``."""

    cell: Cell
    channels: int
    stride: int = 1
    repeats: int = 1

    def __post_init__(self):
        if not isinstance(self.cell, Cell):
            raise ValueError(f"cell: expected a Cell, got {type(self.cell).__name__}")
        _check_channels(self.channels, "channels")
        _check_stride(self.stride, "stride")
        if _check_int(self.repeats, "repeats") < 1:
            raise ValueError(f"repeats: {self.repeats}; a stage has at least 1 cell")


@dataclass(frozen=True)
class Arch:
    """A macro architecture. ``stem_channels=None`` becomes the first stage's channels; ``final_channels=None``
    means the head has no 1×1 conv (BN → ReLU → pool → linear, as in α_x). ``task``: the task the architecture was
    made for (its cost was checked on that task's network), or ``None``."""

    stages: tuple[Stage, ...]
    stem_channels: int | None = None
    stem_stride: int = 1
    final_channels: int | None = None
    se: bool = False
    task: Task | None = None

    def __post_init__(self):
        stages = tuple(self.stages)
        object.__setattr__(self, "stages", stages)
        if not stages:
            raise ValueError("stages: an architecture needs at least one stage")
        for n, stage in enumerate(stages):
            if not isinstance(stage, Stage):
                raise ValueError(f"stages[{n}]: expected a Stage, got {type(stage).__name__}")
        if self.num_cells > MAX_CELLS:
            raise ValueError(f"stages: {self.num_cells} cells in total (sum of repeats); at most {MAX_CELLS}")
        if self.stem_channels is None:
            object.__setattr__(self, "stem_channels", stages[0].channels)
        _check_channels(self.stem_channels, "stem.channels")
        _check_stride(self.stem_stride, "stem.stride")
        if self.final_channels is not None:
            _check_channels(self.final_channels, "head.final_channels")
        if not isinstance(self.se, bool):
            raise ValueError(f"se: expected true or false, got {self.se!r}")
        if self.task is not None:
            if not isinstance(self.task, Task):
                raise ValueError(f"task: expected a Task, got {type(self.task).__name__}")
            self.task.check(self)

    @property
    def num_cells(self) -> int:
        return sum(s.repeats for s in self.stages)

    @classmethod
    def zc_probe(cls, cell: Cell) -> Arch:
        """α_x of Eq. 1–2: 17 copies of ``cell``, c_i = 16·2^⌊i/6⌋, stride 2 at cells 6 and 12; stem 3×3 conv to 16
        channels + BN; head BN → ReLU → global pool → linear."""
        return cls(
            stages=(Stage(cell, 16, 1, 5), Stage(cell, 32, 2, 6), Stage(cell, 64, 2, 6)),
            stem_channels=16,
        )

    @classmethod
    def sequence(cls, cells: Sequence[Cell], channels: Sequence[int], strides: Sequence[int], **kw) -> Arch:
        """The paper's α(t_1, …, t_n): one stage per cell (``repeats = 1``)."""
        if not len(cells) == len(channels) == len(strides):
            raise ValueError("cells, channels and strides must have the same length")
        return cls(stages=tuple(Stage(c, ch, s, 1) for c, ch, s in zip(cells, channels, strides, strict=True)), **kw)

    # ---- serialisation ---------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        spec = {
            "stem": {"channels": self.stem_channels, "stride": self.stem_stride},
            "stages": [
                {"cell": s.cell.to_json(), "channels": s.channels, "stride": s.stride, "repeats": s.repeats}
                for s in self.stages
            ],
            "head": {"final_channels": self.final_channels},
            "se": self.se,
        }
        if self.task is not None:
            spec["task"] = self.task.to_json()
        return spec

    @classmethod
    def from_json(cls, spec: dict[str, Any] | str) -> Arch:
        """Inverse of :meth:`to_json` (also accepts JSON text). Errors name the field, e.g. ``stages[2].stride``."""
        if isinstance(spec, str):
            spec = json.loads(spec)
        if not isinstance(spec, dict):
            raise ValueError(f"arch: expected a JSON object, got {type(spec).__name__}")
        unknown = set(spec) - {"stem", "stages", "head", "se", "task"}
        if unknown:
            raise ValueError(f"arch: unknown field(s) {sorted(unknown)}; expected stem, stages, head, se, task")
        stem, head = spec.get("stem", {}), spec.get("head", {})
        for name, part, keys in (("stem", stem, {"channels", "stride"}), ("head", head, {"final_channels"})):
            if not isinstance(part, dict):
                raise ValueError(f"{name}: expected an object")
            if set(part) - keys:
                raise ValueError(f"{name}: unknown field(s) {sorted(set(part) - keys)}; expected {sorted(keys)}")
        raw_stages = spec.get("stages")
        if not isinstance(raw_stages, list):
            raise ValueError("stages: missing or not a list")
        stages = []
        for n, raw in enumerate(raw_stages):
            where = f"stages[{n}]"
            if not isinstance(raw, dict):
                raise ValueError(f"{where}: expected an object with cell, channels, stride, repeats")
            extra = set(raw) - {"cell", "channels", "stride", "repeats"}
            if extra:
                raise ValueError(f"{where}: unknown field(s) {sorted(extra)}")
            if "cell" not in raw or "channels" not in raw:
                raise ValueError(f"{where}: needs 'cell' and 'channels'")
            try:
                cell = Cell.from_json(raw["cell"])
            except ValueError as e:
                raise ValueError(f"{where}.cell.{e}") from None
            try:
                stages.append(Stage(cell, raw["channels"], raw.get("stride", 1), raw.get("repeats", 1)))
            except ValueError as e:
                raise ValueError(f"{where}.{e}") from None
        return cls(
            stages=tuple(stages),
            stem_channels=stem.get("channels"),
            stem_stride=stem.get("stride", 1),
            final_channels=head.get("final_channels"),
            se=spec.get("se", False),
            task=Task.from_json(spec["task"]) if spec.get("task") is not None else None,
        )

    def dumps(self) -> str:
        """The JSON spec as indented text with short lists (ops, edge pairs) kept on one line."""
        text = json.dumps(self.to_json(), indent=2)
        return re.sub(r"\[\s*([^\[\]{}]*?)\s*\]", lambda m: "[" + re.sub(r"\s*\n\s*", " ", m[1]) + "]", text)

    def save(self, path) -> None:
        """Write the spec to ``path`` (an ``arch.json``)."""
        Path(path).write_text(self.dumps() + "\n")

    @classmethod
    def load(cls, path) -> Arch:
        """Read an ``arch.json`` file (plain JSON: loading never runs code)."""
        with open(path) as f:
            try:
                return cls.from_json(json.load(f))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not valid JSON ({e})") from None
