"""The eight NAS-Bench-360 tasks' published files and how each is read (their shapes, losses and metrics:
:mod:`lightning_nas.tasks.nb360`).

Each reader takes the task's ``data_dir`` and returns the ``train``/``val``/``test`` datasets of ``(x, y)`` pairs.
Tasks with a published validation split use it; ECG uses its loader's record split; the others hold out a seeded
``val_fraction`` of the training samples (proteins for PSICOV, stamps for Cosmic). The layouts, as the DASH
(``src/data_loaders.py``) and NB360 loaders read them:

- spherical: ``s2_cifar100.gz``, a gzip pickle ``{"train": {"images": N×3×60×60, "labels": N}, "test": {…}}``,
  labels 0–99; used as stored.
- darcy_flow: ``piececonst_r421_N1024_smooth1.mat`` (train, first 1000) and ``…_smooth2.mat`` (test, first 100),
  keys ``coeff`` and ``sol`` (N×421×421), subsampled ``[::5, ::5]`` to 85×85. Input: (coeff, x grid, y grid), the
  coefficient normalised pointwise with the training mean and std (FNO's ``UnitGaussianNormalizer``, eps 1e-5), the
  grids ``linspace(0, 1, 85)`` along width and height. Target: ``sol`` in its own units; the loaders normalise
  training targets and decode predictions before the loss, which is the same objective.
- psicov: the unpacked ``protein/`` folder: ``deepcov.lst`` (training proteins) and ``psicov.lst`` (the 150 test
  proteins), one id first on each line; ``deepcov/features/<id>.pkl`` and ``psicov/features/<id>.pkl``, pickled
  dicts with ``seq`` (str, length L), ``ss`` 3×L, ``pssm`` L×22, ``sa`` L, ``entropy`` L, ``ccmpred``, ``freecon``,
  ``potential`` L×L; ``deepcov/distance/<id>-cb.npy`` and ``psicov/distance/<id>-cb.npy``, ``np.save`` of the tuple
  (L, sequence, Cβ distance map L×L). As PDNet does: the 57 channels are the 27 per-residue values along rows and
  along columns plus the 3 pair maps; distances below 1 become 1, the diagonal is its neighbours' mean; both are
  padded by 5 residues (features 0, distance 100). Train: random 128×128 crops, distances clipped at 16; val: the
  top-left 128×128 crop, clipped at 16; test: the whole map in 512×512, unclipped.
- cosmic: ``train_dirs.npy`` and ``test_dirs.npy``, arrays of paths (relative ones are read from ``data_dir``) to
  deepCR stamps: ``.npy`` arrays 2×H×W or 3×H×W of (image, cosmic-ray mask, ignore mask). Input: the image;
  target: the mask in {0, 1}, ignored pixels :data:`COSMIC_IGNORE`. deepCR's random sky augmentation is not applied.
- ninapro: ``ninapro_{train,val,test}.npy`` (N×16×52) and ``label_{train,val,test}.npy`` (N, 0–17).
- ecg: ``challenge2017.pkl``, a pickle ``{"data": records (1-D, any length), "label": "N"|"A"|"O"|"~"}``. Records are
  z-normalised, split 90/5/5 by record (sklearn ``train_test_split``, ``random_state=seed``: 0 is the loader's split),
  then cut into windows of 1000 (``range(0, len − 1000, stride)``) with the resnet1d ``slide_and_cut`` strides
  500, 500//6, 500//2, 500//20 for N, A, O, ~ (rarer classes overlap more), in every split.
- satellite: ``satellite_{train,test}.npy``, ``np.save`` of ``{"data": N×46, "label": N (1–24)}``; each series is
  z-normalised, labels shifted to 0–23.
- deepsea: ``deepsea_filtered.npz`` with ``x_{train,val,test}`` (N×1000×4 one-hot, transposed to N×4×1000) and
  ``y_{train,val,test}`` (N×36 binary labels).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset, Subset, TensorDataset

from lightning_nas.datasets.files import (
    read_mat,
    read_npy,
    read_npy_dict,
    read_npz,
    read_pickle,
    require_keys,
    require_shape,
)
from lightning_nas.tasks.objectives import COSMIC_IGNORE

Splits = dict[str, Dataset]


def _holdout(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded (train, val) indices of ``n`` samples, at least one in val."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, round(val_fraction * n))
    return order[n_val:], order[:n_val]


def _with_val(train: Dataset, val_fraction: float, seed: int) -> Splits:
    kept, held_out = _holdout(len(train), val_fraction, seed)
    return {"train": Subset(train, kept), "val": Subset(train, held_out)}


def _classification(x: np.ndarray, labels: np.ndarray, num_classes: int, path: Path) -> TensorDataset:
    """Float inputs with int64 labels in ``[0, num_classes)``, checked against ``path``."""
    labels = require_shape(labels, (len(x),), path, "the labels (one per sample)").astype(np.int64)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"{path}: labels should lie in 0–{num_classes - 1}, found {labels.min()}–{labels.max()}")
    return TensorDataset(torch.tensor(x, dtype=torch.float32), torch.from_numpy(labels))


def read_spherical(folder: Path, val_fraction: float, seed: int) -> Splits:
    path = folder / "s2_cifar100.gz"
    content = require_keys(read_pickle(path), ("train", "test"), path)
    sets = {}
    for split in ("train", "test"):
        part = require_keys(content[split], ("images", "labels"), path)
        images = require_shape(part["images"], (None, 3, 60, 60), path, f"{split} images")
        sets[split] = _classification(images, part["labels"], 100, path)
    return {**_with_val(sets["train"], val_fraction, seed), "test": sets["test"]}


def read_darcy_flow(folder: Path, val_fraction: float, seed: int) -> Splits:
    fields = {}
    for split, name, limit in (("train", "piececonst_r421_N1024_smooth1.mat", 1000),
                               ("test", "piececonst_r421_N1024_smooth2.mat", 100)):
        path = folder / name
        mat = read_mat(path, ("coeff", "sol"))
        fields[split] = [torch.tensor(require_shape(mat[key], (None, 421, 421), path, key)[:limit, ::5, ::5],
                                      dtype=torch.float32) for key in ("coeff", "sol")]
    (coeff, sol), (test_coeff, test_sol) = fields["train"], fields["test"]
    train, val = _holdout(len(coeff), val_fraction, seed)
    mean, std = coeff[train].mean(0), coeff[train].std(0)
    grid_x, grid_y = torch.meshgrid(torch.linspace(0, 1, 85), torch.linspace(0, 1, 85), indexing="xy")

    def inputs(c: torch.Tensor) -> torch.Tensor:
        return torch.stack([(c - mean) / (std + 1e-5), grid_x.expand_as(c), grid_y.expand_as(c)], dim=1)

    return {"train": TensorDataset(inputs(coeff[train]), sol[train, None]),
            "val": TensorDataset(inputs(coeff[val]), sol[val, None]),
            "test": TensorDataset(inputs(test_coeff), test_sol[:, None])}


def _pair_features(path: Path) -> np.ndarray:
    """PDNet's 57×L×L input of one protein (``get_feature``)."""
    features = require_keys(read_pickle(path), ("seq", "ss", "pssm", "sa", "entropy", "ccmpred", "freecon",
                                                "potential"), path)
    n = len(features["seq"])
    shapes = {"ss": (3, n), "pssm": (n, 22), "sa": (n,), "entropy": (n,), "ccmpred": (n, n), "freecon": (n, n),
              "potential": (n, n)}
    f = {key: require_shape(features[key], shape, path, key) for key, shape in shapes.items()}
    residues = np.concatenate([f["ss"], f["pssm"].T, f["sa"][None], f["entropy"][None]])  # 27×L
    x = np.empty((57, n, n), np.float32)
    x[0:54:2] = residues[:, None, :]  # x[c, i, j] = value of residue j
    x[1:54:2] = residues[:, :, None]  # … of residue i
    x[54:] = [f["ccmpred"], f["freecon"], f["potential"]]
    return x


