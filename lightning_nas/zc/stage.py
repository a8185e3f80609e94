"""Stage ``zc``: sample cells into the archive and compute ZC vectors for the labelled subset.

    python -m lightning_nas zc --config configs/zc/tiny.yaml [--workers 2] [--labelled 100]

Resumable: cells are sampled from a seeded stream and inserted idempotently; each finished evaluation is committed
at once, and a rerun evaluates only labelled cells without a row. Killing the run loses the evaluations in flight.
Several runs may share one archive (a second run started for more GPUs or CPU processes, or a rerun started while
the first is still going): each claims two pending cells per evaluation process at a time (:meth:`Archive.claim_zc`),
so every cell is evaluated once; a run that finds the rest claimed by others waits for their rows, and takes over the
claims of a run that was killed (at once, as its process is gone; or when their lease runs out).
A numerical dead end (singular NASWOT kernel, NaN) is stored as ``failed`` with its reason; the run goes on.
Writes ``<workdir>/archive.sqlite`` and ``<workdir>/zc/{metrics.json, normaliser.json, config.json}``.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import platform
import queue
import socket
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import __version__
from ..archive import CLAIM_LEASE_S, Archive
from ..space import Cell, resolve_op_set, sample_cells
from ..space.nb201 import nb201_from_cell, sample_nb201_cells
from ..stages import RunDir
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
        labelled_shape: null — the labelled cells are the first M sampled; ``any`` — the *transfer* setting: the M
            labelled cells come from a second stream of random cells of up to 6 op nodes (seed + 1) that skips every
            cell of ``shape``, so the searched space's cells are all unlabelled and every ZC label comes from outside
            it (needs ``shape: nb201``).
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
    labelled_shape: str | None = None
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
        if self.labelled_shape not in (None, "any") or (self.labelled_shape and self.shape != "nb201"):
            raise ValueError(f"labelled_shape: {self.labelled_shape!r}; null, or 'any' together with shape: nb201")
        if self.unlabelled < 1 or not 0 <= self.labelled <= self.unlabelled:
            raise ValueError(f"labelled/unlabelled: need 0 ≤ labelled ({self.labelled}) "
                             f"≤ unlabelled ({self.unlabelled})")
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


class _Evaluator:
    """Evaluates ``(hash, spec)`` items in this process (``workers: 1``, no GPU) or in a pool of spawned processes
    (``workers``, or one per GPU with ``devices``): :meth:`submit` an item, :meth:`result` a finished one."""

    def __init__(self, config: ZCStageConfig, probe: Probe):
        self.processes = config.devices or config.workers
        threads = config.threads or max(1, (os.cpu_count() or 1) // self.processes)
        state = {"x": probe.x, "y": probe.y, "source": probe.source, "seed": probe.seed}
        self._queued: deque = deque()
        self._finished: queue.SimpleQueue = queue.SimpleQueue()
        self._pool = None
        if self.processes == 1:
            _init_worker(state, threads, config.devices, mp.Value("i", 0))
        else:
            ctx = mp.get_context("spawn")  # no fork: torch's thread pools do not survive it
            self._pool = ctx.Pool(self.processes, _init_worker, (state, threads, config.devices, ctx.Value("i", 0)))

    def submit(self, item: tuple[str, dict]) -> None:
        if self._pool is None:
            self._queued.append(item)
        else:
            self._pool.apply_async(_evaluate, (item,), callback=self._finished.put,
                                   error_callback=self._finished.put)

    def result(self, timeout: float) -> tuple | None:
        """``(hash, values, status, reason, seconds)`` of one submitted item, or ``None`` if none finished within
        ``timeout`` seconds."""
        if self._pool is None:
            return _evaluate(self._queued.popleft())
        try:
            finished = self._finished.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(finished, BaseException):
            raise finished
        return finished

    def __enter__(self) -> _Evaluator:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()


CLAIM_POLL_S = 1.0
"""How often a run whose remaining cells are all claimed by other runs looks again."""
_REFRESH_S = 30.0  # how often the list of pending cells is re-read (others may have written some)


def _evaluate_pending(config: ZCStageConfig, probe: Probe, archive: Archive, labelled: dict[str, Cell]) -> int:
    """Write a ZC row for every cell of ``labelled`` that has none, sharing the work with any other run on the
    archive: claim up to two cells per evaluation process, evaluate, write each row and release its claim, until no
    labelled cell is left without a row. Returns how many this run evaluated."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    todo = dict.fromkeys(archive.pending(probe.id, labelled))  # pending and not claimed by this run, in order
    if not todo:
        return 0
    in_flight: set[str] = set()
    done = 0
    bar = tqdm(total=len(labelled), initial=len(labelled) - len(todo), desc="ZC vectors", unit="cell")
    refreshed = renewed = time.monotonic()
    try:
        with _Evaluator(config, probe) as evaluator:
            while True:
                want = 2 * evaluator.processes - len(in_flight)
                if want > 0 and todo:
                    claimed = archive.claim_zc(probe.id, todo, want, owner, CLAIM_LEASE_S)
                    for cell_hash in claimed:
                        del todo[cell_hash]
                        in_flight.add(cell_hash)
                        evaluator.submit((cell_hash, labelled[cell_hash].to_json()))
                    if len(claimed) < want or time.monotonic() - refreshed > _REFRESH_S:
                        todo = dict.fromkeys(archive.pending(probe.id, todo))  # drop the rows others wrote
                        refreshed = time.monotonic()
                        bar.n = len(labelled) - len(todo) - len(in_flight)
                        bar.refresh()
                if not in_flight:
                    if not todo:
                        break
                    time.sleep(CLAIM_POLL_S)  # the rest is claimed by other runs: wait for their rows (or claims)
                    continue
                result = evaluator.result(timeout=CLAIM_LEASE_S / 4)
                if time.monotonic() - renewed > CLAIM_LEASE_S / 4:
                    archive.renew_zc_claims(probe.id, owner, CLAIM_LEASE_S)
                    renewed = time.monotonic()
                if result is None:
                    continue
                cell_hash, values, status, reason, seconds = result
                archive.add_zc(cell_hash, probe.id, values, status, reason, seconds)
                archive.release_zc_claims(probe.id, owner, [cell_hash])
                in_flight.discard(cell_hash)
                done += 1
                bar.update(1)
    except BaseException:
        if in_flight:  # stopped early (an error, Ctrl-C): give the unfinished cells back at once
            with contextlib.suppress(Exception):
                archive.release_zc_claims(probe.id, owner)
        raise
    finally:
        bar.close()
    return done


