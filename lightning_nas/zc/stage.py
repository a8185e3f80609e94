"""Stage ``zc``: sample cells into the archive and compute ZC vectors for the labelled subset.

    python -m lightning_nas zc --config configs/zc/tiny.yaml [--workers 2] [--labelled 100]

The labelled cells without a ZC row are scored in a Lightning predict loop (:mod:`lightning_nas.zc.predict`):
``workers`` CPU processes or one process per GPU (``devices``) on ``num_nodes`` nodes, sharded by Lightning's
distributed sampler; each rank appends its rows to a shard file and rank 0 alone writes the archive.

Resumable: cells are sampled from a seeded stream and inserted idempotently; a killed job (any rank) loses only the
cells in flight — the next run merges the shards it left, then scores only what is missing. A run claims the cells it
scores (:meth:`Archive.claim_zc`): a second run started on the same archive meanwhile leaves them to it, waits for
their rows, and a killed run's claims come back at once (its process is gone) or when their lease runs out.
A numerical dead end (singular NASWOT kernel, NaN) is stored as ``failed`` with its reason; the run goes on.
Writes ``<workdir>/archive.sqlite`` and ``<workdir>/zc/{metrics.json, normaliser.json, config.json}``.
"""

from __future__ import annotations

import contextlib
import json
import platform
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import lightning as L
import torch

from .. import __version__
from ..archive import Archive
from ..distributed import launch_settings, launched_externally, threads_per_process
from ..space import Cell, resolve_op_set, sample_cells
from ..space.nb201 import nb201_from_cell, sample_nb201_cells
from ..stages import RunDir
from .predict import PendingCellsDataModule, ShardWriter, ZCLabeller, claim_pending, collect_shards, new_owner
from .vector import PROBE_SOURCES, Probe, ZCNormaliser


@dataclass
class ProbeConfig:
    """Where the probe batch comes from: ``digits`` (bundled), ``cifar10`` (needs ``data_dir``) or ``gaussian``."""

    source: str = "digits"
    seed: int = 0
    batch_size: int = 64
    data_dir: str | None = None


@dataclass
class ZCStageConfig:
    """Settings of the ``zc`` stage.

    Args:
        workdir: run directory (the archive is ``<workdir>/archive.sqlite``).
        op_set: op set of the sampled cells (``graphnet`` or ``nb201``).
        shape: ``any`` — random cells of up to 6 op nodes (:meth:`Cell.random`); ``nb201`` — NAS-Bench-201 cells
            (every reachable benchmark string once, in a seeded order; needs ``op_set: nb201``).
        unlabelled: cells sampled into the archive (N).
        labelled: of those, how many get a ZC vector (M, the first M in sample order).
        labelled_shape: null — the labelled cells are the first M sampled; ``any`` — the *transfer* setting: the M
            labelled cells come from a second stream of random cells of up to 6 op nodes (seed + 1) that skips every
            cell of ``shape``, so the searched space's cells are all unlabelled and every ZC label comes from outside
            it (needs ``shape: nb201``).
        seed: seed of the cell stream.
        probe: the probe batch.
        workers: evaluation processes on the CPU (1 = in this process; more: a Lightning DDP predict loop, gloo).
        devices: GPUs to use per node, one process each (0 = CPU only).
        num_nodes: nodes (SLURM: ``srun --nodes N --ntasks-per-node devices``).
        strategy: ``auto`` (``ddp_spawn`` when this process starts the others, ``ddp`` under SLURM/torchrun),
            or one of them.
        cells_per_step: cells one predict step scores (each rank's rows are flushed to its shard after a step).
        threads: torch threads per process (0 = cores / processes).
        run: a name recorded with every row.
        wandb: log the stage as a W&B run (settings, metrics, pictures; offline unless ``WANDB_MODE`` says
            otherwise, :mod:`lightning_nas.tracking`).
    """

    workdir: str = "runs/tiny"
    op_set: str = "graphnet"
    shape: str = "any"
    unlabelled: int = 1000
    labelled: int = 64
    labelled_shape: str | None = None
    seed: int = 0
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    workers: int = 1
    devices: int = 0
    num_nodes: int = 1
    strategy: Literal["auto", "ddp", "ddp_spawn"] = "auto"
    cells_per_step: int = 1
    threads: int = 0
    run: str = "zc"
    wandb: bool = False

    def __post_init__(self):
        if isinstance(self.probe, dict):
            self.probe = ProbeConfig(**self.probe)
        resolve_op_set(self.op_set)
        if self.shape not in ("any", "nb201") or (self.shape == "nb201" and self.op_set != "nb201"):
            raise ValueError(f"shape: {self.shape!r}; 'any', or 'nb201' together with op_set: nb201")
        if self.labelled_shape not in (None, "any") or (self.labelled_shape and self.shape != "nb201"):
            raise ValueError(f"labelled_shape: {self.labelled_shape!r}; null, or 'any' together with shape: nb201")
        if self.unlabelled < 1:
            raise ValueError(f"unlabelled: {self.unlabelled}; the cells to sample must be at least 1 (the demo uses "
                             "5000, the paper 400000)")
        if not 0 <= self.labelled <= self.unlabelled:
            raise ValueError(f"labelled: {self.labelled}; must lie between 0 and unlabelled ({self.unlabelled}): the "
                             "labelled cells are scored among the unlabelled ones")
        if self.probe.source not in PROBE_SOURCES:
            raise ValueError(f"probe.source: {self.probe.source!r}; choose from {PROBE_SOURCES}")
        if self.workers < 1 or self.devices < 0 or self.num_nodes < 1 or self.cells_per_step < 1:
            raise ValueError("workers, num_nodes and cells_per_step must be ≥ 1 and devices ≥ 0")
        if self.devices and not torch.cuda.is_available():
            raise ValueError(f"devices: {self.devices} GPU(s) requested but CUDA is not available; use devices: 0")


