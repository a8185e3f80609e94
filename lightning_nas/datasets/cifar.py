"""CIFAR-10 and CIFAR-100 from the official "python version" batches, read without running code: the batches are
pickles and only go through :func:`lightning_nas.datasets.files.read_pickle` (numpy arrays and builtin containers,
nothing else), never ``pickle.load`` (which torchvision's ``CIFAR10``/``CIFAR100`` call). The data modules
(:mod:`datamodules.cifar`) and the zc stage's ``cifar10`` probe (:mod:`lightning_nas.zc.vector`) both read here."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .files import read_pickle, require_keys, require_shape


@dataclass(frozen=True)
class CIFARRelease:
    """One official release: its folder inside ``data_dir``, batch files, label key, archive and statistics."""

    name: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    url: str
    md5: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def files(self) -> tuple[str, ...]:
        return self.train_files + self.test_files


CIFAR_RELEASES = {
    10: CIFARRelease("CIFAR-10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                     "labels", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                     "c58f30108f718f92721af3b95e74349a", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    100: CIFARRelease("CIFAR-100", "cifar-100-python", ("train",), ("test",), "fine_labels",
                      "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
                      (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
def read_cifar_batch(path: Path, label_key: str, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N×3×32×32 uint8) and labels (N, int64) of one batch file; ``ValueError`` naming it if malformed.

    Python-2 batches unpickle with ``str`` keys, Python-3 ones with ``bytes`` keys; both are accepted."""
    try:
        content = read_pickle(path)
    except pickle.UnpicklingError as e:
        if "refusing" in str(e):  # a global other than numpy's: the file would run code
            raise
        raise ValueError(f"{path}: not a CIFAR python-version batch ({e})") from e
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise ValueError(f"{path}: not a CIFAR python-version batch ({type(e).__name__}: {e})") from e
    if hasattr(content, "items"):
        content = {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in content.items()}
    require_keys(content, ("data", label_key), path)
    data = require_shape(content["data"], (None, 3072), path, "data")
    if data.dtype != np.uint8:
        raise ValueError(f"{path}: data should be uint8 pixels, found {data.dtype}")
    if len(data) == 0:
        raise ValueError(f"{path}: holds no images")
    labels = require_shape(content[label_key], (len(data),), path, label_key)
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"{path}: {label_key} should be integers in [0, {num_classes}), found {labels.dtype} "
                         f"in [{labels.min()}, {labels.max()}]")
    images = torch.from_numpy(np.ascontiguousarray(data)).view(-1, 3, 32, 32)
    return images, torch.from_numpy(labels.astype(np.int64))


def read_cifar_batches(folder: Path, names: tuple[str, ...], label_key: str,
                       num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The images and labels of the batch files ``names`` in ``folder``, concatenated in that order, each read with
    :func:`read_cifar_batch` (never ``pickle.load``). The one CIFAR reader of the package: the data modules and the
    zc stage's ``cifar10`` probe (:mod:`lightning_nas.zc.vector`) both read through it."""
    batches = [read_cifar_batch(Path(folder) / name, label_key, num_classes) for name in names]
    return torch.cat([images for images, _ in batches]), torch.cat([labels for _, labels in batches])
