"""The eight NAS-Bench-360 tasks (Tu et al. 2022) as one LightningDataModule reading the published files; the tasks'
shapes, losses and metrics are :mod:`lightning_nas.tasks`."""

from lightning_nas.datasets.files import ArrayUnpickler
from lightning_nas.tasks import NB360_TASKS, NB360Task

from .datamodule import NB360DataModule
from .tasks import READERS

__all__ = ["NB360_TASKS", "READERS", "ArrayUnpickler", "NB360DataModule", "NB360Task"]