CLAIM_POLL_S = 1.0
"""How often a run whose remaining cells are being scored by another run looks again."""


def run_zc_stage(config: ZCStageConfig) -> dict:
    """Sample the cells, then score the labelled ones without a row in a Lightning predict loop
    (:mod:`lightning_nas.zc.predict`); the process of global rank 0 returns the metrics, the others ``{}``."""
    workdir = Path(config.workdir)
    stage_dir = workdir / "zc"
    archive_path = RunDir(workdir).archive
    probe = Probe.from_source(config.probe.source, config.probe.seed, config.probe.batch_size, config.probe.data_dir)
    cells = list(sample_nb201_cells(config.unlabelled, config.seed) if config.shape == "nb201" else
                 sample_cells(config.unlabelled, seed=config.seed, op_set=config.op_set))
    streams = [(0, cells)]
    if config.labelled_shape:
        streams.append((len(cells), _cells_outside_nb201(config.labelled, config.seed + 1, config.op_set)))
    labelled: dict[str, Cell] = {}
    for cell in streams[-1][1]:
        if len(labelled) == config.labelled:
            break
        labelled.setdefault(cell.canonical_hash(), cell)

    # one process per GPU or `workers` CPU processes (gloo); `auto` spawns them here (ddp_spawn: safe inside the
    # pipeline or a notebook) unless SLURM or torchrun started them (ddp)
    settings = launch_settings(config.workers, config.devices, config.num_nodes, config.strategy)
    processes = settings["devices"] * config.num_nodes
    trainer = L.Trainer(**settings, logger=False, enable_checkpointing=False, enable_model_summary=False,
                        inference_mode=False, default_root_dir=stage_dir,
                        callbacks=[ShardWriter(archive_path, probe.id)])
    rank0 = trainer.global_rank == 0
    owner, todo, recovered = new_owner(), None, 0
    shard_dir = stage_dir / "shards"
    if rank0:  # the one process that reads and writes the archive
        stage_dir.mkdir(parents=True, exist_ok=True)
        (stage_dir / "config.json").write_text(json.dumps(_describe(config, probe), indent=2))
        with Archive(archive_path, op_set=config.op_set) as archive:
            archive.add_probe(probe.id, probe.source, probe.seed, probe.x, probe.y,
                              {"batch_size": config.probe.batch_size})
            for start, stream in streams:
                archive.add_cells(stream, run=config.run, stage="zc", start_index=start)
            todo, recovered = claim_pending(archive, probe.id, labelled, owner, shard_dir)
    threads = threads_per_process(config.threads, settings["devices"])
    start = time.perf_counter()
    try:
        if todo or not rank0 or launched_externally():  # externally started ranks learn in the loop that it is empty
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Total length of `DataLoader` across ranks is zero")
                trainer.predict(ZCLabeller(probe, threads), datamodule=PendingCellsDataModule(
                    labelled, todo, owner, shard_dir, config.cells_per_step), return_predictions=False)
            trainer.strategy.barrier("zc-shards")  # every rank's rows are on disk
    except BaseException:
        if rank0:  # stopped early (an error, Ctrl-C): keep what was scored, give the rest back at once
            with contextlib.suppress(Exception), Archive(archive_path, create=False) as archive:
                collect_shards(archive, probe.id, owner, shard_dir, processes)
        raise
    if not rank0:
        return {}
    with Archive(archive_path, create=False) as archive:
        done = collect_shards(archive, probe.id, owner, shard_dir, processes)
        wall = time.perf_counter() - start
        _wait_for_other_runs(archive, probe.id, labelled)
        counts = archive.count_zc(probe.id)
        ok_rows = list(archive.zc(probe.id).values())
        metrics = {
            "cells": archive.num_cells(),
            "labelled": counts["ok"],
            "failed": counts["failed"],
            "evaluated_this_run": done,
            "recovered_from_shards": recovered,
            "processes": processes,
            "seconds": round(wall, 3),
            "evals_per_s": round(done / wall, 4) if done else _previous(stage_dir, "evals_per_s"),
            "seconds_per_eval": _mean([r["seconds"] for r in archive.zc_rows(probe.id)]),
            "probe": probe.id,
        }
        if len(ok_rows) >= 2:
            normaliser = ZCNormaliser.fit(ok_rows)
            archive.set_normaliser(probe.id, normaliser.to_dict())
            (stage_dir / "normaliser.json").write_text(json.dumps(normaliser.to_dict(), indent=2))
    (stage_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if config.wandb:
        from ..tracking import log_stage

        log_stage("zc", stage_dir, asdict(config), metrics)
    return metrics


def _wait_for_other_runs(archive: Archive, probe_id: str, labelled: dict[str, Cell]) -> None:
    """Wait while another live run scores some of the labelled cells (its rows arrive when it merges them), so the
    normaliser is fitted on all of them; warn about cells nobody is scoring any more (a run that stopped)."""
    while (missing := archive.pending(probe_id, labelled)) and archive.live_zc_owners(probe_id):
        time.sleep(CLAIM_POLL_S)
    if missing:
        warnings.warn(f"{len(missing)} labelled cells have no ZC row (a run sharing the archive stopped before "
                      "scoring them): run the zc stage again", RuntimeWarning, stacklevel=2)


def _cells_outside_nb201(n: int, seed: int, op_set: str) -> list[Cell]:
    """``n`` distinct random cells (up to 6 op nodes) that are not NAS-Bench-201 cells, from one seeded stream."""
    found: dict[str, Cell] = {}
    for cell in sample_cells(1000 * n + 1000, seed=seed, op_set=op_set):
        if len(found) == n:
            return list(found.values())
        if nb201_from_cell(cell) is None:
            found.setdefault(cell.canonical_hash(), cell)
    raise ValueError(f"labelled_shape: any found only {len(found)} distinct cells outside NB201 of {n} asked for")


def _describe(config: ZCStageConfig, probe: Probe) -> dict:
    return {
        "config": asdict(config),
        "probe_id": probe.id,
        "versions": {"lightning_nas": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }


def _previous(stage_dir: Path, key: str) -> float | None:
    path = stage_dir / "metrics.json"
    try:
        return json.loads(path.read_text()).get(key)
    except (OSError, ValueError):
        return None


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def main(argv: list[str]) -> dict:
    """Parse ``--config`` (YAML) and overrides with jsonargparse, then run the stage."""
    from ..cli import run_stage

    return run_stage(argv, ZCStageConfig, run_zc_stage, "zc", __doc__)
