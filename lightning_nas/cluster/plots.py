"""Figures of the cluster stage: the BIC/AIC curves and the latent map."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .gmm import (
    ClusterFit,
)


def plot_curves(path: str | os.PathLike, fit: ClusterFit, title: str = "") -> None:
    """Save a PNG of the BIC and AIC curves of a :func:`fit_clusters` result with the chosen K marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0))
    FigureCanvasAgg(fig)  # the Agg backend, without pyplot's global state
    ax = fig.add_subplot()
    ks, k = fit.ks, fit.k
    ax.plot(ks, fit.bic, "o-", ms=3, label=f"BIC (plateau at K = {fit.k_bic})")
    ax.plot(ks, fit.aic, "s-", ms=3, label=f"AIC (plateau at K = {fit.k_aic})")
    ax.axvline(k, color="k", ls="--", lw=1, label=f"chosen K = {k}")
    i = ks.index(k)
    ax.plot([k, k], [fit.bic[i], fit.aic[i]], "k*", ms=10)
    ax.set_xlabel("number of components K")
    ax.set_ylabel("information criterion (lower is better)")
    ax.set_title(title or f"GMM: chosen K = {k} (tolerance {fit.tolerance})", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=120)
    os.replace(tmp, path)


def plot_latent_map(path: str | os.PathLike, latents: np.ndarray, labels: np.ndarray, title: str,
                    seed: int = 0) -> None:
    """The paper's Fig. 2: a t-SNE map of G-VAE latents ``latents`` (n × d) coloured by cluster ``labels``, as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.manifold import TSNE

    n = len(latents)
    points = TSNE(2, random_state=seed, init="pca", perplexity=min(30, max(5, n // 4))).fit_transform(latents)
    fig = Figure(figsize=(6, 5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    scatter = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=6)
    ax.legend(*scatter.legend_elements(), title="cluster", fontsize=7, loc="best")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)


