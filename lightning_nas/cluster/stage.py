"""Stage ``cluster``: a Gaussian mixture on the labelled cells' normalised ZC vectors (paper §3.1, Eq. 3).

    python -m lightning_nas cluster --config configs/cluster/tiny.yaml [--k_max 32] [--probe ID]

Reads ``<workdir>/archive.sqlite`` as the ``zc`` stage left it: the ZC vectors z(x) of the cells with status ``ok``
on one probe, and the normaliser stored for that probe (log for params/FLOPs, then standardisation). Fits
scikit-learn's ``GaussianMixture`` (EM) for every K in ``k_min..k_max`` and picks K where both BIC and AIC have
plateaued (:func:`choose_k`; the paper decides K "by plateauing Bayesian and Akaike information criterions").
Components are numbered by decreasing weight. Writes

- ``<workdir>/cluster/clusters.json`` (:func:`write_clusters`, format version :data:`FORMAT_VERSION`): K, weights,
  means (μ_k, normalised ZC space — the CCNF conditions), full covariance matrices, the BIC/AIC curves, the rule, the
  probe, the ZC names, the normaliser and ``source`` — what the clustering was computed from (archive, probe id,
  normaliser digest, the ``gvae`` checkpoint and its SHA-256 digest); readers check it with :func:`read_clusters`;
- ``<workdir>/cluster/bic_aic.png``: both curves with the chosen K marked;
- ``<workdir>/cluster/metrics.json`` and ``<workdir>/cluster/config.json``;

and records every clustered cell's component in the archive (``Archive.clusters(<probe id>)``, source ``"zc"``).
With ``gvae: <checkpoint>`` every other archived cell gets the component of its predicted vector q(f(x)) (source
``"gvae"``), so the whole archive is clustered; the checkpoint must come from this archive's search space and
normaliser.
The stage takes seconds and has no state of its own: rerunning it recomputes and replaces all of the above.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from jsonargparse.typing import PositiveInt

from .. import __version__
from ..archive import Archive
from ..stages import RunDir
from ..zc.vector import ZCNormaliser
from .clusters_file import (
    _write_json,
    write_clusters,
)
from .gmm import (
    ClusterFit,
    CovarianceType,
    fit_clusters,
    gmm_from_fit,
)
from .plots import plot_curves


# ---- the stage -----------------------------------------------------------------------------------------------------
@dataclass
class ClusterStageConfig:
    """Settings of the ``cluster`` stage.

    Args:
        workdir: run directory (reads ``<workdir>/archive.sqlite``, writes ``<workdir>/cluster/``).
        probe: id of the probe whose ZC vectors are clustered (``None``: the archive's only probe).
        k_min: smallest number of components tried.
        k_max: largest number of components tried (needs more than ``k_max`` labelled cells).
        covariance_type: ``full``, ``tied``, ``diag`` or ``spherical`` (scikit-learn's).
        n_init: EM restarts per K (the best is kept).
        seed: random state of every fit.
        tolerance: share of the whole BIC/AIC improvement that may still be left beyond the chosen K.
        gvae: a G-VAE checkpoint; when set, the unlabelled cells are assigned through q(f(x)) too.
        batch_size: cells encoded at once for ``gvae``.
        wandb: log the stage as a W&B run (settings, metrics, pictures; offline unless ``WANDB_MODE`` says
            otherwise, :mod:`lightning_nas.tracking`).
    """

    workdir: str = "runs/tiny"
    probe: str | None = None
    k_min: int = 2
    k_max: int = 16
    covariance_type: CovarianceType = "full"
    n_init: PositiveInt = 3
    seed: int = 0
    tolerance: float = 0.05
    gvae: str | None = None
    batch_size: int = 1024
    wandb: bool = False

    def __post_init__(self):
        if not 1 <= self.k_min <= self.k_max:
            raise ValueError(f"k_min/k_max: need 1 ≤ k_min ({self.k_min}) ≤ k_max ({self.k_max})")
        if not (math.isfinite(self.tolerance) and 0 <= self.tolerance < 1):
            raise ValueError(f"tolerance: {self.tolerance}; need 0 ≤ tolerance < 1")


_ZC_HINT = "run the zc stage first: python -m lightning_nas zc --config configs/zc/tiny.yaml --workdir {workdir}"


def _finite(values: dict, names: Sequence[str]) -> bool:
    return all(isinstance(values.get(n), int | float) and math.isfinite(values[n]) for n in names)


def _assign_through_gvae(
    archive: Archive, config: ClusterStageConfig, normaliser: ZCNormaliser, fit: ClusterFit, labelled: set[str]
) -> dict[str, int]:
    """Components of every archived cell outside ``labelled``: the GMM applied to q(f(x)) of a trained G-VAE."""
    from tqdm.auto import tqdm

    from ..models.gvae import GVAEModule

    model = GVAEModule.from_checkpoint(config.gvae)
    model.check_space(archive.op_set)
    if model.normaliser is None or ZCNormaliser.from_dict(model.normaliser).to_dict() != normaliser.to_dict():
        raise ValueError(
            f"gvae: {config.gvae} was trained with another ZC normaliser than probe's in {archive.path}; train the "
            "G-VAE on this archive (python -m lightning_nas fit --config configs/gvae.yaml)"
        )
    gmm = gmm_from_fit(fit.to_json())
    out: dict[str, int] = {}
    batch: list = []

    def flush() -> None:
        predicted = model.predict_zc(model.encode([c for _, c in batch])).double().numpy()
        out.update(zip((h for h, _ in batch), gmm.predict(predicted).tolist(), strict=True))
        batch.clear()

    total = archive.num_cells()
    for cell_hash, cell in tqdm(archive.iter_cells(), total=total, desc="cluster: q(f(x))", unit="cell"):
        if cell_hash not in labelled:
            batch.append((cell_hash, cell))
            if len(batch) == config.batch_size:
                flush()
    if batch:
        flush()
    return out


def run_cluster_stage(config: ClusterStageConfig) -> dict:
    """Fit the GMM on the archive's labelled cells and write ``<workdir>/cluster/`` (see the module docstring);
    returns the metrics. Raises ``FileNotFoundError`` without an archive and ``ValueError`` without a probe,
    a normaliser or more than ``k_max`` labelled cells, each naming the fix."""
    from sklearn import __version__ as sklearn_version

    workdir = Path(config.workdir)
    path = RunDir(workdir).require("archive")
    stage_dir = workdir / "cluster"
    with Archive(path, create=False) as archive:
        probe_id = archive.resolve_probe(config.probe)
        stored = archive.get_normaliser(probe_id)
        if stored is None:
            raise ValueError(
                f"{path}: no ZC normaliser for probe {probe_id!r} (the zc stage stores it once ≥ 2 cells are "
                "labelled); " + _ZC_HINT.format(workdir=workdir)
            )
        normaliser = ZCNormaliser.from_dict(stored)
        rows = archive.zc(probe_id)  # status 'ok' only
        usable = {h: v for h, v in rows.items() if _finite(v, normaliser.names)}
        if len(usable) <= config.k_max:
            raise ValueError(
                f"{path}: {len(usable)} labelled cells with a finite ZC vector on probe {probe_id!r}, but fitting up "
                f"to k_max = {config.k_max} components needs more than {config.k_max}; label more cells in the zc "
                f"stage (its labelled: setting; python -m lightning_nas zc --config ... --labelled N) or lower k_max"
            )
        z = normaliser.transform(list(usable.values())).double()
        finite = torch.isfinite(z).all(1)
        hashes = [h for h, ok in zip(usable, finite.tolist(), strict=True) if ok]
        z = z[finite]
        if len(hashes) <= config.k_max:
            raise ValueError(f"{path}: only {len(hashes)} labelled cells normalise to finite vectors; need > k_max")

        stage_dir.mkdir(parents=True, exist_ok=True)
        versions = {
            "lightning_nas": __version__,
            "scikit_learn": sklearn_version,
            "torch": torch.__version__,
            "python": platform.python_version(),
        }
        _write_json(stage_dir / "config.json", {"config": asdict(config), "probe_id": probe_id, "versions": versions})
        start = time.perf_counter()
        fit = fit_clusters(
            z,
            range(config.k_min, config.k_max + 1),
            covariance_type=config.covariance_type,
            seed=config.seed,
            n_init=config.n_init,
            tolerance=config.tolerance,
        )
        seconds = time.perf_counter() - start
        assignments = dict(zip(hashes, fit.labels, strict=True))
        sources = dict.fromkeys(assignments, "zc")
        if config.gvae is not None:
            predicted = _assign_through_gvae(archive, config, normaliser, fit, set(assignments))
            assignments.update(predicted)
            sources.update(dict.fromkeys(predicted, "gvae"))
        archive.set_clusters(probe_id, assignments, source=sources)
        op_set = archive.op_set

    k, i = fit.k, fit.ks.index(fit.k)
    write_clusters(
        stage_dir / "clusters.json",
        fit.means,
        weights=fit.weights,
        covariances=fit.covariances,
        archive=path,
        probe_id=probe_id,
        normaliser=normaliser,
        gvae=config.gvae,
        covariance_type=fit.covariance_type,
        ks=fit.ks,
        bic=fit.bic,
        aic=fit.aic,
        k_bic=fit.k_bic,
        k_aic=fit.k_aic,
        rule=fit.rule,
        tolerance=fit.tolerance,
        converged=fit.converged,
        log_likelihood=fit.log_likelihood,
        cells=len(hashes),
        skipped=len(rows) - len(hashes),
        op_set=op_set,
        archive_clusters={"name": probe_id, "zc": len(hashes), "gvae": len(assignments) - len(hashes)},
        config=asdict(config),
        versions=versions,
    )
    plot_curves(
        stage_dir / "bic_aic.png",
        fit,
        f"GMM ({config.covariance_type}) on {len(hashes)} cells, probe {probe_id}: K = {k} "
        f"(BIC {fit.k_bic}, AIC {fit.k_aic}, tol {config.tolerance})",
    )
    metrics = {
        "k": k,
        "k_bic": fit.k_bic,
        "k_aic": fit.k_aic,
        "cells": len(hashes),
        "skipped": len(rows) - len(hashes),
        "gvae_assigned": len(assignments) - len(hashes),
        "bic_at_k": fit.bic[i],
        "aic_at_k": fit.aic[i],
        "log_likelihood": fit.log_likelihood,
        "min_weight": min(fit.weights),
        "fit_seconds": round(seconds, 4),
        "probe": probe_id,
    }
    _write_json(stage_dir / "metrics.json", metrics)
    if config.wandb:
        from ..tracking import log_stage

        log_stage("cluster", stage_dir, asdict(config), {**metrics, **{f"bic/k={n}": v for n, v in
                                                                       zip(fit.ks, fit.bic, strict=True)}},
                  {"bic_aic": stage_dir / "bic_aic.png"})
    return metrics


def main(argv: list[str]) -> dict:
    """Parse ``--config`` (YAML) and overrides with jsonargparse, then run the stage."""
    from ..cli import run_stage

    return run_stage(argv, ClusterStageConfig, run_cluster_stage, "cluster", __doc__)
