"""G-VAE latents of the archive's unlabelled cells with their predicted ZC condition, for the CCNF (paper §3.2)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_nas.archive import Archive
from lightning_nas.models.gvae import GVAEModule


class LatentDataModule(L.LightningDataModule):
    """Mean latents f = μ(x) of the archive's *unlabelled* cells under a frozen G-VAE, each with the condition
    c = q(μ(x)) (the G-VAE's predicted normalised ZC vector), as the authors train their CCNF; a seeded held-out split.

    Args:
        archive: ``archive.sqlite`` the G-VAE was trained on.
        gvae: the G-VAE checkpoint (``<gvae run>/checkpoints/last.ckpt``); its op set must match the archive's.
        probe: probe id whose labelled cells are left out (``None``: the archive's only probe; no probe: all cells).
        batch_size, val_fraction, max_cells, seed, num_workers: as usual.
        encode_batch: cells encoded at once.
    """

    def __init__(
        self,
        archive: str,
        gvae: str,
        probe: str | None = None,
        batch_size: int = 256,
        val_fraction: float = 0.05,
        max_cells: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
        encode_batch: int = 2048,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.gvae: GVAEModule | None = None
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None
        self.space: dict = {}

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        path = Path(hp.archive)
        if not path.is_file():
            raise FileNotFoundError(f"archive: {path} does not exist; run `python -m lightning_nas zc` first")
        self.gvae = GVAEModule.from_checkpoint(hp.gvae)
        with Archive(path, create=False) as archive:
            self.gvae.check_space(archive.op_set)
            labelled = set(archive.zc(archive.resolve_probe(hp.probe))) if hp.probe or archive.probes() else set()
            cells = [c for h, c in archive.iter_cells(limit=hp.max_cells) if h not in labelled]
        if len(cells) < 2:
            raise ValueError(f"archive: {path} has {len(cells)} unlabelled cells; the CCNF needs the zc stage's "
                             "unlabelled cells (its unlabelled: setting)")
        latents = torch.cat([self.gvae.encode(cells[i : i + hp.encode_batch])
                             for i in range(0, len(cells), hp.encode_batch)])
        cond = self.gvae.predict_zc(latents)
        order = torch.randperm(len(cells), generator=torch.Generator().manual_seed(hp.seed))
        n_val = max(1, int(round(hp.val_fraction * len(cells))))
        val, train = order[:n_val], order[n_val:]
        self.train_set = TensorDataset(latents[train], cond[train])
        self.val_set = TensorDataset(latents[val], cond[val])
        self.space = {**self.gvae.space, "latent": latents.shape[1], "zc_dims": cond.shape[1]}

    def val_conditions(self, n: int) -> torch.Tensor:
        """The first ``n`` held-out conditions (repeated if there are fewer), for generation metrics."""
        cond = self.val_set.tensors[1]
        return cond[torch.arange(n) % len(cond)]

    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.hparams.batch_size, shuffle=shuffle,
                          drop_last=shuffle and len(dataset) > self.hparams.batch_size,
                          num_workers=self.hparams.num_workers, persistent_workers=self.hparams.num_workers > 0)

    def train_dataloader(self):
        return self._loader(self.train_set, True)

    def val_dataloader(self):
        return self._loader(self.val_set, False)
