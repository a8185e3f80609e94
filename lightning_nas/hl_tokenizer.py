"""The sequence generator's vocabulary (paper §3.3, Eq. 10; App. A): an HL architecture as tokens, after its condition.

A sequence is ``<bos> [condition tokens] <sep> (cluster channels stride repeats)* head <eos>``:

- **condition tokens** y, in the fixed order of :data:`CONDITION_KEYS`, any of them may be absent: task tokens
  (``classes``, ``input_size``: :func:`task_condition` of the architecture's task) and the architecture's measured
  ``params``, ``macs``, ``flops`` and ``tcet`` — and, for a tokenizer with a ``device``, its ``latency_ms`` and
  ``energy_mj`` on that device (batch 1, :mod:`lightning_nas.hw`; energy only where the device has an energy
  model) — each binned on a log10 grid (:class:`LogBins`; ``per_decade`` bins
  per factor of ten, values outside the range clamp to the end bins). In training each is removed at random
  (App. A: "randomly drop condition tokens from [param, flops, zc]"; we drop the task tokens too, so that a prompt
  for a task the SG never saw can leave them out — see ``SGModule.task_condition``);
- **one token group per HL stage**: ``cluster:k``, ``channels:c`` (c on the grid 8..1024 step 8), ``stride:s``,
  ``repeats:r`` — the stages of :class:`~lightning_nas.space.hl.HLArch`, at most 20 cells in all;
- **the head**: ``head:none`` or ``head:c`` (the 1×1 conv width before pooling), then ``<eos>``.

:meth:`HLTokenizer.allowed` is the grammar: the tokens that may follow a partial sequence so that it can still
become a legal HL architecture; the SG's constrained decoding masks everything else. The tokenizer is fully described
by :meth:`HLTokenizer.to_dict` (plain numbers, saved inside the SG checkpoint).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

from .space.arch import MAX_CELLS
from .space.hl import MAX_DOWNSAMPLINGS, HLArch, HLStage

CONDITION_KEYS = ("classes", "input_size", "params", "macs", "flops", "tcet", "latency_ms", "energy_mj")
HARDWARE_KEYS = ("latency_ms", "energy_mj")  # only in a tokenizer with a device
DROPPABLE_KEYS = CONDITION_KEYS
TASK_KEYS = ("classes", "input_size")
SPECIALS = ("<pad>", "<bos>", "<sep>", "<eos>")
PAD, BOS, SEP, EOS = range(4)
CHANNELS = tuple(range(8, 1025, 8))


def task_condition(task) -> dict[str, int]:
    """The task tokens' values of a :class:`~lightning_nas.space.task.Task`: its classes and its largest input size
    (pixels per side, or sequence length)."""
    return {"classes": task.num_classes, "input_size": max(task.input_size)}


@dataclass(frozen=True)
class LogBins:
    """Bins of equal width on a log10 scale from 10**low to 10**high, ``per_decade`` per factor of ten."""

    low: float
    high: float
    per_decade: int

    def __post_init__(self):
        if not (self.high > self.low and self.per_decade >= 1):
            raise ValueError(f"bins: need high > low and per_decade ≥ 1 (got {self})")

    @property
    def size(self) -> int:
        return int(round((self.high - self.low) * self.per_decade))

    def edges(self, i: int) -> tuple[float, float]:
        return 10 ** (self.low + i / self.per_decade), 10 ** (self.low + (i + 1) / self.per_decade)

    def index(self, value: float) -> int:
        """The bin holding ``value`` (non-positive values and values below the range: bin 0; above: the last)."""
        if not value > 0:
            return 0
        i = math.floor((math.log10(value) - self.low) * self.per_decade + 1e-9)
        return min(max(i, 0), self.size - 1)

    def index_under(self, limit: float) -> int:
        """The highest bin lying entirely at or below ``limit`` (bin 0 if none does): the condition for a budget."""
        i = self.index(limit)
        return i if self.edges(i)[1] <= limit * (1 + 1e-9) else max(i - 1, 0)


DEFAULT_BINS = {
    "classes": LogBins(0, 4, 8),      # 1 .. 10k classes
    "input_size": LogBins(0, 3.5, 8),  # 1 .. 3162 pixels (or sequence length)
    "params": LogBins(2, 10, 8),
    "macs": LogBins(3, 13, 8),
    "flops": LogBins(3, 13, 8),
    "tcet": LogBins(0, 12, 8),
    "latency_ms": LogBins(-2, 4, 8),  # 10 µs .. 10 s
    "energy_mj": LogBins(-2, 5, 8),
}


def default_bins(device: str | None = None) -> dict[str, LogBins]:
    """:data:`DEFAULT_BINS` of the keys a tokenizer has: the hardware keys only with a ``device``."""
    return {k: b for k, b in DEFAULT_BINS.items() if device is not None or k not in HARDWARE_KEYS}


@dataclass(frozen=True)
class HLTokenizer:
    """Vocabulary for HL architectures of ``num_clusters`` cell families (see the module docstring); ``device``: the
    platform whose latency/energy the ``latency_ms``/``energy_mj`` tokens mean (``None``: no hardware tokens; a
    tokenizer saved before they existed loads as one)."""

    num_clusters: int
    bins: Mapping[str, LogBins] | None = None  # default: default_bins(device)
    max_cells: int = MAX_CELLS
    device: str | None = None

    def __post_init__(self):
        if not isinstance(self.num_clusters, int) or self.num_clusters < 1:
            raise ValueError(f"num_clusters: {self.num_clusters!r}; need a positive integer")
        if self.bins is None:
            object.__setattr__(self, "bins", default_bins(self.device))
        if set(self.bins) != set(default_bins(self.device)):
            raise ValueError(f"bins: need exactly the condition keys {sorted(default_bins(self.device))} (device "
                             f"{self.device!r}), got {sorted(self.bins)}")
        if not 1 <= self.max_cells <= MAX_CELLS:
            raise ValueError(f"max_cells: {self.max_cells}; 1..{MAX_CELLS}")

    # ---- vocabulary -----------------------------------------------------------------------------------------------
    @cached_property
    def vocab(self) -> tuple[str, ...]:
        tokens = list(SPECIALS)
        for key in self.keys:
            tokens += [f"{key}:{i}" for i in range(self.bins[key].size)]
        tokens += [f"cluster:{k}" for k in range(self.num_clusters)]
        tokens += [f"channels:{c}" for c in CHANNELS]
        tokens += ["stride:1", "stride:2"]
        tokens += [f"repeats:{r}" for r in range(1, self.max_cells + 1)]
        tokens += ["head:none"] + [f"head:{c}" for c in CHANNELS]
        return tuple(tokens)

    @property
    def keys(self) -> tuple[str, ...]:
        """The condition keys this tokenizer has, in :data:`CONDITION_KEYS` order."""
        return tuple(k for k in CONDITION_KEYS if k in self.bins)

    @cached_property
    def ids(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(self.vocab)}

    def __len__(self) -> int:
        return len(self.vocab)

    def _group(self, prefix: str) -> tuple[int, ...]:
        return tuple(i for token, i in self.ids.items() if token.startswith(prefix))

    @cached_property
    def _groups(self) -> dict[str, tuple[int, ...]]:
        return {name: self._group(f"{name}:") for name in ("cluster", "channels", "stride", "repeats", "head")}

    # ---- conditions ------------------------------------------------------------------------------------------------
    def prompt(self, values: Mapping[str, float | None] | None = None,
               limits: Mapping[str, float | None] | None = None) -> list[int]:
        """``<bos> y <sep>``: ``values`` are put in the bin that holds them (training, task tokens); ``limits``
        (a budget) in the highest bin entirely under them, so that what the SG learnt for that bin fits the budget.
        Keys given as ``None`` are left out."""
        values = {k: v for k, v in (values or {}).items() if v is not None}
        limits = {k: v for k, v in (limits or {}).items() if v is not None}
        unknown = (set(values) | set(limits)) - set(self.keys)
        if unknown:
            hint = "; hardware keys need a tokenizer with a device" if unknown & set(HARDWARE_KEYS) else ""
            raise ValueError(f"conditions: unknown key(s) {sorted(unknown)}; known: {self.keys}{hint}")
        both = set(values) & set(limits)
        if both:
            raise ValueError(f"conditions: {sorted(both)} given both as a value and as a limit")
        ids = [BOS]
        for key in self.keys:
            if key in values:
                ids.append(self.ids[f"{key}:{self.bins[key].index(float(values[key]))}"])
            elif key in limits:
                ids.append(self.ids[f"{key}:{self.bins[key].index_under(float(limits[key]))}"])
        return ids + [SEP]

    # ---- architectures ---------------------------------------------------------------------------------------------
    def encode(self, hl: HLArch, values: Mapping[str, float | None] | None = None) -> list[int]:
        """The full training sequence of ``hl`` conditioned on its own measured ``values`` (Eq. 10)."""
        if hl.num_cells > self.max_cells:
            raise ValueError(f"hl: {hl.num_cells} cells; this tokenizer allows {self.max_cells}")
        ids = self.prompt(values)
        for s in hl.stages:
            if s.cluster >= self.num_clusters:
                raise ValueError(f"hl: cluster {s.cluster}; this tokenizer knows {self.num_clusters} clusters")
            ids += [self.ids[f"cluster:{s.cluster}"], self.ids[f"channels:{s.channels}"],
                    self.ids[f"stride:{s.stride}"], self.ids[f"repeats:{s.repeats}"]]
        head = "none" if hl.final_channels is None else hl.final_channels
        return ids + [self.ids[f"head:{head}"], EOS]

    def decode(self, ids: Sequence[int]) -> HLArch:
        """The HL architecture after ``<sep>`` in ``ids`` (a prompt may precede it); ``ValueError`` if the tokens
        do not follow the grammar."""
        ids = [int(i) for i in ids]
        body = ids[ids.index(SEP) + 1:] if SEP in ids else ids
        stages, i = [], 0
        while i < len(body) and self.vocab[body[i]].startswith("cluster:"):
            group = [self.vocab[t] for t in body[i:i + 4]]
            names = [g.split(":")[0] for g in group]
            if names != ["cluster", "channels", "stride", "repeats"]:
                raise ValueError(f"tokens {i}..{i + 3} after <sep>: {group} is not cluster, channels, stride, repeats")
            stages.append(HLStage(*(int(g.split(":")[1]) for g in group)))
            i += 4
        if not stages:
            raise ValueError("no stage after <sep>")
        if i >= len(body) or not self.vocab[body[i]].startswith("head:"):
            raise ValueError(f"token {i} after <sep>: expected head:…, got "
                             f"{self.vocab[body[i]] if i < len(body) else 'the end'}")
        head = self.vocab[body[i]].split(":")[1]
        if i + 1 >= len(body) or body[i + 1] != EOS:
            raise ValueError("no <eos> after the head token")
        return HLArch(tuple(stages), None if head == "none" else int(head))

    def task_bins(self, task) -> tuple[int, int]:
        """The (classes, input_size) bins of ``task``: what the SG can tell tasks apart by."""
        values = task_condition(task)
        return self.bins["classes"].index(values["classes"]), self.bins["input_size"].index(values["input_size"])

    def allowed(self, generated: Sequence[int], max_downsamplings: int = MAX_DOWNSAMPLINGS) -> tuple[int, ...]:
        """Token ids that may follow ``generated`` (the tokens after ``<sep>``) in a legal sequence: a stage group
        in order, repeats keeping the total ≤ ``max_cells``, at most ``max_downsamplings`` stride-2 stages (the
        task's limit; 0 for a dense task), the head only after a stage, ``<eos>`` after the head, ``<pad>`` after
        ``<eos>``."""
        g = self._groups
        cells, stages, strided, phase = 0, 0, 0, 0  # phase: position inside a stage group (0 = a new group or the head)
        for n, t in enumerate(generated):
            t = int(t)
            if t == EOS or t == PAD:
                return (PAD,)
            token = self.vocab[t]
            if token.startswith("head:"):
                return (EOS,) if n == len(generated) - 1 else (PAD,)
            if phase == 2:
                strided += token == "stride:2"
            if phase == 3:
                cells += int(token.split(":")[1])
                stages += 1
            phase = (phase + 1) % 4
        if phase == 0:
            return (g["cluster"] if cells < self.max_cells else ()) + (g["head"] if stages else ())
        if phase == 1:
            return g["channels"]
        if phase == 2:
            return g["stride"] if strided < max_downsamplings else tuple(t for t in g["stride"]
                                                                        if self.vocab[t] != "stride:2")
        return g["repeats"][: self.max_cells - cells]

    def describe(self, ids: Sequence[int]) -> str:
        """Readable tokens, e.g. ``params:[7.5e+05, 1e+06) | cluster:2 channels:64 stride:2 repeats:1 …``."""
        out = []
        for t in ids:
            token = self.vocab[int(t)]
            key, _, rest = token.partition(":")
            if key in self.bins:
                lo, hi = self.bins[key].edges(int(rest))
                token = f"{key}:[{lo:.3g}, {hi:.3g})"
            out.append(token)
        return " ".join(out)

    # ---- persistence -----------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"num_clusters": self.num_clusters, "max_cells": self.max_cells, "device": self.device,
                "bins": {k: [b.low, b.high, b.per_decade] for k, b in self.bins.items()}}

    @classmethod
    def from_dict(cls, d: Mapping) -> HLTokenizer:
        try:
            return cls(int(d["num_clusters"]), {k: LogBins(*v) for k, v in d["bins"].items()}, int(d["max_cells"]),
                       d.get("device"))
        except (KeyError, TypeError) as err:
            raise ValueError(f"tokenizer record: {err!r}; expected num_clusters, max_cells and bins") from None
