"""``clusters.json``: the one writer (:func:`write_clusters`) and the one reader (:func:`read_clusters`), with
what the clustering was computed from."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..archive import Archive
from ..zc.vector import ZCNormaliser

FORMAT = "lightning-nas-clusters"
"""Value of ``format`` in ``clusters.json``."""

FORMAT_VERSION = 2
"""Layout version of ``clusters.json`` (its ``version``). 1 (no ``version`` key): the mixture, ``probe_id`` and the
``normaliser``; 2 adds ``source``: what the clustering was computed from (archive, probe id, the normaliser's digest,
the G-VAE checkpoint and its digest when ``gvae`` was set). :func:`read_clusters` reads both."""


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, allow_nan=False))
    os.replace(tmp, path)


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


