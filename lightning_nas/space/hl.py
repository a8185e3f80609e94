"""The higher-level (HL) search space Ŝ (paper §3.3, Eq. 8): stages of (cluster, channels, stride, repeats).

An :class:`HLArch` names a *cell family* (a GMM cluster of the micro space) per stage instead of a cell. A concrete
architecture α(α̂) is obtained by drawing each stage's cell from its cluster (the CCNF, Eq. 9) and
:meth:`HLArch.materialise` puts the two together. Channels, strides, repeats and the head follow the same rules as
:class:`~lightning_nas.space.arch.Arch` (channels on the grid 8..1024 step 8, stride 1 or 2, at most 20 cells).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .arch import MAX_CELLS, Arch, Stage, _check_channels, _check_int, _check_stride
from .cell import Cell
from .task import MAX_DOWNSAMPLINGS  # noqa: F401  (re-exported: the HL space's limit)


@dataclass(frozen=True)
class HLStage:
    """``repeats`` cells of family ``cluster`` with ``channels`` outputs; the first has stride ``stride``."""

    cluster: int
    channels: int
    stride: int = 1
    repeats: int = 1

    def __post_init__(self):
        if _check_int(self.cluster, "cluster") < 0:
            raise ValueError(f"cluster: {self.cluster}; clusters are numbered from 0")
        _check_channels(self.channels, "channels")
        _check_stride(self.stride, "stride")
        if _check_int(self.repeats, "repeats") < 1:
            raise ValueError(f"repeats: {self.repeats}; a stage has at least 1 cell")


@dataclass(frozen=True)
class HLArch:
    """A point of Ŝ: HL stages plus the head width (``None``: no 1×1 conv before pooling)."""

    stages: tuple[HLStage, ...]
    final_channels: int | None = None

    def __post_init__(self):
        stages = tuple(self.stages)
        object.__setattr__(self, "stages", stages)
        if not stages:
            raise ValueError("stages: an HL architecture needs at least one stage")
        for n, stage in enumerate(stages):
            if not isinstance(stage, HLStage):
                raise ValueError(f"stages[{n}]: expected an HLStage, got {type(stage).__name__}")
        if self.num_cells > MAX_CELLS:
            raise ValueError(f"stages: {self.num_cells} cells in total (sum of repeats); at most {MAX_CELLS}")
        if self.final_channels is not None:
            _check_channels(self.final_channels, "final_channels")

    @property
    def num_cells(self) -> int:
        return sum(s.repeats for s in self.stages)

    @property
    def downsamplings(self) -> int:
        """Stride-2 stages (the mutations, random architectures and the SG grammar keep it ≤ MAX_DOWNSAMPLINGS)."""
        return sum(s.stride == 2 for s in self.stages)

    def materialise(self, cells: Sequence[Cell], **arch_kw: Any) -> Arch:
        """α(α̂): the architecture with ``cells[i]`` (drawn from cluster ``stages[i].cluster``) in stage i."""
        if len(cells) != len(self.stages):
            raise ValueError(f"cells: {len(cells)} given for {len(self.stages)} stages")
        stages = tuple(Stage(c, s.channels, s.stride, s.repeats) for c, s in zip(cells, self.stages, strict=True))
        return Arch(stages=stages, final_channels=self.final_channels, **arch_kw)

    # ---- serialisation ---------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "stages": [{"cluster": s.cluster, "channels": s.channels, "stride": s.stride, "repeats": s.repeats}
                       for s in self.stages],
            "final_channels": self.final_channels,
        }

    @classmethod
    def from_json(cls, spec: dict[str, Any]) -> HLArch:
        """Inverse of :meth:`to_json`; errors name the field (``stages[1].channels``)."""
        if not isinstance(spec, dict) or not isinstance(spec.get("stages"), list):
            raise ValueError("hl_arch: expected an object with a 'stages' list")
        unknown = set(spec) - {"stages", "final_channels"}
        if unknown:
            raise ValueError(f"hl_arch: unknown field(s) {sorted(unknown)}")
        stages = []
        for n, s in enumerate(spec["stages"]):
            if not isinstance(s, dict) or set(s) - {"cluster", "channels", "stride", "repeats"}:
                raise ValueError(f"stages[{n}]: expected cluster, channels, stride, repeats")
            try:
                stages.append(HLStage(**s))
            except (TypeError, ValueError) as err:
                raise ValueError(f"stages[{n}].{err}") from None
        return cls(tuple(stages), spec.get("final_channels"))
