"""Generating cells: from a cluster, around a reference or for a ZC condition (paper §3.2, Eq. 8–9).

``CellGenerator`` ties the trained pieces together: the CCNF maps noise u ~ N(0, I)·τ to a G-VAE latent for a
condition (a GMM cluster mean μ_k, the ZC vector of a reference cell, or any normalised ZC vector), and the G-VAE
decoder turns the latent into a cell. Baselines sit beside it for comparison (the paper's Table 1):
``neighbourhood`` decodes f⁻¹(f(r) + ε), ε ~ N(0, τ²I); ``prior`` (the table's "Random") decodes f⁻¹(ε) with
ε ~ N(0, τ²I); ``uniform`` draws cells from the search space's own sampler without the G-VAE.

Every returned cell is valid: the decoder repairs or (structured decoder) cannot produce an invalid cell, each
cell is validated again on construction, and a cell outside the generator's op set is rejected and redrawn. The
result counts the attempts, repairs and rejections, so generation success is measured, never assumed.
"""

from __future__ import annotations

import random as _random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .models.ccnf import CCNFModule
from .models.gvae import GVAEModule
from .space.cell import Cell
from .space.ops import resolve_op_set
from .stages import RunDir

METHODS = ("ccnf", "neighbourhood", "prior", "uniform")
DEFAULT_TEMPERATURE = {"cluster": 0.4, "reference": 1.0, "condition": 1.0, "none": 1.0}
"""The authors' τ: 0.4 when sampling a cluster mean (paper Eq. 9), 1.0 around a reference."""


@dataclass
class GeneratedCells:
    """Cells from one :meth:`CellGenerator.sample` call and what it took to get them."""

    cells: list[Cell]
    attempts: int = 0
    repairs: int = 0
    rejections: int = 0
    clean: int = 0
    latents: list[torch.Tensor] = field(default_factory=list, repr=False)

    @property
    def success(self) -> float:
        """Cells returned without repair, per attempt (the paper's "generation success"; rejections count as
        failures)."""
        return self.clean / max(1, self.attempts)


