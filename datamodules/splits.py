"""The part every data module of a fixed data set shares: named splits served by DataLoaders."""

from __future__ import annotations

from typing import Literal, get_args

import lightning as L
from torch.utils.data import DataLoader, Dataset

Augment = Literal["standard", "zennas", "none"]


def check_image_settings(augment: str, val_size: int, image_size: int, without_val: str) -> None:
    """The checks every image data module makes of its ``augment``, ``val_size`` (``without_val``: what 0 means)
    and ``image_size``."""
    if augment not in get_args(Augment):
        raise ValueError(f"augment: {augment!r}; use 'standard', 'zennas' or 'none'")
    if val_size < 0:
        raise ValueError(f"val_size: {val_size}; use 0 ({without_val}) or more")
    if image_size < 1:
        raise ValueError(f"image_size: {image_size}; it must be positive")


class SplitDataModule(L.LightningDataModule):
    """A data module whose ``setup`` fills ``self.splits`` with ``train``, ``val`` and ``test`` datasets; loaders use
    the subclass's ``batch_size`` and ``num_workers`` hyperparameters (the test split also serves ``predict``)."""

    def __init__(self):
        super().__init__()
        self.splits: dict[str, Dataset] = {}

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        workers = self.hparams.get("num_workers", 0)
        return DataLoader(self.splits[split], batch_size=self.hparams.batch_size, shuffle=shuffle,
                          num_workers=workers, persistent_workers=workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")
