"""Hardware cost of any GraphNet network on a device: what a ``latency_ms`` / ``energy_mj`` budget is checked with.

:class:`HardwareCost` is a per-layer lookup table (:class:`~lightning_nas.hw.predictors.LookupTable` over
:func:`~lightning_nas.hw.predictors.network_features`: MACs, elements and kernels per layer kind), one per quantity:

- ``host``: the FBNet-style op table instead (:class:`~lightning_nas.hw.op_table.OpLatencyTable`: every layer timed
  alone at its input shape on this machine, summed), mapped to whole-network latency by an affine table fitted on
  this machine's own measurements (:func:`~lightning_nas.hw.measure.measure_arch`) of random architectures of the
  task; measurements and layer timings are stored in the archive under the host's device fingerprint and reused;
- a HW-NAS-Bench platform (``raspi4``, ``pixel3``, ``edgegpu``, ``edgetpu``, ``eyeriss``, ``fpga``): fitted on the
  platform's measured latency (and energy, where measured) of NB201 cells, each cell's network built as the NB201
  macro skeleton α_x (:meth:`~lightning_nas.space.arch.Arch.zc_probe`: 17 cells, 16/32/64 channels) on 32×32 inputs.
  A GraphNet network with ops NB201 lacks (separable, dilated, MBConv, bottleneck convolutions) is predicted from
  its layers' MACs and kernels by the same table — an extrapolation: check a generated network on the device.

The fitted tables are plain JSON (:meth:`to_json`), so a run directory stores and reloads them safely.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..space.network import task_network
from .devices import DEVICES, ENERGY_DEVICES, HW_DEVICES, HWNASBench
from .op_table import OP_TABLE_FEATURES
from .predictors import NETWORK_LUT_COLUMNS, LookupTable, network_features

QUANTITIES = {"latency_ms": "latency", "energy_mj": "energy"}
"""Budget units of hardware cost and the HW-NAS-Bench quantity behind each."""


@dataclass
class HardwareCost:
    """``coefficients[unit]``: the lookup table of ``unit`` (``latency_ms``, ``energy_mj``) on ``device``, over
    :func:`network_features`; ``fitted_on`` says what it was fitted on (for the record). ``margin[unit]``: the
    calibrated safety margin — the 95th percentile of the table's cross-validated under-prediction ``y / ŷ − 1`` on
    its own fitting data — so that a budget is checked on ``ŷ · (1 + margin)``, a value the network stays under in
    about 95 % of cases (:meth:`__call__` returns both: ``latency_ms`` is the guarded value budgets check,
    ``latency_ms_estimate`` the table's point estimate)."""

    device: str
    coefficients: dict[str, list[float]]
    fitted_on: dict = field(default_factory=dict)
    features: str = "network"  # or "op_table" (the host): what the coefficients multiply
    margin: dict[str, float] = field(default_factory=dict)
    op_table: object = field(default=None, repr=False, compare=False)  # an OpLatencyTable, attached when used

    def __post_init__(self):
        if self.device not in DEVICES:
            raise ValueError(f"device: {self.device!r}; choose one of {DEVICES}")
        unknown = set(self.coefficients) - set(QUANTITIES)
        if unknown:
            raise ValueError(f"coefficients: unknown unit(s) {sorted(unknown)}; known: {sorted(QUANTITIES)}")
        width = {"network": NETWORK_LUT_COLUMNS, "op_table": len(OP_TABLE_FEATURES)}.get(self.features)
        if width is None:
            raise ValueError(f"features: {self.features!r}; expected network or op_table")
        wrong = {unit: len(c) for unit, c in self.coefficients.items() if len(c) != width}
        if wrong:
            raise ValueError(f"{self.device}: cost tables of {wrong} entries; this version's {self.features} features "
                             f"have {width} — delete the stored table (<workdir>/hw/) to refit it")

    @property
    def units(self) -> tuple[str, ...]:
        return tuple(self.coefficients)

    def predict_features(self, features: np.ndarray) -> dict[str, float]:
        out = {}
        for unit, c in self.coefficients.items():
            estimate = float(np.dot(features, c))
            out[unit] = estimate * (1.0 + self.margin.get(unit, 0.0))
            out[f"{unit}_estimate"] = estimate
        return out

    def __call__(self, model: torch.nn.Module, input_shape: tuple[int, ...]) -> dict[str, float]:
        """Predicted ``{unit: value}`` of ``model`` on one sample of ``input_shape`` (batch 1)."""
        if self.features == "op_table":
            if self.op_table is None:
                raise ValueError("a host cost table needs its op table: load it with hardware_cost_for(...)")
            return self.predict_features(self.op_table.features(model, input_shape))
        return self.predict_features(network_features(model, input_shape))

    # ---- fitting ---------------------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, device: str, features: np.ndarray, values: dict[str, np.ndarray], fitted_on: dict,
            kind: str = "network") -> HardwareCost:
        coefficients, margin = {}, {}
        for unit, y in values.items():
            ok = np.isfinite(y) & (y > 0)
            if ok.sum() < 3:
                raise ValueError(f"{device}: {ok.sum()} usable measurements of {unit}; need at least 3")
            coefficients[unit] = LookupTable().fit(features[ok], y[ok]).coef.tolist()
            margin[unit] = calibrated_margin(features[ok], y[ok])
        return cls(device, coefficients, fitted_on, kind, margin)

    @classmethod
    def from_hw_nas_bench(cls, device: str, cells: int = 1000, seed: int = 0, table: HWNASBench | None = None
                          ) -> HardwareCost:
        """Fit ``device``'s tables on ``cells`` NB201 cells drawn (seeded) from HW-NAS-Bench (see module docstring)."""
        from ..space.arch import Arch
        from ..space.nb201 import cell_from_nb201
        from ..space.network import build_network

        if device not in HW_DEVICES:
            raise ValueError(f"device: {device!r} is not a HW-NAS-Bench platform ({HW_DEVICES}); for this machine "
                             "use HardwareCost.for_host")
        table = table or HWNASBench()
        units = {"latency_ms": table.values(device, "latency")}
        if device in ENERGY_DEVICES:
            units["energy_mj"] = table.values(device, "energy")
        usable = [i for i in table.measured(device) if _reachable(table.strings[i])]
        rows = sorted(random.Random(seed).sample(usable, min(cells, len(usable))))
        feats = []
        for i in rows:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = build_network(Arch.zc_probe(cell_from_nb201(table.strings[i])), 3, 10)
            feats.append(network_features(model, (3, 32, 32)))
        return cls.fit(device, np.stack(feats), {u: v[rows] for u, v in units.items()},
                       {"source": "HW-NAS-Bench", "table": table.path.name, "cells": len(rows), "seed": seed})

    @classmethod
    def for_host(cls, task, archive, runtime: str = "eager", threads: int = 1, measurements: int = 30,
                 seed: int = 0, progress: bool = True) -> HardwareCost:
        """Fit the host's table on ``measurements`` random architectures of ``task`` measured here, over their op-table
        features (both stored in ``archive`` under this machine's fingerprint and reused: a second call measures
        nothing)."""
        from tqdm.auto import tqdm

        from .measure import host_fingerprint, measure_arch
        from .op_table import OpLatencyTable

        table = OpLatencyTable(archive, runtime, threads)
        archs = random_archs(task, measurements, seed)
        feats, latency = [], []
        for arch in tqdm(archs, desc="host latency", unit="arch", disable=not progress):
            m = measure_arch(arch, task, runtime=runtime, threads=threads, archive=archive)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                feats.append(table.features(task_network(task, arch), task.input_shape))
            latency.append(m.ms)
        cost = cls.fit("host", np.stack(feats), {"latency_ms": np.array(latency)},
                       {"source": "host", "fingerprint": host_fingerprint(runtime, threads).to_json(),
                        "task": task.name, "archs": len(archs), "seed": seed}, "op_table")
        cost.op_table = table
        return cost

    # ---- storage ---------------------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"device": self.device, "features": self.features, "coefficients": self.coefficients,
                "margin": self.margin, "fitted_on": self.fitted_on}

    @classmethod
    def from_json(cls, spec: dict) -> HardwareCost:
        return cls(spec["device"], {k: list(map(float, v)) for k, v in spec["coefficients"].items()},
                   spec.get("fitted_on", {}), spec.get("features", "network"),
                   {k: float(v) for k, v in spec.get("margin", {}).items()})

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> HardwareCost:
        return cls.from_json(json.loads(Path(path).read_text()))


