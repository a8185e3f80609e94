"""The eight NAS-Bench-360 tasks (Tu et al. 2022) as one LightningDataModule reading the published files."""

from ..files import ArrayUnpickler
from .datamodule import NB360DataModule
from .objectives import (
                         COSMIC_IGNORE,
                         ContactDistanceMAE,
                         FalseNegativeRate,
                         FocalLoss,
                         MaskedBCEWithLogitsLoss,
                         MultilabelAUROCOfFloatTargets,
                         RelativeL2Error,
                         RelativeL2Loss,
)
from .tasks import NB360_TASKS, NB360Task

__all__ = ["COSMIC_IGNORE", "NB360_TASKS", "ArrayUnpickler", "ContactDistanceMAE", "FalseNegativeRate", "FocalLoss",
           "MaskedBCEWithLogitsLoss", "MultilabelAUROCOfFloatTargets", "NB360DataModule", "NB360Task",
           "RelativeL2Error", "RelativeL2Loss"]