# ---- the stage ---------------------------------------------------------------------------------------------------
def run_zc_stage(config: ZCStageConfig) -> dict:
    workdir = Path(config.workdir)
    stage_dir = workdir / "zc"
    stage_dir.mkdir(parents=True, exist_ok=True)
    probe = Probe.from_source(config.probe.source, config.probe.seed, config.probe.batch_size, config.probe.data_dir)
    (stage_dir / "config.json").write_text(json.dumps(_describe(config, probe), indent=2))

    with Archive(RunDir(workdir).archive, op_set=config.op_set) as archive:
        archive.add_probe(probe.id, probe.source, probe.seed, probe.x, probe.y, {"batch_size": config.probe.batch_size})
        cells = list(sample_nb201_cells(config.unlabelled, config.seed) if config.shape == "nb201" else
                     sample_cells(config.unlabelled, seed=config.seed, op_set=config.op_set))
        archive.add_cells(cells, run=config.run, stage="zc", start_index=0)
        if config.labelled_shape:
            outside = _cells_outside_nb201(config.labelled, config.seed + 1, config.op_set)
            archive.add_cells(outside, run=config.run, stage="zc", start_index=len(cells))
            cells = outside
        labelled: dict[str, Cell] = {}
        for cell in cells:
            if len(labelled) == config.labelled:
                break
            labelled.setdefault(cell.canonical_hash(), cell)
        start = time.perf_counter()
        done = _evaluate_pending(config, probe, archive, labelled)
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
