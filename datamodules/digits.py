"""scikit-learn's bundled ``digits`` (1,797 8×8 grey images, 10 classes): real data that needs no download."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import TensorDataset

from .splits import SplitDataModule


class DigitsDataModule(SplitDataModule):
    """Stratified, seeded train/val/test split of ``digits``, standardised with the training statistics.

    Args:
        batch_size: samples per batch.
        image_size: side of the images given to the network; 8 is native, larger sizes are bilinear upsampling
            (e.g. 32 for the ZC probe network).
        val_fraction: share of all images held out for validation.
        test_fraction: share of all images held out for testing.
        seed: seed of the split (the split is independent of the training seed).
        num_workers: DataLoader workers (the data set is in memory; 0 is fastest).
    """

    task_name = "digits"
    num_classes = 10
    in_channels = 1

    def __init__(
        self,
        batch_size: int = 64,
        image_size: int = 8,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__()
        if image_size < 8:
            raise ValueError(f"image_size: {image_size}; digits are 8×8, use 8 or more")
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError("val_fraction and test_fraction must be in (0, 1) and sum to less than 1")
        self.save_hyperparameters()

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        hp = self.hparams
        x, y = load_digits(return_X_y=True)
        idx = torch.arange(len(y))
        rest, test = train_test_split(idx.numpy(), test_size=hp.test_fraction, stratify=y, random_state=hp.seed)
        train, val = train_test_split(
            rest, test_size=hp.val_fraction / (1 - hp.test_fraction), stratify=y[rest], random_state=hp.seed
        )
        images = torch.tensor(x, dtype=torch.float32).view(-1, 1, 8, 8)
        if hp.image_size != 8:
            images = F.interpolate(images, size=hp.image_size, mode="bilinear", align_corners=False)
        mean, std = images[train].mean(), images[train].std()
        images = (images - mean) / std
        labels = torch.tensor(y, dtype=torch.long)
        for name, ids in (("train", train), ("val", val), ("test", test)):
            ids = torch.as_tensor(ids)
            self.splits[name] = TensorDataset(images[ids], labels[ids])
