"""Cells and their ZC vectors from the archive, for the G-VAE (paper §3.1: unlabelled + labelled, paired per step)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset

from lightning_nas.archive import Archive
from lightning_nas.space.cell import encode_inputs
from lightning_nas.space.decoding import batch_targets
from lightning_nas.stages import RunDir
from lightning_nas.zc import ZCNormaliser


class CellTensors(Dataset):
    """Precomputed encoder inputs, decoder targets and (normalised) ZC vectors of a list of cells."""

    def __init__(self, cells, hashes, zc: torch.Tensor):
        self.hashes = list(hashes)
        self.adj, self.feat = encode_inputs(cells) if cells else (torch.zeros(0, 9, 9), torch.zeros(0, 9, 16))
        self.targets = batch_targets(cells) if cells else None
        self.zc = zc

    def __len__(self) -> int:
        return len(self.hashes)

    def __getitem__(self, i: int) -> dict:
        return {
            "adj": self.adj[i], "feat": self.feat[i], "targets": type(self.targets)(*(t[i] for t in self.targets)),
            "zc": self.zc[i],
            "labelled": bool(torch.isfinite(self.zc[i]).all()), "hash": self.hashes[i],
        }


class GraphZCDataModule(L.LightningDataModule):
    """Unlabelled cells (no ZC vector) and labelled cells (ZC vector on ``probe``) from an archive, a seeded held-out
    split of each, and training batches that pair one unlabelled with one labelled batch every step (the smaller set
    cycles). ZC vectors are normalised with the normaliser the ``zc`` stage stored.

    Args:
        archive: path of ``archive.sqlite`` (written by ``python -m lightning_nas zc``).
        probe: probe id of the ZC vectors; ``None`` takes the archive's only probe.
        batch_size: unlabelled cells per step; ``labelled_batch_size`` labelled cells per step (default the same).
        val_fraction: share of each kind held out.
        max_cells: use at most this many cells (in sample order); ``None`` = all.
        seed: seed of the split.
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        archive: str,
        probe: str | None = None,
        batch_size: int = 64,
        labelled_batch_size: int | None = None,
        val_fraction: float = 0.05,
        max_cells: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.train_sets: dict[str, CellTensors] = {}
        self.val_set: CellTensors | None = None
        self.train_hashes: set[str] = set()
        self.op_set: str | None = None
        self.normaliser: dict | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.val_set is not None:
            return
        hp = self.hparams
        path = Path(hp.archive)
        RunDir(path.parent).require("archive", path)
        with Archive(path, create=False) as archive:
            self.op_set = archive.op_set
            probe = archive.resolve_probe(hp.probe)
            zc = archive.zc(probe)
            self.normaliser = archive.get_normaliser(probe)
            cells = list(archive.iter_cells(limit=hp.max_cells))
        if not zc or self.normaliser is None:
            raise ValueError(
                f"archive: {path} has no labelled cells (ZC vectors) for probe {probe!r}; run the zc stage with "
                "labelled > 0 first"
            )
        normaliser = ZCNormaliser.from_dict(self.normaliser)
        gen = torch.Generator().manual_seed(hp.seed)
        kinds = {"labelled": [(h, c) for h, c in cells if h in zc],
                 "unlabelled": [(h, c) for h, c in cells if h not in zc]}
        val_cells, val_zc = [], []
        for kind, items in kinds.items():
            order = torch.randperm(len(items), generator=gen).tolist()
            n_val = int(round(hp.val_fraction * len(items)))
            held, train = [items[i] for i in order[:n_val]], [items[i] for i in order[n_val:]]
            vectors = (
                normaliser.transform([zc[h] for h, _ in train]) if kind == "labelled"
                else torch.full((len(train), len(normaliser.names)), float("nan"))
            )
            self.train_sets[kind] = CellTensors([c for _, c in train], [h for h, _ in train], vectors)
            self.train_hashes.update(h for h, _ in train)
            val_cells += held
            val_zc += (
                normaliser.transform([zc[h] for h, _ in held]).tolist() if kind == "labelled" and held
                else [[float("nan")] * len(normaliser.names)] * len(held)
            )
        self.val_set = CellTensors([c for _, c in val_cells], [h for h, _ in val_cells],
                                   torch.tensor(val_zc).reshape(len(val_cells), -1))

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=self.hparams.num_workers,
                          drop_last=False, persistent_workers=self.hparams.num_workers > 0)

    def train_dataloader(self):
        hp = self.hparams
        loaders = {"unlabelled": self._loader(self.train_sets["unlabelled"], hp.batch_size, True),
                   "labelled": self._loader(self.train_sets["labelled"], hp.labelled_batch_size or hp.batch_size, True)}
        loaders = {k: v for k, v in loaders.items() if len(v.dataset)}
        return CombinedLoader(loaders, mode="max_size_cycle")

    def val_dataloader(self):
        return self._loader(self.val_set, self.hparams.batch_size, False)
