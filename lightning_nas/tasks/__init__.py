"""What a task asks of a model, shared by the models and the data: NAS-Bench-360's shapes, losses and metrics
(:mod:`.nb360`, :mod:`.objectives`). Nothing here reads data: :mod:`datamodules.nb360` reads each task's files."""

from .nb360 import NB360_TASKS, NB360Task
from .objectives import (
    COSMIC_IGNORE,
    ContactDistanceMAE,
    FalseNegativeRate,
    FocalLoss,
    MaskedBCEWithLogitsLoss,
    MultilabelAUROCOfFloatTargets,
    OneMinusPixelAUROC,
    RelativeL2Error,
    RelativeL2Loss,
)

__all__ = ["COSMIC_IGNORE", "NB360_TASKS", "ContactDistanceMAE", "FalseNegativeRate", "FocalLoss",
           "MaskedBCEWithLogitsLoss", "MultilabelAUROCOfFloatTargets", "NB360Task", "OneMinusPixelAUROC",
           "RelativeL2Error", "RelativeL2Loss"]
