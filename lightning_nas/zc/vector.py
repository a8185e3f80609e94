"""The probe batch and the ZC vector z(x) = [NASWOT, SNIP-SSNR, #params, FLOPs] of α_x (paper Eq. 1–2).

A :class:`Probe` is one fixed batch (64 images, 3×32×32, with labels) recorded with the run, from one of three
sources: ``digits`` (scikit-learn's bundled digits, upsampled 8→32 and replicated to 3 channels: real images, no
download — the tiny default), ``cifar10`` (CIFAR-10 training images from ``data_dir``, the paper's choice) or
``gaussian`` (N(0, 1) inputs, random labels). Real images are augmented as in the authors' setting: random crop 32
with padding 4, horizontal flip (CIFAR-10 only — a mirrored digit is another glyph), per-channel normalisation.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..space import Arch, Cell, build_network
from .proxies import evaluate_proxies

PROBE_SOURCES = ("digits", "cifar10", "gaussian")
ZC_NAMES = ("naswot", "snip_ssnr", "params", "flops")
"""The four components of z(x), in order."""
SEARCH_PROXY = "tcet"
"""T-CET (SNIP, log1p) is computed alongside z(x): it drives HL-Evo and final selection."""

_CIFAR_MEAN, _CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True, eq=False)
class Probe:
    """One fixed batch: inputs ``x`` (N×3×32×32), labels ``y`` and where they came from."""

    x: torch.Tensor
    y: torch.Tensor
    source: str
    seed: int
    num_classes: int = 10

    @property
    def id(self) -> str:
        """``<source>-s<seed>-b<batch>-<digest of the tensors>``: equal ids mean bit-identical batches."""
        digest = hashlib.sha256(self.x.numpy().tobytes() + self.y.numpy().tobytes()).hexdigest()[:10]
        return f"{self.source}-s{self.seed}-b{len(self.y)}-{digest}"

    @classmethod
    def from_archive(cls, archive, probe_id: str | None = None) -> Probe:
        """The probe batch stored in an :class:`~lightning_nas.archive.Archive` (its only one unless ``probe_id``),
        checked to reproduce its id."""
        probe_id = archive.resolve_probe(probe_id)
        x, y, info = archive.get_probe(probe_id)
        probe = cls(x, y, info["source"], info["seed"])
        if probe.id != probe_id:
            raise ValueError(f"{archive.path}: the stored probe batch does not reproduce its id {probe_id!r}")
        return probe

    @classmethod
    def from_source(
        cls, source: str = "digits", seed: int = 0, batch_size: int = 64, data_dir: str | Path | None = None
    ) -> Probe:
        if source not in PROBE_SOURCES:
            raise ValueError(f"probe.source: {source!r}; choose from {PROBE_SOURCES}")
        if batch_size < 2:
            raise ValueError(f"probe.batch_size: {batch_size}; NASWOT needs at least 2 samples")
        gen = torch.Generator().manual_seed(seed)
        if source == "gaussian":
            x = torch.randn(batch_size, 3, 32, 32, generator=gen)
            y = torch.randint(0, 10, (batch_size,), generator=gen)
        elif source == "digits":
            x, y = _digits_batch(batch_size, gen)
        else:
            x, y = _cifar10_batch(batch_size, gen, data_dir)
        return cls(x.contiguous(), y.long().contiguous(), source, seed)


def _crop_flip(images: torch.Tensor, gen: torch.Generator, flip: bool) -> torch.Tensor:
    padded = F.pad(images, (4, 4, 4, 4))
    out = torch.empty_like(images)
    offsets = torch.randint(0, 9, (len(images), 2), generator=gen)
    flips = torch.rand(len(images), generator=gen) < 0.5
    for i, (dy, dx) in enumerate(offsets.tolist()):
        crop = padded[i, :, dy : dy + 32, dx : dx + 32]
        out[i] = crop.flip(-1) if flip and flips[i] else crop
    return out


def _digits_batch(batch_size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    data, labels = load_digits(return_X_y=True)
    index = torch.randperm(len(labels), generator=gen)[:batch_size]
    images = torch.tensor(data, dtype=torch.float32)[index].view(-1, 1, 8, 8) / 16.0
    images = F.interpolate(images, size=32, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    all_images = torch.tensor(data, dtype=torch.float32) / 16.0
    images = (images - all_images.mean()) / all_images.std()
    return _crop_flip(images, gen, flip=False), torch.tensor(labels)[index]


def _cifar10_batch(batch_size: int, gen: torch.Generator, data_dir) -> tuple[torch.Tensor, torch.Tensor]:
    if data_dir is None:
        raise ValueError("probe.data_dir: the cifar10 probe needs data_dir (the folder holding cifar-10-batches-py/)")
    images, labels = _cifar10_train(Path(data_dir))
    index = torch.randperm(len(labels), generator=gen)[:batch_size]
    images = images[index].float() / 255.0
    mean, std = torch.tensor(_CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(_CIFAR_STD).view(1, 3, 1, 1)
    images = (images - mean) / std
    return _crop_flip(images, gen, flip=True), labels[index]


def _cifar10_train(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The CIFAR-10 training images (N×3×32×32 uint8) and labels of the python-version batches under ``root``, read
    with the one CIFAR reader (:func:`lightning_nas.datasets.cifar.read_cifar_batches`): the batches are pickles,
    unpickled with numpy arrays and builtin containers only, so a file that would run code is refused
    (``pickle.UnpicklingError`` naming it) and nothing in it runs. The five training batches must be there; their
    md5 is not checked, so a regenerated copy loads too."""
    from ..datasets.cifar import CIFAR_RELEASES, read_cifar_batches

    release = CIFAR_RELEASES[10]
    folder = root / release.folder
    missing = [name for name in release.train_files if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"probe.data_dir: CIFAR-10 not found at {folder} (missing: {', '.join(missing)}). Put the python version "
            "of CIFAR-10 there (data_batch_1..5 from cifar-10-python.tar.gz); nothing is downloaded."
        )
    return read_cifar_batches(folder, release.train_files, release.label_key, 10)