def _distance_map(path: Path, n: int) -> np.ndarray:
    """PDNet's Cβ distance target of one protein (``get_map``)."""
    content = read_npy(path)
    if len(content) != 3:
        raise ValueError(f"{path}: expected the tuple (length, sequence, Cβ distance map), found {len(content)} items")
    y = require_shape(content[2], (n, n), path, "the Cβ distance map (L×L, L from the features)").astype(np.float32)
    y[y < 1] = 1
    inner = np.arange(1, n - 1)
    y[inner, inner] = (y[inner, inner - 1] + y[inner, inner + 1]) / 2
    y[0, 0], y[-1, -1] = y[0, 1], y[-1, -2]
    return y


class ProteinMaps(Dataset):
    """(57×S×S features, 1×S×S distances) of proteins, padded by 5 residues and cut to S×S like PDNet's generator:
    a random crop when ``random_crop``, else the top-left corner; distances clipped at ``clip`` unless ``None``."""

    PAD = 5

    def __init__(self, folder: Path, ids: list[str], size: int, random_crop: bool, clip: float | None):
        self.folder, self.ids, self.size, self.random_crop, self.clip = folder, ids, size, random_crop, clip

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        protein = self.ids[index]
        features = _pair_features(self.folder / "features" / f"{protein}.pkl")
        n = features.shape[-1]
        side, inner = max(n + 2 * self.PAD, self.size), slice(self.PAD, self.PAD + n)
        x = np.zeros((57, side, side), np.float32)
        y = np.full((side, side), 100.0, np.float32)
        x[:, inner, inner], y[inner, inner] = features, _distance_map(self.folder / "distance" / f"{protein}-cb.npy", n)
        row, col = torch.randint(0, side - self.size + 1, (2,)).tolist() if self.random_crop else (0, 0)
        crop = (slice(row, row + self.size), slice(col, col + self.size))
        y = y[crop] if self.clip is None else np.minimum(y[crop], self.clip)
        return torch.from_numpy(np.ascontiguousarray(x[:, crop[0], crop[1]])), torch.from_numpy(y[None].copy())


