"""HW-NAS-Bench (Li et al., ICLR 2021): measured latency and energy of every NAS-Bench-201 cell on six platforms,
shipped in ``data/hw_nas_bench/`` (README there: source, licence, units)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

HW_DATA = Path(__file__).resolve().parents[2] / "data" / "hw_nas_bench"
"""The HW-NAS-Bench table shipped with the project (CIFAR-10 inputs)."""

HW_DEVICES = ("edgegpu", "raspi4", "edgetpu", "pixel3", "eyeriss", "fpga")
"""The platforms, named as the table's columns without ``_latency``/``_energy``."""
ENERGY_DEVICES = ("edgegpu", "eyeriss", "fpga")
"""The platforms with measured energy (mJ)."""
DEVICES = ("host", *HW_DEVICES)
"""Every device a budget may name: ``host`` (this machine, measured) and the HW-NAS-Bench platforms (predicted)."""
QUANTITY_UNITS = {"latency": "ms", "energy": "mJ"}


def metric_column(device: str, quantity: str = "latency") -> str:
    """The table column of ``device``'s ``quantity`` (``latency`` in ms or ``energy`` in mJ)."""
    if device not in HW_DEVICES:
        raise ValueError(f"device: {device!r} is not a HW-NAS-Bench platform; choose one of {HW_DEVICES}")
    if quantity not in QUANTITY_UNITS:
        raise ValueError(f"quantity: {quantity!r}; choose latency or energy")
    if quantity == "energy" and device not in ENERGY_DEVICES:
        raise ValueError(f"device {device!r} has no energy measurements; those that do: {ENERGY_DEVICES}")
    return f"{device}_{quantity}"


class HWNASBench:
    """The table as arrays: :attr:`strings` (NB201 arch strings, row order of the file) and one float array per
    column (:meth:`values`), ``nan`` where the platform has no measurement (HW-NAS-Bench writes −1)."""

    def __init__(self, path: str | Path = HW_DATA / "nb201_cifar10.csv"):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no HW-NAS-Bench table; the project ships data/hw_nas_bench/"
                                    "nb201_cifar10.csv (see its README) — restore it from the repository")
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            columns = [c for c in reader.fieldnames or [] if c != "ArchitectureString"]
            if "ArchitectureString" not in (reader.fieldnames or []) or not columns:
                raise ValueError(f"{path}: expected an ArchitectureString column and measurement columns")
            rows = list(reader)
        self.path = path
        self.strings = [r["ArchitectureString"] for r in rows]
        self._index = {s: i for i, s in enumerate(self.strings)}
        self._columns = {}
        for c in columns:
            v = np.array([float(r[c]) for r in rows])
            v[v <= 0] = np.nan
            self._columns[c] = v

    def __len__(self) -> int:
        return len(self.strings)

    def values(self, device: str, quantity: str = "latency") -> np.ndarray:
        """All cells' ``quantity`` on ``device`` (``nan``: not measured), in :attr:`strings` order."""
        return self._columns[metric_column(device, quantity)]

    def lookup(self, arch_str: str, device: str, quantity: str = "latency") -> float:
        """One cell's measured value (``nan`` if the platform has none)."""
        try:
            i = self._index[arch_str]
        except KeyError:
            raise KeyError(f"{arch_str!r} is not an NB201 arch string of {self.path.name}") from None
        return float(self.values(device, quantity)[i])

    def measured(self, device: str, quantity: str = "latency") -> np.ndarray:
        """Indices of the cells with a measurement on ``device``."""
        return np.flatnonzero(~np.isnan(self.values(device, quantity)))


def within(prediction: np.ndarray, truth: np.ndarray, tolerance: float = 0.10) -> float:
    """Share of predictions within ±``tolerance`` (relative) of the measured values."""
    prediction, truth = np.asarray(prediction, float), np.asarray(truth, float)
    return float(np.mean(np.abs(prediction - truth) <= tolerance * np.abs(truth))) if len(truth) else math.nan
