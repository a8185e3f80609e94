"""A ModelCheckpoint whose ``last.ckpt`` is always the latest epoch, so ``--ckpt_path last`` resumes a killed run
where it stopped."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class ResumableCheckpoint(ModelCheckpoint):
    """Lightning's :class:`~lightning.pytorch.callbacks.ModelCheckpoint` (best-k by ``monitor``), except that with
    ``save_last`` the ``last.ckpt`` is refreshed after *every* validation. Lightning 2.6 refreshes it only when a
    top-k file was written, so after epochs without improvement ``last.ckpt`` lags behind and a resumed run repeats
    those epochs."""

    def _refresh_last(self, trainer: L.Trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):  # nothing saved at this step yet
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):  # Lightning's default when validating every epoch
            self._refresh_last(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)