def _protein_ids(folder: Path, name: str) -> list[str]:
    """The ids of ``<name>.lst`` whose feature and distance files exist (a FileNotFoundError names any missing)."""
    ids = [line.split()[0] for line in (folder / f"{name}.lst").read_text().splitlines() if line.strip()]
    for protein in ids:
        for path in (folder / name / "features" / f"{protein}.pkl", folder / name / "distance" / f"{protein}-cb.npy"):
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: {folder / name}.lst lists {protein}, whose files are "
                                        f"{name}/features/<id>.pkl and {name}/distance/<id>-cb.npy")
    return ids


def read_psicov(folder: Path, val_fraction: float, seed: int) -> Splits:
    deepcov, psicov = _protein_ids(folder, "deepcov"), _protein_ids(folder, "psicov")
    train, val = _holdout(len(deepcov), val_fraction, seed)
    return {"train": ProteinMaps(folder / "deepcov", [deepcov[i] for i in train], 128, True, 16.0),
            "val": ProteinMaps(folder / "deepcov", [deepcov[i] for i in val], 128, False, 16.0),
            "test": ProteinMaps(folder / "psicov", psicov, 512, False, None)}


class CosmicStamps(Dataset):
    """(1×H×W image, 1×H×W target) of deepCR stamp files; the target is :data:`COSMIC_IGNORE` where ignored."""

    def __init__(self, paths: list[Path]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.paths[index]
        stamp = read_npy(path)
        if stamp.ndim != 3 or len(stamp) not in (2, 3):
            raise ValueError(f"{path}: a deepCR stamp should be 2×H×W or 3×H×W (image, mask[, ignore]), "
                             f"found {stamp.shape}")
        target = (stamp[1] > 0.5).astype(np.float32)
        if len(stamp) == 3:
            target[stamp[2] > 0.5] = COSMIC_IGNORE
        return torch.tensor(stamp[0][None], dtype=torch.float32), torch.from_numpy(target[None])


def _stamp_paths(folder: Path, name: str) -> list[Path]:
    entries = read_npy(folder / name).ravel()
    paths = [Path(e.decode() if isinstance(e, bytes) else str(e)) for e in entries]
    paths = [p if p.is_absolute() else folder / p for p in paths]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{folder / name} lists {len(missing)} stamp files that do not exist, e.g. "
                                f"{missing[0]}; relative paths are read from {folder} (rewrite the list if it "
                                "holds the paths of the machine it was made on)")
    return paths


