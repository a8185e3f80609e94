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

import hashlib
import json
import math
import os
import platform
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .archive import Archive
from .stages import RunDir
from .zc.vector import ZCNormaliser

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
"""scikit-learn's covariance types; ``clusters.json`` always stores full K×P×P matrices whatever the type."""

RULE = (
    "plateau: for each curve c over ks (ascending), total = c(k_first) - min c and K_c = the smallest K with "
    "c(K) - min_{K' >= K} c(K') <= tolerance * total (the smallest K when total <= 0); K = min(K_bic, K_aic)"
)
"""The K-selection rule of :func:`choose_k`, recorded verbatim in ``clusters.json``."""

FORMAT = "lightning-nas-clusters"
"""Value of ``format`` in ``clusters.json``."""

FORMAT_VERSION = 2
"""Layout version of ``clusters.json`` (its ``version``). 1 (no ``version`` key): the mixture, ``probe_id`` and the
``normaliser``; 2 adds ``source``: what the clustering was computed from (archive, probe id, the normaliser's digest,
the G-VAE checkpoint and its digest when ``gvae`` was set). :func:`read_clusters` reads both."""


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
    covariance_type: str = "full",
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

    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(f"covariance_type: {covariance_type!r}; choose from {COVARIANCE_TYPES}")
    if n_init < 1:
        raise ValueError(f"n_init: {n_init}; need ≥ 1")
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


