"""CIFAR-10 and CIFAR-100 data modules over the official "python version" batches, read by
:mod:`lightning_nas.datasets.cifar` (never ``pickle.load``)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.datasets.utils import download_and_extract_archive
from torchvision.transforms import v2

from lightning_nas.datasets.cifar import CIFAR_RELEASES, read_cifar_batches

from .splits import Augment, SplitDataModule, check_image_settings

ZENNAS_ERASE_P = 0.5


def cifar_transforms(augment: Augment, train: bool, mean, std, image_size: int = 32) -> v2.Compose:
    """Per-image transforms of uint8 3×32×32 tensors. Training: ``standard`` = random crop (pad 4 at 32 px) + flip +
    normalise; ``zennas`` = ZenNAS's CIFAR scheme: crop + flip + AutoAugment (CIFAR-10 policy) + normalise +
    random erasing; ``none`` = normalise. Evaluation: normalise. Sizes other than 32 are bilinear resizes first."""
    steps = [v2.Resize(image_size, antialias=True)] if image_size != 32 else []
    if train and augment != "none":
        steps += [v2.RandomCrop(image_size, padding=max(1, round(image_size / 8))), v2.RandomHorizontalFlip()]
        if augment == "zennas":
            steps.append(v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if train and augment == "zennas":
        steps.append(v2.RandomErasing(p=ZENNAS_ERASE_P))
    return v2.Compose(steps)


class TransformedImages(Dataset):
    """``(transform(images[i]), labels[i])`` for the ``indices`` (all images when ``None``) of in-memory tensors."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform, indices: torch.Tensor | None = None):
        self.images, self.labels, self.transform = images, labels, transform
        self.indices = torch.arange(len(labels)) if indices is None else indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        j = self.indices[i]
        return self.transform(self.images[j]), self.labels[j]


class CIFARDataModule(SplitDataModule):
    """CIFAR-10/100 from ``data_dir``: a seeded validation hold-out of the 50,000 training images and the 10,000 test
    images, normalised with the data set's mean and std.

    ``data_dir`` holds ``cifar-10-batches-py/{data_batch_1..5, test_batch}`` (CIFAR-10) or
    ``cifar-100-python/{train, test}`` (CIFAR-100, fine labels), as the official python-version archives unpack.

    Args:
        data_dir: folder holding (or receiving, with ``download``) the unpacked archive.
        num_classes: 10 or 100.
        download: fetch and unpack the official archive (md5-checked) when the files are missing.
        batch_size: samples per batch.
        num_workers: DataLoader workers.
        val_size: training images held out for validation (seeded); 0 validates on the test set.
        seed: seed of the hold-out (independent of the training seed).
        augment: training augmentation, ``standard``, ``zennas`` or ``none`` (see :func:`cifar_transforms`).
        image_size: side of the images given to the network (32 is native).
    """

    in_channels = 3

    def __init__(
        self,
        data_dir: str = "data",
        num_classes: int = 10,
        download: bool = False,
        batch_size: int = 64,
        num_workers: int = 0,
        val_size: int = 5000,
        seed: int = 0,
        augment: Augment = "standard",
        image_size: int = 32,
    ):
        super().__init__()
        if num_classes not in CIFAR_RELEASES:
            raise ValueError(f"num_classes: {num_classes}; CIFAR has 10 or 100")
        check_image_settings(augment, val_size, image_size, without_val="validate on the test set")
        self.save_hyperparameters()
        self.release = CIFAR_RELEASES[num_classes]

    @property
    def num_classes(self) -> int:
        return self.hparams.num_classes

    @property
    def task_name(self) -> str:
        return f"cifar{self.hparams.num_classes}"

    @property
    def folder(self) -> Path:
        return Path(self.hparams.data_dir) / self.release.folder

    def _missing(self) -> list[str]:
        return [name for name in self.release.files if not (self.folder / name).is_file()]

    def prepare_data(self) -> None:
        if self.hparams.download and self._missing():
            download_and_extract_archive(self.release.url, download_root=self.hparams.data_dir, md5=self.release.md5)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        hp, release = self.hparams, self.release
        self.prepare_data()  # a no-op under a Trainer, which has called it already
        missing = self._missing()
        if missing:
            data_dir = Path(hp.data_dir).resolve()
            raise FileNotFoundError(
                f"{release.name} not found: expected the folder {release.folder}/ with {', '.join(release.files)} "
                f"under data_dir {data_dir} (missing: {', '.join(f'{release.folder}/{m}' for m in missing)}). Set "
                f"download: true (on the command line --data.init_args.download true) to fetch them from "
                f"{release.url} where there is internet, or unpack that archive into data_dir yourself"
            )
        train_images, train_labels = self._read(release.train_files)
        test_images, test_labels = self._read(release.test_files)
        if hp.val_size >= len(train_labels):
            raise ValueError(f"val_size: {hp.val_size}; {release.name} has {len(train_labels)} training images")
        order = torch.randperm(len(train_labels), generator=torch.Generator().manual_seed(hp.seed))
        val_ids, train_ids = order[: hp.val_size], order[hp.val_size:]
        train_tf = cifar_transforms(hp.augment, True, release.mean, release.std, hp.image_size)
        eval_tf = cifar_transforms(hp.augment, False, release.mean, release.std, hp.image_size)
        self.splits["train"] = TransformedImages(train_images, train_labels, train_tf, train_ids)
        self.splits["test"] = TransformedImages(test_images, test_labels, eval_tf)
        self.splits["val"] = (TransformedImages(train_images, train_labels, eval_tf, val_ids) if hp.val_size
                              else self.splits["test"])

    def _read(self, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        return read_cifar_batches(self.folder, names, self.release.label_key, self.num_classes)
