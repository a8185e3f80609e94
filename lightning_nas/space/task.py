"""The task: what the final network is, shared by search, generate, the budget checks and evaluate (DESIGN §1).

A budget is only meaningful on the network that will be trained. A :class:`Task` names that network's input
(channels and spatial size; one size for 1-D sequences, two for images), its outputs (classes or labels, or output
channels per pixel for a ``dense`` task), the stem's stride and whether the ops carry squeeze-and-excitation (the
paper's ImageNet networks: stem stride 2, SE on). :meth:`Task.materialise` turns an HL architecture and its cells
into the task's :class:`~lightning_nas.space.arch.Arch`, :func:`~lightning_nas.space.network.task_network` builds
the network ``evaluate`` trains and :func:`~lightning_nas.space.network.task_cost` counts it for one sample — so
``search``, ``generate`` and the SG's budget guide check the cost of exactly that network. The architecture carries
its task (``arch.json``'s ``"task"``), and ``evaluate`` refuses to train it on inputs or outputs of another shape.

Named tasks (:data:`TASKS`): ``cifar10``, ``cifar100``, ``imagenet`` (224 px, stem stride 2, SE), ``digits`` (the
demo: 1 channel upsampled to 32 px) and the eight NAS-Bench-360 tasks (shapes from :mod:`lightning_nas.tasks`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

MAX_DOWNSAMPLINGS = 5  # stride-2 stages the generators write at most: 32× (a 32-px input ends at 1 px; ZenNAS's cap)
FIELDS = ("name", "in_channels", "input_size", "num_classes", "dense", "stem_stride", "se")


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"task.{name}: expected a positive integer, got {value!r}")
    return value


@dataclass(frozen=True)
class Task:
    """See the module docstring. ``input_size``: ``(H, W)`` for images, ``(L,)`` for sequences (an int means a
    square image)."""

    name: str
    in_channels: int = 3
    input_size: tuple[int, ...] = (32, 32)
    num_classes: int = 10
    dense: bool = False
    stem_stride: int = 1
    se: bool = False

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"task.name: expected a non-empty name, got {self.name!r}")
        size = (self.input_size, self.input_size) if isinstance(self.input_size, int) else tuple(self.input_size)
        if len(size) not in (1, 2):
            raise ValueError(f"task.input_size: {self.input_size!r}; give (H, W) for images or (L,) for sequences")
        object.__setattr__(self, "input_size", tuple(_positive_int(s, "input_size") for s in size))
        _positive_int(self.in_channels, "in_channels")
        _positive_int(self.num_classes, "num_classes")
        for flag in ("dense", "se"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"task.{flag}: expected true or false, got {getattr(self, flag)!r}")
        if self.stem_stride not in (1, 2) or isinstance(self.stem_stride, bool):
            raise ValueError(f"task.stem_stride: {self.stem_stride!r}; must be 1 or 2")
        if self.dense and self.stem_stride != 1:
            raise ValueError(f"task {self.name!r}: a dense task keeps the input resolution, so stem_stride must be 1")

    # ---- shapes --------------------------------------------------------------------------------------------------
    @property
    def dims(self) -> int:
        """2 for images, 1 for sequences."""
        return len(self.input_size)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample's shape without the batch dimension: ``(C, H, W)`` or ``(C, L)``."""
        return (self.in_channels, *self.input_size)

    @property
    def max_downsamplings(self) -> int:
        """Stride-2 stages an architecture of this task may have: none for a dense task, else as many halvings as
        the input survives after the stem (at least 1 px), at most :data:`MAX_DOWNSAMPLINGS`."""
        if self.dense:
            return 0
        after_stem = min(self.input_size) / self.stem_stride
        return max(0, min(MAX_DOWNSAMPLINGS, int(math.floor(math.log2(after_stem))) if after_stem >= 1 else 0))

    # ---- the network -----------------------------------------------------------------------------------------------
    def materialise(self, hl, cells):
        """α(α̂) for this task: the HL architecture ``hl`` with ``cells``, this task's stem stride and SE."""
        return hl.materialise(cells, stem_stride=self.stem_stride, se=self.se, task=self)

    def check(self, arch) -> None:
        """Raise ``ValueError`` if ``arch`` has more stride-2 stages than this task allows (none for a dense task)."""
        strided = sum(s.stride == 2 for s in arch.stages)
        if strided > self.max_downsamplings:
            kind = "a dense task keeps the input resolution" if self.dense else (
                f"a {'×'.join(map(str, self.input_size))} input after a stride-{self.stem_stride} stem allows "
                f"{self.max_downsamplings}")
            raise ValueError(f"task {self.name!r}: the architecture has {strided} stride-2 stages; {kind}")

    # ---- serialisation -----------------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d

    @classmethod
    def from_json(cls, spec: dict[str, Any]) -> Task:
        if not isinstance(spec, dict):
            raise ValueError(f"task: expected an object with {', '.join(FIELDS)}, got {type(spec).__name__}")
        unknown = set(spec) - set(FIELDS)
        if unknown:
            raise ValueError(f"task: unknown field(s) {sorted(unknown)}; expected {', '.join(FIELDS)}")
        if "name" not in spec:
            raise ValueError("task: needs a 'name'")
        return cls(**spec)

    @classmethod
    def resolve(cls, value: str | dict | Task) -> Task:
        """A task from a name of :data:`TASKS`, a JSON object (``{"name": "cifar100"}`` takes the named task's
        fields, others override them: ``{"name": "cifar10", "input_size": 64}``), or a ``Task``."""
        if isinstance(value, Task):
            return value
        if isinstance(value, str):
            return named_task(value)
        if isinstance(value, dict) and value.get("name") in known_task_names():
            base = named_task(value["name"]).to_json()
            unknown = set(value) - set(FIELDS)
            if unknown:
                raise ValueError(f"task: unknown field(s) {sorted(unknown)}; expected {', '.join(FIELDS)}")
            return cls.from_json({**base, **value})
        return cls.from_json(value)

    @classmethod
    def from_probe(cls, probe) -> Task:
        """The task of a ZC probe batch (its channels, size and classes; stem stride 1, no SE)."""
        return cls("probe", int(probe.x.shape[1]), tuple(int(s) for s in probe.x.shape[2:]), int(probe.num_classes))


TASKS: dict[str, Task] = {
    "cifar10": Task("cifar10", 3, (32, 32), 10),
    "cifar100": Task("cifar100", 3, (32, 32), 100),
    "imagenet": Task("imagenet", 3, (224, 224), 1000, stem_stride=2, se=True),
    "digits": Task("digits", 1, (32, 32), 10),
}


def _nb360_tasks() -> dict[str, Task]:
    from ..tasks import NB360_TASKS

    return {name: Task(name, t.input_shape[0], tuple(t.input_shape[1:]), t.num_outputs, dense=t.dense)
            for name, t in NB360_TASKS.items()}


def known_task_names() -> list[str]:
    return [*TASKS, *_nb360_tasks()]


def named_task(name: str) -> Task:
    """The task called ``name`` (see :func:`known_task_names`)."""
    if name in TASKS:
        return TASKS[name]
    nb360 = _nb360_tasks()
    if name in nb360:
        return nb360[name]
    raise ValueError(f"task: {name!r} is not a known task; known: {', '.join(known_task_names())} "
                     "(or give the fields: {name, in_channels, input_size, num_classes, dense, stem_stride, se})")
