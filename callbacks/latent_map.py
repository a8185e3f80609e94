"""The paper's Fig. 2: a t-SNE map of G-VAE latents coloured by GMM cluster of the ZC vectors."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch
from sklearn.mixture import GaussianMixture

from lightning_nas.cluster import gmm_from_fit, measured_or_predicted, plot_latent_map


def gmm_from_clusters(path: str | Path) -> GaussianMixture:
    """A fitted ``GaussianMixture`` rebuilt from a ``clusters.json`` of the cluster stage (no refitting)."""
    return gmm_from_fit(json.loads(Path(path).read_text()))


class LatentMapCallback(L.Callback):
    """Every ``every_n_epochs`` validations (and at the end of fit), embed up to ``max_points`` held-out latent means
    with t-SNE and colour each cell by its GMM cluster: the cluster of its measured ZC vector when it is labelled,
    else of q's prediction. Saves ``<default_root_dir>/latent_map_epoch<E>.png`` and logs it to W&B when the logger is
    a ``WandbLogger``.

    Args:
        clusters: ``clusters.json`` from ``python -m lightning_nas cluster``; when missing, a GMM with ``fallback_k``
            components is fitted on the predicted ZC vectors and the title says so.
    """

    def __init__(self, clusters: str | None = None, every_n_epochs: int = 5, max_points: int = 1500,
                 fallback_k: int = 4, seed: int = 0):
        self.clusters, self.every, self.max_points, self.fallback_k, self.seed = (
            clusters, every_n_epochs, max_points, fallback_k, seed)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        last = trainer.current_epoch + 1 >= (trainer.max_epochs or 0)
        if (trainer.sanity_checking or not trainer.is_global_zero
                or not (last or trainer.current_epoch % self.every == 0)):
            return
        data = trainer.datamodule.val_set
        n = min(len(data), self.max_points)
        with torch.no_grad():
            mu = pl_module.encoder(data.adj[:n].to(pl_module.device), data.feat[:n].to(pl_module.device))[0]
            predicted = pl_module.predictor(mu).cpu().numpy()
        zc = data.zc[:n].numpy()
        z = measured_or_predicted(zc, predicted)
        if self.clusters and Path(self.clusters).is_file():
            gmm, source = gmm_from_clusters(self.clusters), Path(self.clusters).name
        else:
            gmm = GaussianMixture(self.fallback_k, random_state=self.seed).fit(z)
            source = f"GMM(K={self.fallback_k}) fitted here (no clusters.json)"
        path = Path(trainer.default_root_dir) / f"latent_map_epoch{trainer.current_epoch}.png"
        plot_latent_map(path, mu.cpu().numpy(), gmm.predict(z),
                        f"G-VAE latents (t-SNE), epoch {trainer.current_epoch}, colours: {source}", self.seed)
        logger = trainer.logger
        if logger is not None and type(logger).__name__ == "WandbLogger":
            logger.log_image(key="latent_map", images=[str(path)], step=trainer.global_step)