def read_cosmic(folder: Path, val_fraction: float, seed: int) -> Splits:
    return {**_with_val(CosmicStamps(_stamp_paths(folder, "train_dirs.npy")), val_fraction, seed),
            "test": CosmicStamps(_stamp_paths(folder, "test_dirs.npy"))}


def read_ninapro(folder: Path, val_fraction: float, seed: int) -> Splits:
    splits = {}
    for split in ("train", "val", "test"):
        x_path, y_path = folder / f"ninapro_{split}.npy", folder / f"label_{split}.npy"
        windows = require_shape(read_npy(x_path), (None, 16, 52), x_path, "the EMG windows")
        splits[split] = _classification(windows[:, None], read_npy(y_path), 18, y_path)
    return splits


ECG_CLASSES = ("N", "A", "O", "~")  # normal, atrial fibrillation, other rhythm, noisy
ECG_STRIDES = (500, 500 // 6, 500 // 2, 500 // 20)


def _ecg_windows(records: list[np.ndarray], labels: np.ndarray) -> TensorDataset:
    windows, targets = [], []
    for record, label in zip(records, labels):
        record = np.asarray(record, np.float32)
        record = (record - record.mean()) / record.std()
        for start in range(0, len(record) - 1000, ECG_STRIDES[label]):
            windows.append(record[start : start + 1000])
            targets.append(label)
    return TensorDataset(torch.from_numpy(np.stack(windows)[:, None]), torch.tensor(targets))


def read_ecg(folder: Path, val_fraction: float, seed: int) -> Splits:
    path = folder / "challenge2017.pkl"
    content = require_keys(read_pickle(path), ("data", "label"), path)
    records, names = list(content["data"]), [str(name) for name in content["label"]]
    if len(records) != len(names) or not set(names) <= set(ECG_CLASSES):
        raise ValueError(f"{path}: expected one label in {ECG_CLASSES} per record, found {len(names)} labels "
                         f"({sorted(set(names))}) for {len(records)} records")
    labels = np.array([ECG_CLASSES.index(name) for name in names])
    train, rest = train_test_split(np.arange(len(labels)), test_size=0.1, random_state=seed)
    val, test = train_test_split(rest, test_size=0.5, random_state=seed)
    return {split: _ecg_windows([records[i] for i in ids], labels[ids])
            for split, ids in (("train", train), ("val", val), ("test", test))}


def read_satellite(folder: Path, val_fraction: float, seed: int) -> Splits:
    sets = {}
    for split in ("train", "test"):
        path = folder / f"satellite_{split}.npy"
        content = read_npy_dict(path, ("data", "label"))
        series = require_shape(content["data"], (None, 46), path, "the time series").astype(np.float32)
        series = (series - series.mean(1, keepdims=True)) / series.std(1, keepdims=True)
        sets[split] = _classification(series[:, None], np.asarray(content["label"]) - 1, 24, path)
    return {**_with_val(sets["train"], val_fraction, seed), "test": sets["test"]}


def read_deepsea(folder: Path, val_fraction: float, seed: int) -> Splits:
    path = folder / "deepsea_filtered.npz"
    arrays = read_npz(path, tuple(f"{a}_{split}" for split in ("train", "val", "test") for a in "xy"))
    splits = {}
    for split in ("train", "val", "test"):
        x = require_shape(arrays[f"x_{split}"], (None, 1000, 4), path, f"x_{split}")
        y = require_shape(arrays[f"y_{split}"], (len(x), 36), path, f"y_{split}")
        splits[split] = TensorDataset(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 1), np.float32)),
                                      torch.tensor(y, dtype=torch.float32))
    return splits


READERS: dict[str, Callable[[Path, float, int], Splits]] = {
    "spherical": read_spherical, "darcy_flow": read_darcy_flow, "psicov": read_psicov, "cosmic": read_cosmic,
    "ninapro": read_ninapro, "ecg": read_ecg, "satellite": read_satellite, "deepsea": read_deepsea,
}
"""The reader of each task of :data:`lightning_nas.tasks.NB360_TASKS` (``(data_dir, val_fraction, seed)`` → splits)."""