# ---- clusters.json: the one writer and the one reader ---------------------------------------------------------------
def file_digest(path: str | os.PathLike) -> str:
    """The first 16 hex digits of the file's SHA-256."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def normaliser_digest(normaliser: ZCNormaliser | dict) -> str:
    """The first 16 hex digits of the SHA-256 of a ZC normaliser in its canonical form (what identifies the
    normalised ZC space: the archive's labelled cells on one probe)."""
    norm = normaliser if isinstance(normaliser, ZCNormaliser) else ZCNormaliser.from_dict(normaliser)
    return hashlib.sha256(json.dumps(norm.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _same_normaliser(a: ZCNormaliser | dict, b: ZCNormaliser | dict) -> bool:
    try:
        return normaliser_digest(a) == normaliser_digest(b)
    except (KeyError, TypeError, ValueError):
        return False


def rerun_hint(path: str | os.PathLike, gvae: str | os.PathLike | None = None) -> str:
    """What to run to get a good ``clusters.json`` at ``path`` (``<workdir>/cluster/clusters.json``)."""
    path = Path(path)
    workdir = f" --workdir {path.parent.parent}" if path.parent.name == "cluster" else ""
    gvae = f" --gvae {gvae}" if gvae else ""
    config = "configs/cluster/tiny.yaml"
    return f"run the cluster stage again: python -m lightning_nas cluster --config {config}{workdir}{gvae}"


def clusters_source(probe_id: str, normaliser: ZCNormaliser | dict, archive: str | os.PathLike | None = None,
                    gvae: str | os.PathLike | None = None) -> dict:
    """The ``source`` record of ``clusters.json``: the archive, its probe, the normaliser's digest, and the G-VAE
    checkpoint with its digest (``None`` when the clustering used none)."""
    return {"archive": None if archive is None else str(archive), "probe_id": probe_id,
            "normaliser_sha256": normaliser_digest(normaliser),
            "gvae": None if gvae is None else str(gvae), "gvae_sha256": None if gvae is None else file_digest(gvae)}


def write_clusters(path: str | os.PathLike, means, *, weights=None, covariances=None, archive=None, probe_id=None,
                   normaliser=None, gvae=None, **extra) -> dict:
    """Write ``clusters.json`` (format :data:`FORMAT`, version :data:`FORMAT_VERSION`) and return what was written.

    ``means`` (K×D, normalised ZC space), ``weights`` (K; default uniform) and ``covariances`` (K×D×D; default
    identities) are the mixture. ``probe_id`` and ``normaliser`` name the ZC space; when not given they are read from
    ``archive`` (its only probe unless ``probe_id`` says which). ``gvae``: the G-VAE checkpoint the clustering used,
    if any. ``extra`` keys (the stage's curves, settings, …) are stored too. The record is checked with
    :func:`check_clusters` first, so nothing the reader would refuse is ever written."""
    path = Path(path)
    if archive is not None and (probe_id is None or normaliser is None):
        with Archive(archive, create=False) as a:
            probe_id = a.resolve_probe(probe_id)
            normaliser = normaliser if normaliser is not None else a.get_normaliser(probe_id)
    if probe_id is None or normaliser is None:
        raise ValueError("write_clusters: give probe_id and normaliser, or an archive that stores them")
    norm = normaliser if isinstance(normaliser, ZCNormaliser) else ZCNormaliser.from_dict(normaliser)
    means = [[float(v) for v in row] for row in means]
    k, d = len(means), len(means[0]) if means else 0
    record = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "K": k,
        "weights": [1.0 / k] * k if weights is None else [float(w) for w in weights],
        "means": means,
        "covariances": np.broadcast_to(np.eye(d), (k, d, d)).tolist() if covariances is None
        else np.asarray(covariances, dtype=float).tolist(),
        "probe_id": probe_id,
        "zc_names": list(norm.names),
        "normaliser": norm.to_dict(),
        "source": clusters_source(probe_id, norm, archive, gvae),
    }
    for key, value in extra.items():
        record.setdefault(key, value)
    check_clusters(record, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_json(path, record)
    return record


def _array(value, shape: str, what: str) -> np.ndarray:
    try:
        x = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):  # ragged lists, strings, null
        raise ValueError(f"{what}: expected a {shape} array of numbers") from None
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: {int((~np.isfinite(x)).sum())} NaN/inf value(s)")
    return x


def check_clusters(data, path: str | os.PathLike, *, zc_dims: int | None = None,
                   normaliser: ZCNormaliser | dict | None = None, gvae: str | os.PathLike | None = None,
                   archive: str | os.PathLike | None = None) -> dict:
    """Refuse (``ValueError`` naming ``path`` and the fix) a loaded ``clusters.json`` that the generator cannot use
    or that belongs to other artifacts; returns ``data`` unchanged.

    Always: the ``format`` marker and a readable version; ``means`` K×D, ``weights`` K (≥ 0, summing to 1) and
    ``covariances`` K×D×D (symmetric positive definite), all finite; a normaliser of D dimensions and a probe id;
    for version 2 a ``source`` record that matches them. Given ``zc_dims``, D must equal it (the G-VAE's/CCNF's ZC
    dimension); given the G-VAE's ``normaliser``, the clustering's normaliser must be the same (else it was computed
    on another archive or probe); given the ``gvae`` checkpoint path, a recorded G-VAE digest must match it; given
    ``archive``, the archive must hold the probe with the same normaliser.

    Version 1 files (written before ``source`` existed) are read without a warning: they hold ``probe_id`` and the
    full ``normaliser``, which is all the identity checks need (only the G-VAE digest is missing, and the means do
    not depend on a G-VAE), so rerunning the cluster stage would change nothing but would make a resumed search
    start over (its run ids include the file's digest). A file without the ``format`` marker (hand-written) is
    refused: nothing says what it was computed from."""
    path = Path(path)
    hint = rerun_hint(path, (data.get("source") or {}).get("gvae") if isinstance(data, dict) else None)

    def bad(message: str) -> ValueError:
        return ValueError(f"{path}: {message}; {hint}")

    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise bad(f'not a clusters.json of the cluster stage (no "format": "{FORMAT}" record)')
    version = data.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise bad(f"version {version!r} is not a clusters.json version")
    if version > FORMAT_VERSION:
        raise ValueError(f"{path}: clusters.json version {version} is newer than this lightning_nas reads "
                         f"({FORMAT_VERSION}); upgrade lightning_nas, or {hint}")
    try:
        means = _array(data.get("means"), "K×D", "means")
        if means.ndim != 2 or means.shape[0] < 1 or means.shape[1] < 1:
            raise ValueError(f"means: expected a K×D array with K, D ≥ 1, got shape {means.shape}")
        k, d = means.shape
        if zc_dims is not None and d != zc_dims:
            raise ValueError(f"means of dimension {d}, but the G-VAE and CCNF work on {zc_dims}-dimensional ZC "
                             "vectors")
        if data.get("K", k) != k:
            raise ValueError(f"K: {data.get('K')!r}, but there are {k} means")
        weights = _array(data.get("weights"), "K", "weights")
        if weights.shape != (k,) or (weights < 0).any() or abs(weights.sum() - 1) > 1e-3:
            raise ValueError(f"weights: expected {k} non-negative numbers summing to 1, got {weights.tolist()}")
        cov = _array(data.get("covariances"), "K×D×D", "covariances")
        if cov.shape != (k, d, d):
            raise ValueError(f"covariances: expected shape {(k, d, d)} for {k} means of dimension {d}, got {cov.shape}")
        if not np.allclose(cov, cov.transpose(0, 2, 1)):
            raise ValueError("covariances: not symmetric")
        try:
            np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            raise ValueError("covariances: not positive definite") from None
        try:
            norm = ZCNormaliser.from_dict(data["normaliser"])
        except (KeyError, TypeError, ValueError):
            raise ValueError("normaliser: missing or malformed") from None
        if len(norm.names) != d:
            raise ValueError(f"normaliser: {len(norm.names)} ZC dimensions {list(norm.names)}, but the means have {d}")
        if "zc_names" in data and list(data["zc_names"]) != list(norm.names):
            raise ValueError(f"zc_names {data['zc_names']} differ from the normaliser's {list(norm.names)}")
        probe_id = data.get("probe_id")
        if not isinstance(probe_id, str) or not probe_id:
            raise ValueError("probe_id: missing")
        source = data.get("source")
        if version >= 2 and (not isinstance(source, dict) or source.get("probe_id") != probe_id
                             or source.get("normaliser_sha256") != normaliser_digest(norm)):
            raise ValueError("its source record is missing or does not match its probe_id and normaliser (edited?)")
    except ValueError as err:
        raise bad(str(err)) from None
    if normaliser is not None and not _same_normaliser(norm, normaliser):
        raise bad(f"clustered in another normalised ZC space (probe {probe_id}, normaliser {normaliser_digest(norm)}) "
                  f"than the G-VAE was trained on (normaliser {_safe_digest(normaliser)}): it belongs to another "
                  "archive or probe")
    recorded = (source or {}).get("gvae_sha256") if version >= 2 else None
    if gvae is not None and recorded and file_digest(gvae) != recorded:
        raise bad(f"computed with the G-VAE {source.get('gvae')} (sha256 {recorded}), not {gvae} "
                  f"(sha256 {file_digest(gvae)})")
    if archive is not None:
        with Archive(archive, create=False) as a:
            probes = a.probes()
            if probe_id not in probes:
                raise bad(f"computed on probe {probe_id}, which {archive} does not hold (it has "
                          f"{', '.join(probes) or 'none'}): it belongs to another archive")
            stored = a.get_normaliser(probe_id)
        if stored is None or not _same_normaliser(norm, stored):
            raise bad(f"its normaliser ({normaliser_digest(norm)}) is not the one {archive} stores for probe "
                      f"{probe_id} ({_safe_digest(stored)}): the archive was relabelled since")
    return data


def _safe_digest(normaliser) -> str:
    try:
        return normaliser_digest(normaliser)
    except (KeyError, TypeError, ValueError):
        return "malformed"


def read_clusters(path: str | os.PathLike, **checks) -> dict:
    """``clusters.json`` at ``path``, checked with :func:`check_clusters` (``checks``: its keyword arguments).
    ``FileNotFoundError`` / ``ValueError`` name the file and what to run."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no clusters.json; {rerun_hint(path).replace(' again', '')}")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err}); {rerun_hint(path)}") from None
    return check_clusters(data, path, **checks)


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
    covariance_type: str = "full"
    n_init: int = 3
    seed: int = 0
    tolerance: float = 0.05
    gvae: str | None = None
    batch_size: int = 1024
    wandb: bool = False

    def __post_init__(self):
        if not 1 <= self.k_min <= self.k_max:
            raise ValueError(f"k_min/k_max: need 1 ≤ k_min ({self.k_min}) ≤ k_max ({self.k_max})")
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type: {self.covariance_type!r}; choose from {COVARIANCE_TYPES}")
        if self.n_init < 1:
            raise ValueError(f"n_init: {self.n_init}; need ≥ 1")
        if not (math.isfinite(self.tolerance) and 0 <= self.tolerance < 1):
            raise ValueError(f"tolerance: {self.tolerance}; need 0 ≤ tolerance < 1")


_ZC_HINT = "run the zc stage first: python -m lightning_nas zc --config configs/zc/tiny.yaml --workdir {workdir}"


def _finite(values: dict, names: Sequence[str]) -> bool:
    return all(isinstance(values.get(n), int | float) and math.isfinite(values[n]) for n in names)


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, allow_nan=False))
    os.replace(tmp, path)


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


def measured_or_predicted(measured: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Each cell's measured normalised ZC vector where it has one (a finite row), else q's prediction — what a
    cell is clustered by when only some cells are labelled."""
    return np.where(np.isfinite(measured).all(1, keepdims=True), measured, predicted)


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


def _assign_through_gvae(
    archive: Archive, config: ClusterStageConfig, normaliser: ZCNormaliser, fit: ClusterFit, labelled: set[str]
) -> dict[str, int]:
    """Components of every archived cell outside ``labelled``: the GMM applied to q(f(x)) of a trained G-VAE."""
    from tqdm.auto import tqdm

    from .models.gvae import GVAEModule

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
        from .tracking import log_stage

        log_stage("cluster", stage_dir, asdict(config), {**metrics, **{f"bic/k={n}": v for n, v in
                                                                       zip(fit.ks, fit.bic, strict=True)}},
                  {"bic_aic": stage_dir / "bic_aic.png"})
    return metrics


def main(argv: list[str]) -> dict:
    """Parse ``--config`` (YAML) and overrides with jsonargparse, then run the stage."""
    from .cli import run_stage

    return run_stage(argv, ClusterStageConfig, run_cluster_stage, "cluster", __doc__)
