"""ImageNet-1k (or any data set in the same layout) from ``train/`` and ``val/`` class folders, via torchvision's
``ImageFolder``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from .splits import Augment, SplitDataModule, check_image_settings

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ZENNAS_ERASE_P = 0.5
LAYOUT = (
    "<data_dir>/train/<wnid>/*.JPEG and <data_dir>/val/<wnid>/*.JPEG (one folder per class, the same classes in "
    "both; the official validation images come in one flat folder and must first be sorted into class folders, "
    "e.g. with the widely used valprep.sh)"
)


def imagenet_transforms(augment: Augment, train: bool, image_size: int = 224) -> v2.Compose:
    """Per-image transforms of PIL images. Training: ``standard`` = RandomResizedCrop + flip + normalise; ``zennas`` =
    the same + AutoAugment (ImageNet policy) before normalising and random erasing after; ``none`` = the evaluation
    transform. Evaluation: resize the short side to ``int(image_size / 0.875)``, centre crop, normalise."""
    if train and augment != "none":
        steps = [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
        if augment == "zennas":
            steps.append(v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET))
    else:
        steps = [v2.Resize(int(image_size / 0.875), antialias=True), v2.CenterCrop(image_size)]
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
              v2.Normalize(list(IMAGENET_MEAN), list(IMAGENET_STD))]
    if train and augment == "zennas":
        steps.append(v2.RandomErasing(p=ZENNAS_ERASE_P))
    return v2.Compose(steps)


class TransformedSubset(Dataset):
    """``(transform(image), label)`` for the ``indices`` (all when ``None``) of a dataset of (PIL image, label)."""

    def __init__(self, dataset: Dataset, transform, indices: torch.Tensor | None = None):
        self.dataset, self.transform = dataset, transform
        self.indices = torch.arange(len(dataset)) if indices is None else indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        image, label = self.dataset[int(self.indices[i])]
        return self.transform(image), label


class ImageNetDataModule(SplitDataModule):
    """ImageNet from ``data_dir/train`` and ``data_dir/val`` class folders (see :data:`LAYOUT`); labels are the
    sorted class-folder names' indices, as ``ImageFolder`` gives them.

    Args:
        data_dir: folder holding ``train/`` and ``val/``.
        batch_size: samples per batch.
        num_workers: DataLoader workers (JPEG decoding is the bottleneck; use several).
        image_size: side of the crops given to the network.
        augment: training augmentation, ``standard``, ``zennas`` or ``none`` (see :func:`imagenet_transforms`).
        val_size: training images held out (seeded) for validation, with ``val/`` as the test set; 0 uses ``val/``
            for both validation and test.
        seed: seed of the hold-out.
    """

    task_name = "imagenet"

    in_channels = 3

    def __init__(
        self,
        data_dir: str,
        batch_size: int = 64,
        num_workers: int = 4,
        image_size: int = 224,
        augment: Augment = "standard",
        val_size: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        check_image_settings(augment, val_size, image_size, without_val="validate on val/")
        self.save_hyperparameters()
        self.classes: list[str] = []

    @property
    def num_classes(self) -> int:
        """Class count: that of the loaded data after ``setup``, else the class folders in ``data_dir/train``."""
        if self.classes:
            return len(self.classes)
        self._require_layout()
        return sum(1 for entry in (Path(self.hparams.data_dir) / "train").iterdir() if entry.is_dir())

    def _require_layout(self) -> None:
        root = Path(self.hparams.data_dir)
        missing = [name for name in ("train", "val") if not (root / name).is_dir()]
        if missing:
            raise FileNotFoundError(
                f"ImageNet not found: {', '.join(f'{name}/' for name in missing)} missing in data_dir "
                f"{root.resolve()}. Expected {LAYOUT}"
            )

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        hp = self.hparams
        self._require_layout()
        root = Path(hp.data_dir)
        train, val = ImageFolder(str(root / "train")), ImageFolder(str(root / "val"))
        if train.classes != val.classes:
            only_train = sorted(set(train.classes) - set(val.classes))
            only_val = sorted(set(val.classes) - set(train.classes))
            raise ValueError(
                f"ImageNet in {root.resolve()}: train/ has {len(train.classes)} classes, val/ {len(val.classes)}; only "
                f"in train/: {only_train[:5] or 'none'}{' …' * (len(only_train) > 5)}, only in val/: "
                f"{only_val[:5] or 'none'}{' …' * (len(only_val) > 5)}. Expected {LAYOUT}"
            )
        if hp.val_size >= len(train):
            raise ValueError(f"val_size: {hp.val_size}; train/ has {len(train)} images")
        self.classes = train.classes
        train_tf = imagenet_transforms(hp.augment, True, hp.image_size)
        eval_tf = imagenet_transforms(hp.augment, False, hp.image_size)
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(hp.seed))
        self.splits["train"] = TransformedSubset(train, train_tf, order[hp.val_size:] if hp.val_size else None)
        self.splits["test"] = TransformedSubset(val, eval_tf)
        self.splits["val"] = (TransformedSubset(train, eval_tf, order[: hp.val_size]) if hp.val_size
                              else self.splits["test"])
