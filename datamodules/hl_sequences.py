"""HL sequences from the search history for the sequence generator (paper §3.3, Eq. 10–11).

Every architecture the search evaluated (``Archive.archs(stage="search")``: HL spec, full spec, measured params,
MACs, FLOPs and, when scored, T-CET) becomes one training sequence ``<bos> y <sep> α̂ <eos>`` with y the
architecture's *own* measured values (Eq. 10) and its task's tokens (classes, input size: the task the search
checked it for, which its spec carries; the archive probe's shape for specs without one).
Over-budget children are kept (their size was measured; their T-CET token is absent), failed ones are not.
With a ``device`` (``host`` or a HW-NAS-Bench platform), every sequence also carries the architecture's latency
(and energy, where the device has an energy model) on that device, batch 1: the point estimate of the device's
cost table (:func:`lightning_nas.hw.cost.hardware_cost_for`, stored in ``<archive's folder>/hw/`` and shared with
``search`` and ``generate``) of the architecture's network for its task — so a latency budget can be asked of the
SG (``generate --budget.latency_ms … --device``).

The held-out split is by HL architecture (a hash of its spec), so no HL sequence is on both sides. Training batches
drop each of ``params``, ``macs``, ``flops``, ``tcet`` with probability ``condition_dropout`` (App. A); validation
keeps them all; the task tokens are dropped too, so the SG can be prompted without them for a task it never saw.
The module also gets what it needs to check budgets while training: ``budget_grid`` (params limits spread over the
held-out architectures' sizes), ``cluster_cells`` (the cells the search drew for each cluster), ``tasks`` (every
task of the history, the most frequent first) and ``task`` (that most frequent one, for the budget checks).
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from lightning_nas.archive import Archive
from lightning_nas.hl_tokenizer import DROPPABLE_KEYS, PAD, SEP, HLTokenizer, task_condition
from lightning_nas.space.arch import Arch
from lightning_nas.space.cell import Cell
from lightning_nas.space.hl import HLArch
from lightning_nas.space.network import task_network
from lightning_nas.space.task import Task
from lightning_nas.stages import RunDir
from lightning_nas.zc.vector import Probe


class _HistoryHardware:
    """Predicted latency/energy (the cost table's point estimates) of history architectures on ``device``, one
    cost table per task (fitted or loaded by :func:`~lightning_nas.hw.cost.hardware_cost_for` beside the archive)."""

    def __init__(self, device: str, archive_path: Path):
        self.device, self.workdir = device, archive_path.parent
        self.archive = Archive(archive_path, create=False) if device == "host" else None  # host layers get timed
        self.costs: dict[Task, object] = {}

    def __call__(self, arch: Arch, task: Task) -> dict[str, float]:
        from lightning_nas.hw.cost import hardware_cost_for

        if task not in self.costs:
            self.costs[task] = hardware_cost_for(self.device, task, self.workdir, self.archive)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = task_network(task, arch)
        cost = self.costs[task](model, task.input_shape)
        return {unit: cost[f"{unit}_estimate"] for unit in ("latency_ms", "energy_mj") if f"{unit}_estimate" in cost}

    def close(self) -> None:
        if self.archive is not None:
            self.archive.close()


def _held_out(hl_spec: dict, val_fraction: float) -> bool:
    digest = hashlib.sha256(json.dumps(hl_spec, sort_keys=True).encode()).hexdigest()
    return int(digest[:8], 16) % 10_000 < val_fraction * 10_000


class HLSequenceDataModule(L.LightningDataModule):
    """Sequences of the search history in ``archive``.

    Args:
        archive: the run's archive (its ``search`` history and probe).
        clusters: ``clusters.json`` of the cluster stage: the tokenizer gets one cluster token per GMM component
            (default: as many as the history uses).
        probe: the probe id whose shape is the task of history rows that carry none (default: the archive's only
            probe).
        stage, runs: which history rows (``stage`` of ``Archive.archs``; ``runs``: a list of run ids, default all).
        val_fraction: share of HL architectures held out.
        condition_dropout: probability of dropping each condition token (task, params, MACs, FLOPs, T-CET) in a
            training sequence.
        batch_size: sequences per batch (the paper: 1 with GPT-Neo-125M).
        budget_grid_size: number of params budgets the module checks generation against at each validation.
        device: the platform whose latency/energy tokens the sequences carry (``None``: no hardware tokens).
    """

    def __init__(
        self,
        archive: str = "runs/tiny/archive.sqlite",
        clusters: str | None = None,
        probe: str | None = None,
        stage: str = "search",
        runs: list[str] | None = None,
        val_fraction: float = 0.1,
        condition_dropout: float = 0.25,
        batch_size: int = 32,
        budget_grid_size: int = 10,
        seed: int = 0,
        device: str | None = None,
    ):
        super().__init__()
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction: {val_fraction}; need 0 < val_fraction < 1")
        if not 0 <= condition_dropout <= 1:
            raise ValueError(f"condition_dropout: {condition_dropout}; need 0 ≤ p ≤ 1")
        if device is not None:
            from lightning_nas.hw.devices import DEVICES

            if device not in DEVICES:
                raise ValueError(f"device: {device!r}; choose one of {DEVICES} (or null: no latency tokens)")
        self.save_hyperparameters()
        self.tokenizer: HLTokenizer | None = None
        self.train_items: list[tuple[HLArch, dict]] = []
        self.val_items: list[tuple[HLArch, dict]] = []
        self.cluster_cells: dict[int, list[Cell]] = {}
        self.budget_grid: list[dict[str, float]] = []
        self.tasks: list[Task] = []
        self.task: Task | None = None

    # ---- data ------------------------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is not None:
            return
        h = self.hparams
        path = Path(h.archive)
        if not path.is_file():  # the archive of a run without a search history is refused below
            RunDir(path.parent).require("archive", path)
        with Archive(path, create=False) as archive:
            records = archive.archs(stage=h.stage)
            probe = Probe.from_archive(archive, h.probe)
        if h.runs is not None:
            records = [r for r in records if r["run"] in set(h.runs)]
        records = [r for r in records if r.get("hl_spec") and r["metrics"].get("params") is not None]
        if len(records) < 10:
            raise ValueError(f"{path}: {len(records)} usable {h.stage!r} architectures (with an HL spec and a measured "
                             "size); the SG needs the search history: run python -m lightning_nas search first")
        probe_task = Task.from_probe(probe)
        used = 1 + max(s["cluster"] for r in records for s in r["hl_spec"]["stages"])
        num_clusters = used
        if h.clusters is not None:
            clusters_path = RunDir(path.parent).require("clusters", h.clusters)
            num_clusters = len(json.loads(clusters_path.read_text())["means"])
            if used > num_clusters:
                raise ValueError(f"{path}: the history uses cluster {used - 1}, {clusters_path} has {num_clusters}: "
                                 "the history comes from another clustering")
        self.tokenizer = HLTokenizer(num_clusters, device=h.device)

        cells: dict[int, dict[str, Cell]] = {}
        tasks: dict[Task, int] = {}
        hardware = _HistoryHardware(h.device, path) if h.device is not None else None
        for r in records:
            hl = HLArch.from_json(r["hl_spec"])
            arch = Arch.from_json(r["spec"])
            task = arch.task or probe_task
            tasks[task] = tasks.get(task, 0) + 1
            m = r["metrics"]
            values = {**task_condition(task), "params": m["params"], "macs": m["macs"], "flops": m["flops"],
                      "tcet": m["score"] if m["status"] == "ok" and m.get("objective", "tcet") == "tcet" else None}
            if hardware is not None:
                values.update(hardware(arch, task))
            (self.val_items if _held_out(r["hl_spec"], h.val_fraction) else self.train_items).append((hl, values))
            for stage_, hl_stage in zip(arch.stages, hl.stages, strict=True):
                cells.setdefault(hl_stage.cluster, {})[stage_.cell.canonical_hash()] = stage_.cell
        if hardware is not None:
            hardware.close()
        if not self.train_items or not self.val_items:
            raise ValueError(f"{path}: {len(records)} architectures give an empty train or validation split "
                             f"(val_fraction {h.val_fraction}); search longer")
        self.cluster_cells = {k: list(v.values()) for k, v in sorted(cells.items())}
        self.tasks = sorted(tasks, key=lambda t: (-tasks[t], t.name))
        self.task = self.tasks[0]
        sizes = sorted(v["params"] for _, v in self.val_items)
        quantiles = [0.1 + 0.8 * i / max(1, h.budget_grid_size - 1) for i in range(h.budget_grid_size)]
        self.budget_grid = [{"params": float(sizes[int(q * (len(sizes) - 1))])} for q in quantiles]
        self._dropout = torch.Generator().manual_seed(h.seed)

    def collate(self, items: list[tuple[HLArch, dict]], drop: bool) -> dict[str, torch.Tensor]:
        """Token ids, attention mask and labels (−100 on the prompt and padding: Eq. 10 is the NLL of α̂ given y)."""
        sequences = []
        for hl, values in items:
            if drop and self.hparams.condition_dropout > 0:
                keys = [k for k in self.tokenizer.keys if k in DROPPABLE_KEYS]
                keep = torch.rand(len(keys), generator=self._dropout) >= self.hparams.condition_dropout
                values = {k: (v if k not in keys or keep[keys.index(k)] else None) for k, v in values.items()}
            sequences.append(self.tokenizer.encode(hl, values))
        width = max(map(len, sequences))
        ids = torch.full((len(sequences), width), PAD, dtype=torch.long)
        labels = torch.full_like(ids, -100)
        for row, seq in enumerate(sequences):
            ids[row, : len(seq)] = torch.tensor(seq)
            start = seq.index(SEP) + 1
            labels[row, start: len(seq)] = ids[row, start: len(seq)]
        return {"input_ids": ids, "attention_mask": (torch.arange(width) < torch.tensor([len(s) for s in sequences])
                                                     [:, None]).long(), "labels": labels}

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_items, batch_size=self.hparams.batch_size, shuffle=True,
                          collate_fn=lambda items: self.collate(items, drop=True))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_items, batch_size=self.hparams.batch_size,
                          collate_fn=lambda items: self.collate(items, drop=False))

    def draw_cells(self, hl: HLArch, rng: random.Random) -> list[Cell]:
        """One cell per stage of ``hl``, drawn from the cells the search used for that stage's cluster."""
        missing = {s.cluster for s in hl.stages} - set(self.cluster_cells)
        if missing:
            raise ValueError(f"no cells of cluster(s) {sorted(missing)} in the history")
        return [rng.choice(self.cluster_cells[s.cluster]) for s in hl.stages]