def calibrated_margin(features: np.ndarray, y: np.ndarray, quantile: float = 0.95, folds: int = 10) -> float:
    """The ``quantile`` of the lookup table's cross-validated under-prediction ``y / ŷ − 1`` (leave-one-out up to 20
    rows, else ``folds`` folds), at least 0: the relative margin that keeps a budget check conservative."""
    n = len(y)
    k = n if n <= 20 else folds
    ratios = []
    for i in range(k):
        test = np.arange(i, n, k)
        train = np.setdiff1d(np.arange(n), test)
        if len(train) < 2:
            continue
        p = LookupTable().fit(features[train], y[train]).predict(features[test])
        ratios.extend(y[test] / np.maximum(p, 1e-9) - 1.0)
    return max(0.0, float(np.quantile(ratios, quantile))) if ratios else 0.0


def _reachable(arch_str: str) -> bool:
    from ..space.nb201 import cell_from_nb201

    try:
        cell_from_nb201(arch_str)
    except ValueError:
        return False
    return True


def random_archs(task, n: int, seed: int = 0) -> list:
    """``n`` random GraphNet architectures for ``task`` (seeded): 2–6 stages of random cells, channels 8–128,
    stride 2 where the task allows — the host calibration set and the host predictor study's networks."""
    from ..space.arch import Arch, Stage
    from ..space.cell import Cell

    rng = random.Random(seed)
    out = []
    while len(out) < n:
        stages, strided = [], 0
        for _ in range(rng.randint(2, 6)):
            stride = 2 if strided < task.max_downsamplings and rng.random() < 0.4 else 1
            strided += stride == 2
            stages.append(Stage(Cell.random(rng=rng), rng.choice((8, 16, 32, 64, 128)), stride, rng.randint(1, 3)))
        if sum(s.repeats for s in stages) <= 20:
            out.append(Arch(stages=tuple(stages), stem_channels=rng.choice((8, 16, 32)),
                            stem_stride=task.stem_stride, se=task.se))
    return out


