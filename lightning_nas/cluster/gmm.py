"""The Gaussian mixture of the cluster stage: K chosen where BIC and AIC plateau (paper §3.1), the fit
(:class:`ClusterFit`), and a mixture rebuilt from stored parameters."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Literal, get_args

import numpy as np
import torch

CovarianceType = Literal["full", "tied", "diag", "spherical"]
COVARIANCE_TYPES = get_args(CovarianceType)
"""scikit-learn's covariance types; ``clusters.json`` always stores full K×P×P matrices whatever the type."""

RULE = (
    "plateau: for each curve c over ks (ascending), total = c(k_first) - min c and K_c = the smallest K with "
    "c(K) - min_{K' >= K} c(K') <= tolerance * total (the smallest K when total <= 0); K = min(K_bic, K_aic)"
)
"""The K-selection rule of :func:`choose_k`, recorded verbatim in ``clusters.json``."""

# ---- choosing K ----------------------------------------------------------------------------------------------------
def _curve(ks: Sequence[int], values: Sequence[float], what: str) -> tuple[list[int], list[float]]:
    ks = [int(k) for k in ks]
    values = [float(v) for v in values]
    if not ks:
        raise ValueError("ks: empty; need at least one K")
    if len(values) != len(ks):
        raise ValueError(f"{what}: {len(values)} values for {len(ks)} ks")
    if len(set(ks)) != len(ks):
        raise ValueError(f"ks: duplicates in {ks}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{what}: non-finite values {values}")
    order = sorted(range(len(ks)), key=ks.__getitem__)
    return [ks[i] for i in order], [values[i] for i in order]


def plateau_k(ks: Sequence[int], curve: Sequence[float], tolerance: float = 0.05) -> int:
    """The smallest K from which ``curve`` (an information criterion, lower is better) has plateaued.

    With the ks in ascending order, ``total = curve[0] - min(curve)`` is the whole improvement the curve offers;
    the answer is the smallest K such that the improvement still available beyond it,
    ``curve(K) - min_{K' >= K} curve(K')``, is at most ``tolerance * total``. A curve that never improves on its
    first value (``total <= 0``, e.g. flat) gives the smallest K. ``tolerance = 0`` gives the (first) argmin.
    """
    if not (math.isfinite(tolerance) and 0 <= tolerance < 1):
        raise ValueError(f"tolerance: {tolerance}; need 0 <= tolerance < 1")
    ks, curve = _curve(ks, curve, "curve")
    total = curve[0] - min(curve)
    if total <= 0:
        return ks[0]
    suffix_min = list(curve)
    for i in range(len(curve) - 2, -1, -1):
        suffix_min[i] = min(curve[i], suffix_min[i + 1])
    for k, value, best_after in zip(ks, curve, suffix_min, strict=True):
        if value - best_after <= tolerance * total:
            return k
    return ks[-1]  # unreachable: at the last K nothing is left to gain


def choose_k(ks: Sequence[int], bic: Sequence[float], aic: Sequence[float], tolerance: float = 0.05) -> int:
    """The number of mixture components, chosen where BIC and AIC plateau (paper §3.1).

    Rule, applied to each curve c ∈ {BIC, AIC} over ``ks`` sorted ascending: ``total = c(ks[0]) - min(c)``;
    ``K_c`` is the smallest K such that ``c(K) - min_{K' >= K} c(K') <= tolerance * total`` — i.e. going beyond K
    can improve the criterion by at most ``tolerance`` of the improvement the whole range offers; a curve with
    ``total <= 0`` (flat, or best at the first K) gives ``K_c = ks[0]``. The answer is ``min(K_bic, K_aic)``: the
    first K at which a criterion has plateaued. On well-separated mixtures both plateau at the true K; on real ZC
    vectors (nearly 3-D: normalised params and FLOPs correlate at 0.999) AIC keeps rewarding thin, almost singular
    components (256 tiny-run cells: K_bic = 5, K_aic = 14 with a one-cell cluster), which BIC's stronger penalty
    rejects, so the earlier plateau is the one to trust. Both curves are saved and plotted.
    """
    return min(plateau_k(ks, bic, tolerance), plateau_k(ks, aic, tolerance))