def probe_network(cell: Cell, probe: Probe) -> torch.nn.Module:
    """α_x for ``cell``, its weights initialised from the probe's seed (the same network in every process)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(probe.seed)
        return build_network(Arch.zc_probe(cell), in_channels=probe.x.shape[1], num_classes=probe.num_classes)


def cell_scores(cell: Cell, probe: Probe) -> tuple[dict[str, float], dict[str, str], float]:
    """``(values, problems, seconds)``: z(x) plus T-CET of α_x on the probe, with the reasons for any value that hit
    a numerical dead end."""
    start = time.perf_counter()
    model = probe_network(cell, probe).to(probe.x.device)
    values, problems = evaluate_proxies(model, probe.x, probe.y, [*ZC_NAMES, SEARCH_PROXY])
    return values, problems, time.perf_counter() - start


def zc_vector(cell: Cell, probe: Probe) -> dict[str, float]:
    """z(x) of Eq. 1 (``naswot``, ``snip_ssnr``, ``params``, ``flops``) and ``tcet`` for ``cell`` on ``probe``.
    FLOPs are 2 × conv/linear MACs of one sample (see :func:`lightning_nas.space.count_cost`)."""
    return cell_scores(cell, probe)[0]


@dataclass
class ZCNormaliser:
    """Normalised z: log for params/FLOPs, then per-dimension standardisation fitted once on the labelled set."""

    names: tuple[str, ...]
    log: tuple[bool, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    LOG_DIMS = ("params", "macs", "flops")

    @classmethod
    def fit(cls, rows: list[dict[str, float]], names: tuple[str, ...] = ZC_NAMES) -> ZCNormaliser:
        if len(rows) < 2:
            raise ValueError(f"normaliser: needs at least 2 labelled cells, got {len(rows)}")
        log = tuple(n in cls.LOG_DIMS for n in names)
        data = torch.tensor([[row[n] for n in names] for row in rows], dtype=torch.float64)
        data = torch.where(torch.tensor(log), torch.log(data.clamp_min(1e-12)), data)
        std = data.std(0)
        std = torch.where(std > 0, std, torch.ones_like(std))
        return cls(tuple(names), log, tuple(data.mean(0).tolist()), tuple(std.tolist()))

    def transform(self, rows: list[dict[str, float]]) -> torch.Tensor:
        """N×P tensor of normalised vectors (float32)."""
        data = torch.tensor([[row[n] for n in self.names] for row in rows], dtype=torch.float64)
        data = torch.where(torch.tensor(self.log), torch.log(data.clamp_min(1e-12)), data)
        return ((data - torch.tensor(self.mean)) / torch.tensor(self.std)).float()

    def to_dict(self) -> dict:
        return {"names": list(self.names), "log": list(self.log), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> ZCNormaliser:
        n = len(d["names"])
        if not all(len(d[k]) == n for k in ("log", "mean", "std")) or not all(math.isfinite(v) for v in d["mean"]):
            raise ValueError("normaliser: malformed (names, log, mean and std must have equal length and be finite)")
        return cls(tuple(d["names"]), tuple(map(bool, d["log"])), tuple(d["mean"]), tuple(d["std"]))