def hardware_cost_for(device: str, task, workdir: str | Path, archive=None, runtime: str = "eager",
                      threads: int = 1, progress: bool = True) -> HardwareCost:
    """``device``'s hardware cost for ``task``, stored in ``<workdir>/hw/`` and reused: ``host_<task>_<fingerprint
    id>.json`` (fitted on this machine's measurements, stored in ``archive``, which must stay open while the cost is
    used: layers not yet timed are timed and stored) or ``<device>.json`` (HW-NAS-Bench)."""
    from .measure import host_fingerprint

    hw_dir = Path(workdir) / "hw"
    if device == "host":
        if archive is None:
            raise ValueError("a host latency budget measures networks here: give the run's archive")
        path = hw_dir / f"host_{task.name}_{host_fingerprint(runtime, threads).id}.json"
    else:
        path = hw_dir / f"{device}.json"
    if path.is_file():
        cost = HardwareCost.load(path)
    elif device == "host":
        cost = HardwareCost.for_host(task, archive, runtime, threads, progress=progress)
        cost.save(path)
    else:
        cost = HardwareCost.from_hw_nas_bench(device, cells=300)
        cost.save(path)
    if cost.features == "op_table" and cost.op_table is None:
        from .op_table import OpLatencyTable

        cost.op_table = OpLatencyTable(archive, runtime, threads)  # layers not yet timed are timed when met
    return cost
