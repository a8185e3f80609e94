"""Stage ``zc``: sample cells into the archive and compute ZC vectors for the labelled subset (DESIGN.md §1).

    python -m lightning_nas zc --config configs/zc/tiny.yaml [--workers 2] [--labelled 100]

Resumable: cells are sampled from a seeded stream and inserted idempotently; each finished evaluation is committed
at once, and a rerun evaluates only labelled cells without a row. Killing the run loses the evaluations in flight.
A numerical dead end (singular NASWOT kernel, NaN) is stored as ``failed`` with its reason; the run goes on.
Writes ``<workdir>/archive.sqlite`` and ``<workdir>/zc/{metrics.json, normaliser.json, config.json}``.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import __version__
from ..archive import Archive
from ..space import Cell, resolve_op_set, sample_cells
from ..space.nb201 import sample_nb201_cells
from .vector import PROBE_SOURCES, Probe, ZCNormaliser, cell_scores


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
        seed: seed of the cell stream.
        probe: the probe batch.
        workers: evaluation processes on the CPU (1 = in this process).
        devices: GPUs to use, one process each (0 = CPU only).
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
    seed: int = 0
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    workers: int = 1
    devices: int = 0
    threads: int = 0
    run: str = "zc"
    wandb: bool = False

    def __post_init__(self):
        if isinstance(self.probe, dict):
            self.probe = ProbeConfig(**self.probe)
        resolve_op_set(self.op_set)
        if self.shape not in ("any", "nb201") or (self.shape == "nb201" and self.op_set != "nb201"):
            raise ValueError(f"shape: {self.shape!r}; 'any', or 'nb201' together with op_set: nb201")
        if self.unlabelled < 1 or not 0 <= self.labelled <= self.unlabelled:
            raise ValueError(f"labelled/unlabelled: need 0 ≤ labelled ({self.labelled}) ≤ unlabelled ({self.unlabelled})")
        if self.probe.source not in PROBE_SOURCES:
            raise ValueError(f"probe.source: {self.probe.source!r}; choose from {PROBE_SOURCES}")
        if self.workers < 1 or self.devices < 0:
            raise ValueError("workers must be ≥ 1 and devices ≥ 0")
        if self.devices and not torch.cuda.is_available():
            raise ValueError(f"devices: {self.devices} GPU(s) requested but CUDA is not available; use devices: 0")


# ---- evaluation workers ------------------------------------------------------------------------------------------
_WORKER: dict = {}


def _init_worker(probe_state: dict, threads: int, devices: int, counter) -> None:
    with counter.get_lock():
        rank = counter.value
        counter.value += 1
    device = torch.device(f"cuda:{rank % devices}") if devices else torch.device("cpu")
    torch.set_num_threads(threads)
    _WORKER["probe"] = _probe_on(probe_state, device)


def _probe_on(state: dict, device: torch.device) -> Probe:
    return Probe(state["x"].to(device), state["y"].to(device), state["source"], state["seed"])


def _evaluate(item: tuple[str, dict]) -> tuple[str, dict | None, str, str, float]:
    """``(hash, values, status, reason, seconds)`` of one cell; exceptions become failed rows."""
    cell_hash, spec = item
    start = time.perf_counter()
    try:
        values, problems, seconds = cell_scores(Cell.from_json(spec), _WORKER["probe"])
    except (ValueError, RuntimeError, torch.linalg.LinAlgError) as e:  # NaN/OOM/singular: record and go on
        return cell_hash, None, "failed", f"{type(e).__name__}: {e}"[:500], time.perf_counter() - start
    reason = "; ".join(f"{k}: {v}" for k, v in problems.items())
    return cell_hash, values, "failed" if problems else "ok", reason, seconds


def _results(config: ZCStageConfig, probe: Probe, items: list[tuple[str, dict]]) -> Iterator[tuple]:
    processes = config.devices or config.workers
    threads = config.threads or max(1, (os.cpu_count() or 1) // processes)
    state = {"x": probe.x, "y": probe.y, "source": probe.source, "seed": probe.seed}
    if processes == 1:
        _init_worker(state, threads, config.devices, mp.Value("i", 0))
        yield from map(_evaluate, items)
        return
    ctx = mp.get_context("spawn")  # no fork: torch's thread pools do not survive it
    with ctx.Pool(processes, _init_worker, (state, threads, config.devices, ctx.Value("i", 0))) as pool:
        yield from pool.imap_unordered(_evaluate, items, chunksize=1)


# ---- the stage ---------------------------------------------------------------------------------------------------
def run_zc_stage(config: ZCStageConfig) -> dict:
    workdir = Path(config.workdir)
    stage_dir = workdir / "zc"
    stage_dir.mkdir(parents=True, exist_ok=True)
    probe = Probe.from_source(config.probe.source, config.probe.seed, config.probe.batch_size, config.probe.data_dir)
    (stage_dir / "config.json").write_text(json.dumps(_describe(config, probe), indent=2))

    with Archive(workdir / "archive.sqlite", op_set=config.op_set) as archive:
        archive.add_probe(probe.id, probe.source, probe.seed, probe.x, probe.y, {"batch_size": config.probe.batch_size})
        cells = list(sample_nb201_cells(config.unlabelled, config.seed) if config.shape == "nb201" else
                     sample_cells(config.unlabelled, seed=config.seed, op_set=config.op_set))
        archive.add_cells(cells, run=config.run, stage="zc", start_index=0)
        labelled: dict[str, Cell] = {}
        for cell in cells:
            if len(labelled) == config.labelled:
                break
            labelled.setdefault(cell.canonical_hash(), cell)
        todo = archive.pending(probe.id, labelled)
        items = [(h, labelled[h].to_json()) for h in todo]

        start, done = time.perf_counter(), 0
        bar = tqdm(total=len(labelled), initial=len(labelled) - len(items), desc="ZC vectors", unit="cell")
        for cell_hash, values, status, reason, seconds in _results(config, probe, items):
            archive.add_zc(cell_hash, probe.id, values, status, reason, seconds)
            done += 1
            bar.update(1)
        bar.close()
        wall = time.perf_counter() - start

        counts = archive.count_zc(probe.id)
        ok_rows = list(archive.zc(probe.id).values())
        metrics = {
            "cells": archive.num_cells(),
            "labelled": counts["ok"],
            "failed": counts["failed"],
            "evaluated_this_run": done,
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
