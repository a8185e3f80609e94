"""Hardware cost: host latency measured properly, HW-NAS-Bench's measured devices, and latency predictors."""

from .devices import DEVICES, ENERGY_DEVICES, HW_DATA, HW_DEVICES, HWNASBench, within
from .measure import DeviceFingerprint, LatencyMeasurement, host_fingerprint, measure_arch, measure_latency
from .predictors import (
                         Boosted,
                         LatencyPredictor,
                         LookupTable,
                         SourceTransfer,
                         fit_predictor,
                         nb201_features,
                         network_features,
)

__all__ = ["DEVICES", "ENERGY_DEVICES", "HW_DATA", "HW_DEVICES", "HWNASBench", "within", "DeviceFingerprint",
           "LatencyMeasurement", "host_fingerprint", "measure_arch", "measure_latency", "Boosted",
           "LatencyPredictor", "LookupTable", "SourceTransfer", "fit_predictor", "nb201_features",
           "network_features"]
