"""ZC labelling as a Lightning predict loop: the cells without a ZC row form a dataset, :class:`ZCLabeller`'s
``predict_step`` scores them (one shared pass of the proxies per cell, :func:`~lightning_nas.zc.vector.cell_scores`),
and ``Trainer(strategy="ddp" | "ddp_spawn", devices=…, num_nodes=…)`` shards them over processes, GPUs and nodes
with Lightning's distributed sampler (each rank takes every W-th cell; none twice).

One writer. Rank 0 alone opens the archive: before the loop it merges the shard files a killed run left behind and
claims the pending cells for this run (:func:`claim_pending`; a second run sharing the archive leaves claimed cells
alone), and :meth:`PendingCellsDataModule.setup` sends their list to the other ranks. Every rank appends its rows to a
shard file of its own, ``<workdir>/zc/shards/<run>.rank<r>.jsonl``, flushed after each step; after the loop rank 0
merges them into the archive in one transaction (:func:`collect_shards`, with
:meth:`~lightning_nas.archive.Archive.add_zc_many`: the first row of a cell wins) and deletes them.
SQLite is never written from two nodes, and a job killed on any rank loses only the cells in flight: the next
run merges the shards first and evaluates only what is still missing.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Dataset

from ..archive import CLAIM_LEASE_S, Archive
from ..datasets.files import read_jsonl
from ..space import Cell
from .vector import Probe, cell_scores

SHARD_SUFFIX = ".jsonl"


def new_owner() -> str:
    """A name for one labelling run, unique among the runs sharing an archive (``host:pid:random``)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _file_name(owner: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", owner)


def shard_path(shard_dir: Path, owner: str, rank: int) -> Path:
    """``<shard_dir>/<owner as a file name>.rank<r>.jsonl``."""
    return Path(shard_dir) / f"{_file_name(owner)}.rank{rank}{SHARD_SUFFIX}"




def score_cell(cell_hash: str, spec: dict, probe: Probe) -> dict:
    """The archive row of one cell: ``hash, values, status, reason, seconds``; a numerical dead end (NaN, a singular
    kernel, out of memory) becomes a ``failed`` row with its reason, and the run goes on."""
    start = time.perf_counter()
    try:
        with torch.enable_grad():  # the predict loop runs without gradients; the proxies need them
            values, problems, seconds = cell_scores(Cell.from_json(spec), probe)
    except (ValueError, RuntimeError, torch.linalg.LinAlgError) as e:
        return {"hash": cell_hash, "values": None, "status": "failed", "reason": f"{type(e).__name__}: {e}"[:500],
                "seconds": time.perf_counter() - start}
    return {"hash": cell_hash, "values": values, "status": "failed" if problems else "ok",
            "reason": "; ".join(f"{k}: {v}" for k, v in problems.items()), "seconds": seconds}


def merge_shards(archive: Archive, probe_id: str, paths: list[Path]) -> int:
    """Write the rows of shard files into the archive in one transaction (a cell's first row wins), then delete
    the files; returns how many rows were new."""
    rows = [(r["hash"], probe_id, r["values"], r["status"], r["reason"], r["seconds"])
            for path in paths for r in read_jsonl(path)]
    added = archive.add_zc_many(rows)
    for path in paths:
        path.unlink(missing_ok=True)
    return added


def orphaned_shards(archive: Archive, probe_id: str, shard_dir: Path) -> list[Path]:
    """Shard files of runs that hold no live claim any more (killed, or finished before merging)."""
    live = {_file_name(o) for o in archive.live_zc_owners(probe_id)}
    return [p for p in sorted(Path(shard_dir).glob(f"*{SHARD_SUFFIX}")) if p.name.rsplit(".rank", 1)[0] not in live]


def claim_pending(archive: Archive, probe_id: str, labelled: dict[str, Cell], owner: str,
                  shard_dir: Path) -> tuple[list[str], int]:
    """Rank 0, before the loop: merge the shards killed runs left, then claim every labelled cell still without a
    row (and not claimed by a live run) for ``owner``. Returns the claimed hashes in sample order and how many rows
    the merge recovered."""
    recovered = merge_shards(archive, probe_id, orphaned_shards(archive, probe_id, shard_dir))
    pending = archive.pending(probe_id, labelled)
    return archive.claim_zc(probe_id, pending, len(pending), owner, CLAIM_LEASE_S), recovered


def collect_shards(archive: Archive, probe_id: str, owner: str, shard_dir: Path, world_size: int) -> int:
    """Rank 0, after the loop (every rank done): merge the run's shards and give its claims back; returns how many
    rows were new."""
    paths = [p for r in range(world_size) if (p := shard_path(shard_dir, owner, r)).exists()]
    added = merge_shards(archive, probe_id, paths)
    archive.release_zc_claims(probe_id, owner)
    return added


class PendingCells(Dataset):
    """``(hash, cell spec)`` of the cells to score, in sample order."""

    def __init__(self, items: list[tuple[str, dict]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[str, dict]:
        return self.items[i]


def _as_list(batch: list) -> list:
    return batch


class PendingCellsDataModule(L.LightningDataModule):
    """The cells this run scores: ``todo`` (hashes, claimed by rank 0 with :func:`claim_pending`; ``None`` on the
    other ranks of a job whose processes were started by SLURM or torchrun) is sent from rank 0 to every rank in
    ``setup``, with rank 0's claim ``owner``; the predict dataloader yields ``(hash, spec)`` batches of
    ``cells_per_step`` that Lightning's distributed sampler deals out to the ranks.

    Args:
        labelled: ``hash -> cell`` of every labelled cell (the same in every process: a seeded sample).
        todo, owner: see above. shard_dir: where each rank writes its rows.
    """

    def __init__(self, labelled: dict[str, Cell], todo: list[str] | None, owner: str, shard_dir: str | Path,
                 cells_per_step: int = 1):
        super().__init__()
        self.labelled, self.todo, self.owner = labelled, todo, owner
        self.shard_dir, self.cells_per_step = Path(shard_dir), cells_per_step

    def setup(self, stage: str) -> None:
        self.owner, self.todo = self.trainer.strategy.broadcast((self.owner, self.todo), src=0)

    def predict_dataloader(self) -> DataLoader:
        items = [(h, self.labelled[h].to_json()) for h in self.todo]
        return DataLoader(PendingCells(items), batch_size=self.cells_per_step, shuffle=False, collate_fn=_as_list)


class ZCLabeller(L.LightningModule):
    """``predict_step``: the archive rows of a batch of ``(hash, spec)`` cells on the probe (moved to this rank's
    device), with ``threads`` torch threads per process (0 = leave Lightning's choice)."""

    def __init__(self, probe: Probe, threads: int = 0):
        super().__init__()
        self.register_buffer("x", probe.x, persistent=False)
        self.register_buffer("y", probe.y, persistent=False)
        self.source, self.seed, self.num_classes, self.threads = probe.source, probe.seed, probe.num_classes, threads

    def setup(self, stage: str) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        # a spawned rank receives the probe in shared memory; a private copy scores ~1.5x faster on the CPU
        self.x, self.y = self.x.clone(), self.y.clone()

    def predict_step(self, batch: list[tuple[str, dict]], batch_idx: int) -> list[dict]:
        probe = Probe(self.x, self.y, self.source, self.seed, self.num_classes)
        return [score_cell(cell_hash, spec, probe) for cell_hash, spec in batch]


class ShardWriter(BasePredictionWriter):
    """Appends each step's rows to this rank's shard file, flushed (a kill loses only the step in flight); rank 0
    renews the run's claims as it goes."""

    def __init__(self, archive: str | Path, probe_id: str):
        super().__init__(write_interval="batch")
        self.archive, self.probe_id = Path(archive), probe_id
        self._file = None
        self._renewed = time.monotonic()

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        data: PendingCellsDataModule = trainer.datamodule
        if self._file is None:
            data.shard_dir.mkdir(parents=True, exist_ok=True)
            self._file = open(shard_path(data.shard_dir, data.owner, trainer.global_rank), "a")  # noqa: SIM115
        self._file.write("".join(json.dumps(row) + "\n" for row in prediction))
        self._file.flush()
        if trainer.global_rank == 0 and time.monotonic() - self._renewed > CLAIM_LEASE_S / 4:
            with Archive(self.archive, create=False) as archive:
                archive.renew_zc_claims(self.probe_id, data.owner, CLAIM_LEASE_S)
            self._renewed = time.monotonic()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