class CellGenerator:
    """Samples valid cells with a trained G-VAE and (for ``method="ccnf"``) a CCNF trained on its latents.

    Args:
        gvae: the G-VAE (encoder f, decoder f⁻¹, predictor q).
        ccnf: the CCNF; only ``neighbourhood`` and ``random`` work without one.
        clusters: ``clusters.json`` of the cluster stage (its means are the conditions of ``cluster=k``).
        op_set: an op-set name or a list of op names; cells outside it are rejected (default: the G-VAE's op set).
        max_attempts_factor: give up (``RuntimeError``) after ``factor × n`` attempts.
    """

    def __init__(
        self,
        gvae: GVAEModule,
        ccnf: CCNFModule | None = None,
        clusters: dict | None = None,
        op_set: str | list[str] | None = None,
        max_attempts_factor: int = 20,
    ):
        self.gvae, self.ccnf, self.clusters = gvae.eval(), ccnf.eval() if ccnf is not None else None, clusters
        self.op_set_name = op_set or gvae.space.get("op_set") or "graphnet"
        self.ops = frozenset(resolve_op_set(self.op_set_name))
        self.max_attempts_factor = max_attempts_factor
        if clusters is not None:
            self._check_means(clusters.get("means") if isinstance(clusters, dict) else None)
        if ccnf is not None:
            expected = {**gvae.space, "latent": gvae.hparams.latent, "zc_dims": gvae.hparams.zc_dims}
            if ccnf.space and any(ccnf.space.get(k) != v for k, v in expected.items()):
                raise ValueError(f"ccnf: trained on latents of {ccnf.space}, but the G-VAE is {expected}; train the "
                                 "CCNF on this G-VAE (python -m lightning_nas fit --config configs/ccnf.yaml)")

    @classmethod
    def load(cls, gvae: str | Path, ccnf: str | Path | None = None, clusters: str | Path | None = None,
             op_set: str | None = None, archive: str | Path | None = None) -> CellGenerator:
        """From checkpoint and ``clusters.json`` paths (weights-only loading, JSON). ``clusters.json`` is checked
        (:func:`lightning_nas.cluster.read_clusters`): its format, shapes and finiteness, ZC dimension = the
        G-VAE's, and that it was computed in the G-VAE's normalised ZC space (and with this G-VAE, when the cluster
        stage recorded one); given the ``archive``, that the archive holds its probe and normaliser."""
        from .cluster import read_clusters

        model = GVAEModule.from_checkpoint(gvae)
        flow = CCNFModule.from_checkpoint(ccnf) if ccnf else None
        data = None
        if clusters is not None:
            data = read_clusters(clusters, zc_dims=model.hparams.zc_dims, normaliser=model.normaliser, gvae=gvae,
                                 archive=archive)
        return cls(model, flow, data, op_set)

    @staticmethod
    def artifact_paths(workdir: str | Path, gvae=None, ccnf=None, clusters=None) -> dict[str, Path]:
        """Where the earlier stages leave their artifacts in ``workdir`` (explicit paths win)."""
        w = Path(workdir)
        return {"gvae": Path(gvae or RunDir(w).checkpoint("gvae")),
                "ccnf": Path(ccnf or RunDir(w).checkpoint("ccnf")),
                "clusters": Path(clusters or RunDir(w).clusters)}

    @classmethod
    def from_workdir(cls, workdir: str | Path, gvae=None, ccnf=None, clusters=None) -> CellGenerator:
        """The generator of a run directory: G-VAE, CCNF and clusters from :meth:`artifact_paths`, the clusters
        checked against the run's archive too when it has one."""
        archive = RunDir(workdir).archive
        return cls.load(**cls.artifact_paths(workdir, gvae, ccnf, clusters),
                        archive=archive if archive.is_file() else None)

    def _check_means(self, means) -> None:
        """The cluster means must be K×D finite numbers with D the G-VAE's ZC dimension (the CCNF's condition size):
        anything else fails later as a matmul or "stiff ODE" error far from its cause."""
        dims = self.gvae.hparams.zc_dims
        try:
            x = torch.as_tensor(means, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            x = None
        if x is None or x.ndim != 2 or len(x) == 0 or x.shape[1] != dims or not torch.isfinite(x).all():
            shape = "are not a K×D array of numbers" if x is None else f"have shape {tuple(x.shape)}" + (
                " and NaN/inf values" if x.numel() and not torch.isfinite(x).all() else "")
            raise ValueError(f"clusters: the means {shape}; need K ≥ 1 finite vectors of the G-VAE's ZC dimension "
                             f"{dims}: run the cluster stage again (python -m lightning_nas cluster --config ...)")

    # ---- conditions ---------------------------------------------------------------------------------------------
    def cluster_condition(self, k: int) -> torch.Tensor:
        """μ_k of the GMM (normalised ZC space)."""
        if self.clusters is None:
            raise ValueError("cluster=: this generator has no clusters.json (CellGenerator.load(..., clusters=...))")
        means = self.clusters["means"]
        if not 0 <= k < len(means):
            raise ValueError(f"cluster: {k} is not one of the {len(means)} clusters 0..{len(means) - 1}")
        return torch.tensor(means[k], dtype=torch.float32)

    def reference_condition(self, reference: Cell, zc: torch.Tensor | None = None) -> torch.Tensor:
        """z(r): the reference's measured normalised ZC vector when given, else the G-VAE's prediction q(f(r))."""
        if zc is not None:
            return torch.as_tensor(zc, dtype=torch.float32).reshape(-1)
        return self.gvae.predict_zc(self.gvae.encode([reference]))[0].cpu()

    # ---- sampling -----------------------------------------------------------------------------------------------
    def sample(
        self,
        n: int,
        *,
        cluster: int | None = None,
        reference: Cell | None = None,
        condition: torch.Tensor | None = None,
        reference_zc: torch.Tensor | None = None,
        temperature: float | None = None,
        seed: int = 0,
        method: str = "ccnf",
    ) -> GeneratedCells:
        """``n`` valid cells. Give exactly one of ``cluster`` (a GMM component), ``reference`` (a cell; its measured
        normalised ZC vector in ``reference_zc`` if known) or ``condition`` (a normalised ZC vector) for ``ccnf``;
        ``neighbourhood`` needs ``reference``; ``prior`` and ``uniform`` need none. ``temperature`` defaults to the
        authors' τ (1 where they give none)."""
        if method not in METHODS:
            raise ValueError(f"method: {method!r}; choose from {METHODS}")
        given = {k: v for k, v in {"cluster": cluster, "reference": reference, "condition": condition}.items()
                 if v is not None}
        if method == "ccnf" and len(given) != 1:
            raise ValueError("ccnf sampling needs exactly one of cluster=, reference= or condition=")
        if method == "neighbourhood" and reference is None:
            raise ValueError("neighbourhood sampling needs reference=")
        if method == "ccnf" and self.ccnf is None:
            raise ValueError("method 'ccnf': this generator has no CCNF (CellGenerator.load(..., ccnf=...))")
        if n < 0:
            raise ValueError(f"n: {n}; need n ≥ 0")
        kind = next(iter(given), "none")
        tau = DEFAULT_TEMPERATURE[kind] if temperature is None else float(temperature)
        if method == "uniform":
            return self._uniform(n, seed)
        if method == "prior":
            size = self.gvae.hparams.latent
            draw = lambda m, gen: tau * torch.randn(m, size, generator=gen)  # noqa: E731
        elif method == "neighbourhood":
            centre = self.gvae.encode([reference])[0].cpu()
            draw = lambda m, gen: centre + tau * torch.randn(m, len(centre), generator=gen)  # noqa: E731
        else:
            cond = (self.cluster_condition(cluster) if cluster is not None
                    else self.reference_condition(reference, reference_zc) if reference is not None
                    else torch.as_tensor(condition, dtype=torch.float32).reshape(-1))
            device = self.ccnf.device

            def draw(m: int, gen: torch.Generator) -> torch.Tensor:
                return self.ccnf.flow.sample(cond.to(device).expand(m, -1), tau, gen).cpu()

        return self._decode_until(n, draw, torch.Generator().manual_seed(seed))

    def _decode_until(self, n: int, draw, gen: torch.Generator) -> GeneratedCells:
        out = GeneratedCells(cells=[])
        while len(out.cells) < n:
            if out.attempts >= self.max_attempts_factor * max(1, n):
                raise RuntimeError(f"generated only {len(out.cells)}/{n} cells in {out.attempts} attempts "
                                   f"({out.rejections} outside op set {self.op_set_name!r})")
            m = n - len(out.cells)
            latents = draw(m, gen)
            cells, repaired = self.gvae.decode_with_repairs(latents)
            out.attempts += m
            out.repairs += sum(repaired)
            for cell, latent, fixed in zip(cells, latents, repaired, strict=True):
                if set(cell.ops) <= self.ops:
                    out.cells.append(cell)
                    out.latents.append(latent)
                    out.clean += not fixed
                else:
                    out.rejections += 1
        return out

    def _uniform(self, n: int, seed: int) -> GeneratedCells:
        rng = _random.Random(seed)
        cells = [Cell.random(op_set=self.op_set_name, rng=rng) for _ in range(n)]
        return GeneratedCells(cells=cells, attempts=n, clean=n)