# ---- fitting -------------------------------------------------------------------------------------------------------
def _as_array(z) -> np.ndarray:
    if isinstance(z, torch.Tensor):
        z = z.detach().cpu().double().numpy()
    x = np.asarray(z, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"z: expected an N×P array with N, P ≥ 1, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"z: {int((~np.isfinite(x)).any(1).sum())} rows hold NaN/inf; drop them before clustering")
    return x


def _sort_components(model) -> None:
    """Renumber the components of a fitted ``GaussianMixture`` by decreasing weight (ties: first mean coordinate)."""
    order = np.lexsort((model.means_[:, 0], -model.weights_))
    model.weights_ = model.weights_[order]
    model.means_ = model.means_[order]
    if model.covariance_type != "tied":  # a tied covariance is shared by every component
        model.covariances_ = model.covariances_[order]
        model.precisions_ = model.precisions_[order]
        model.precisions_cholesky_ = model.precisions_cholesky_[order]


def _full_covariances(model) -> np.ndarray:
    cov, k, p = model.covariances_, model.n_components, model.means_.shape[1]
    if model.covariance_type == "full":
        return cov
    if model.covariance_type == "tied":
        return np.broadcast_to(cov, (k, p, p)).copy()
    if model.covariance_type == "diag":
        return np.stack([np.diag(v) for v in cov])
    return np.stack([v * np.eye(p) for v in cov])  # spherical


@dataclass
class ClusterFit:
    """A :func:`fit_clusters` result: ``k`` (chosen), ``k_bic``/``k_aic`` (each curve's plateau), ``ks``, ``bic``,
    ``aic`` (the curves, one value per K, ascending), ``weights`` (K), ``means`` (K×P), ``covariances`` (K×P×P full
    matrices whatever ``covariance_type``), ``labels`` (the most likely component of each row of ``z``),
    ``log_likelihood`` (mean per row at K), ``converged`` (per K, whether EM converged within sklearn's
    ``max_iter``), the settings, and ``model``: the fitted ``sklearn.mixture.GaussianMixture`` at K. Components are
    numbered by decreasing weight, in the lists and in ``model`` alike."""

    k: int
    k_bic: int
    k_aic: int
    ks: list[int]
    bic: list[float]
    aic: list[float]
    weights: list[float]
    means: list[list[float]]
    covariances: list
    labels: list[int]
    log_likelihood: float
    converged: list[bool]
    covariance_type: str
    seed: int
    n_init: int
    tolerance: float
    model: object = field(repr=False, compare=False)
    rule: str = RULE

    def to_json(self) -> dict:
        """Every field but the model, as plain JSON values."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}


def fit_clusters(
    z: np.ndarray | torch.Tensor,
    ks: Iterable[int],
    covariance_type: CovarianceType = "full",
    seed: int = 0,
    n_init: int = 3,
    tolerance: float = 0.05,
    threads: int | None = 1,
) -> ClusterFit:
    """Fit ``GaussianMixture(K)`` on the rows of ``z`` for every K in ``ks`` and keep the one :func:`choose_k` picks
    (:class:`ClusterFit`). Same inputs and seed give the same result.

    ``threads`` caps the BLAS/OpenMP threads of the fits (``None``: the libraries' defaults). The default 1 is
    deliberate: z has a handful of dimensions, so EM's matrix products are too small to gain from threads, and on
    a loaded machine spinning BLAS/OpenMP workers made the tiny sweep ~100× slower (40 s instead of 0.4 s).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits

    x = _as_array(z)
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks: {ks}; need at least one K, all ≥ 1")
    if ks[-1] > len(x):
        raise ValueError(f"ks: K up to {ks[-1]} needs at least that many rows of z, got {len(x)}")

    models, bic, aic, converged = [], [], [], []
    with threadpool_limits(limits=threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # recorded in `converged` instead
        for k in ks:
            model = GaussianMixture(k, covariance_type=covariance_type, n_init=n_init, random_state=seed)
            model.fit(x)
            models.append(model)
            bic.append(float(model.bic(x)))
            aic.append(float(model.aic(x)))
            converged.append(bool(model.converged_))

    chosen = choose_k(ks, bic, aic, tolerance)
    model = models[ks.index(chosen)]
    _sort_components(model)
    with threadpool_limits(limits=threads):
        labels = model.predict(x).tolist()
        log_likelihood = float(model.score(x))
    return ClusterFit(chosen, plateau_k(ks, bic, tolerance), plateau_k(ks, aic, tolerance), ks, bic, aic,
                      model.weights_.tolist(), model.means_.tolist(), _full_covariances(model).tolist(), labels,
                      log_likelihood, converged, covariance_type, seed, n_init, tolerance, model)


def measured_or_predicted(measured: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Each cell's measured normalised ZC vector where it has one (a finite row), else q's prediction — what a
    cell is clustered by when only some cells are labelled."""
    return np.where(np.isfinite(measured).all(1, keepdims=True), measured, predicted)


def gmm_from_fit(fit: dict):
    """A fitted scikit-learn ``GaussianMixture`` from stored weights, means and full covariances (no refitting):
    a loaded ``clusters.json`` or :meth:`ClusterFit.to_json`."""
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(n_components=len(fit["weights"]), covariance_type="full")
    gmm.weights_ = np.asarray(fit["weights"], dtype=float)
    gmm.means_ = np.asarray(fit["means"], dtype=float)
    gmm.covariances_ = np.asarray(fit["covariances"], dtype=float)
    gmm.precisions_cholesky_ = np.linalg.cholesky(np.linalg.inv(gmm.covariances_))  # any P = C Cᵀ, C triangular
    return gmm


