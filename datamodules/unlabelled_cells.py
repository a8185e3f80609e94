"""The archive's unlabelled cells as encoder inputs, for the CCNF (paper §3.2: the flow is trained on their latents)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_nas.archive import Archive
from lightning_nas.space.cell import encode_inputs
from lightning_nas.stages import RunDir


class UnlabelledCellDataModule(L.LightningDataModule):
    """Encoder inputs (adjacency, node features) of the archive's *unlabelled* cells and a seeded held-out split.

    The CCNF module turns each batch into mean latents f = μ(x) and conditions c = q(μ(x)) with its frozen G-VAE
    (:class:`lightning_nas.models.CCNFModule`, ``gvae:``), as the authors train their CCNF; this module only loads
    data.

    Args:
        archive: ``archive.sqlite`` the G-VAE was trained on.
        probe: probe id whose labelled cells are left out (``None``: the archive's only probe; no probe: all cells).
        batch_size, val_fraction, max_cells, seed, num_workers: as usual.
    """

    def __init__(
        self,
        archive: str,
        probe: str | None = None,
        batch_size: int = 256,
        val_fraction: float = 0.05,
        max_cells: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None
        self.op_set: str | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        path = Path(hp.archive)
        RunDir(path.parent).require("archive", path)
        with Archive(path, create=False) as archive:
            self.op_set = archive.op_set
            labelled = set(archive.zc(archive.resolve_probe(hp.probe))) if hp.probe or archive.probes() else set()
            cells = [c for h, c in archive.iter_cells(limit=hp.max_cells) if h not in labelled]
        if len(cells) < 2:
            raise ValueError(f"archive: {path} has {len(cells)} unlabelled cells; the CCNF needs the zc stage's "
                             "unlabelled cells (its unlabelled: setting)")
        adj, feat = encode_inputs(cells)
        order = torch.randperm(len(cells), generator=torch.Generator().manual_seed(hp.seed))
        n_val = max(1, int(round(hp.val_fraction * len(cells))))
        val, train = order[:n_val], order[n_val:]
        self.train_set = TensorDataset(adj[train], feat[train])
        self.val_set = TensorDataset(adj[val], feat[val])

    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.hparams.batch_size, shuffle=shuffle,
                          drop_last=shuffle and len(dataset) > self.hparams.batch_size,
                          num_workers=self.hparams.num_workers, persistent_workers=self.hparams.num_workers > 0)

    def train_dataloader(self):
        return self._loader(self.train_set, True)

    def val_dataloader(self):
        return self._loader(self.val_set, False)
