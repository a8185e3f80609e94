"""One LightningDataModule for the eight NAS-Bench-360 tasks, read from their published files."""

from __future__ import annotations

from pathlib import Path

from lightning_nas.tasks import NB360_TASKS

from ..splits import SplitDataModule
from .tasks import READERS

PUBLISHED_AT = "NAS-Bench-360 (https://nb360.ml.cmu.edu, the data the NB360 and DASH loaders download)"


class NB360DataModule(SplitDataModule):
    """The ``train``/``val``/``test`` splits of one NAS-Bench-360 task (see :mod:`datamodules.nb360.tasks` for the
    files each task reads and how); ``self.task`` holds its shapes, loss and metric (:mod:`lightning_nas.tasks`).

    Args:
        task: a key of :data:`NB360_TASKS`.
        data_dir: the folder holding the task's published files (for PSICOV, the unpacked ``protein/`` folder).
        batch_size: samples per batch.
        num_workers: DataLoader workers.
        val_fraction: share of the training samples held out where the task publishes no validation split.
        seed: seed of that hold-out (and of ECG's record split).
    """

    def __init__(self, task: str, data_dir: str, batch_size: int = 32, num_workers: int = 0,
                 val_fraction: float = 0.1, seed: int = 0):
        super().__init__()
        if task not in NB360_TASKS:
            raise ValueError(f"unknown NAS-Bench-360 task {task!r}; the tasks are {', '.join(NB360_TASKS)}")
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction: {val_fraction}; it must lie in (0, 1)")
        self.save_hyperparameters()
        self.task = NB360_TASKS[task]

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        folder = Path(self.hparams.data_dir)
        missing = [name for name in self.task.files if not (folder / name).exists()]
        if missing:
            raise FileNotFoundError(
                f"NAS-Bench-360 task {self.task.name!r}: {', '.join(missing)} not found in {folder}. The task reads "
                f"{', '.join(self.task.files)} from data_dir; download them from {PUBLISHED_AT} and put them in "
                f"{folder.resolve()}"
            )
        self.splits = READERS[self.task.name](folder, self.hparams.val_fraction, self.hparams.seed)
