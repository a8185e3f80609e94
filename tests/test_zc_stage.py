"""Stage ``zc``: sampling into the archive, ZC vectors, resumability after kill -9, failures recorded, metrics."""

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch

from lightning_nas.archive import Archive, ArchiveError
from lightning_nas.datasets.files import read_jsonl
from lightning_nas.space import Cell, sample_cells
from lightning_nas.zc import Probe, zc_vector
from lightning_nas.zc import predict as zc_predict
from lightning_nas.zc.stage import ProbeConfig, ZCStageConfig, run_zc_stage
from tests.conftest import REPO

SMALL = {"op_set": "nb201", "unlabelled": 30, "labelled": 5, "seed": 3, "run": "test"}
PROBE = ProbeConfig(source="gaussian", seed=1, batch_size=8)


def config(tmp_path, **kw):
    return ZCStageConfig(workdir=str(tmp_path), probe=PROBE, threads=1, **{**SMALL, **kw})


def test_stage_fills_archive_and_writes_metrics(tmp_path):
    metrics = run_zc_stage(config(tmp_path))
    saved = json.loads((tmp_path / "zc" / "metrics.json").read_text())
    assert saved == metrics
    assert metrics["cells"] == 30 and metrics["labelled"] == 5 and metrics["failed"] == 0
    assert metrics["evals_per_s"] > 0
    with Archive(tmp_path / "archive.sqlite") as archive:
        (probe_id,) = archive.probes()
        x, y, info = archive.get_probe(probe_id)
        probe = Probe.from_source("gaussian", seed=1, batch_size=8)
        assert torch.equal(x, probe.x) and torch.equal(y, probe.y) and info["source"] == "gaussian"
        rows = archive.zc(probe_id)
        # the labelled cells are the first five in sample order, and their stored vector is the real one
        first = [h for h, _ in archive.iter_cells(limit=5)]
        assert sorted(rows) == sorted(first)
        cell = archive.get_cell(first[0])
        assert rows[first[0]] == pytest.approx(zc_vector(cell, probe))
        assert set(rows[first[0]]) == {"naswot", "snip_ssnr", "params", "flops", "tcet"}
        normaliser = archive.get_normaliser(probe_id)
    assert normaliser == json.loads((tmp_path / "zc" / "normaliser.json").read_text())
    assert json.loads((tmp_path / "zc" / "config.json").read_text())["probe_id"] == probe_id

    again = run_zc_stage(config(tmp_path))  # nothing left to do: nothing recomputed
    assert again["evaluated_this_run"] == 0 and again["labelled"] == 5


def test_transfer_labels_only_cells_outside_nb201(tmp_path):
    """labelled_shape: any — the NB201 cells are all in the archive unlabelled, and every ZC row is of a cell
    outside NB201, after the NB201 cells in sample order (so the rows come back in one order in any process)."""
    from lightning_nas.space.nb201 import nb201_from_cell, sample_nb201_cells

    distinct = len({cell.canonical_hash() for cell in sample_nb201_cells(40, seed=3)})  # isomorphic strings: one cell
    metrics = run_zc_stage(config(tmp_path, shape="nb201", unlabelled=40, labelled=4, labelled_shape="any"))
    assert metrics["labelled"] == 4 and metrics["cells"] == distinct + 4
    with Archive(tmp_path / "archive.sqlite") as archive:
        (probe_id,) = archive.probes()
        rows = archive.zc_rows(probe_id)
        cells = [archive.get_cell(r["hash"]) for r in rows]
        all_cells = [cell for _, cell in archive.iter_cells()]
    assert all(nb201_from_cell(cell) is None for cell in cells)
    assert sum(nb201_from_cell(cell) is not None for cell in all_cells) == distinct
    assert [c.canonical_hash() for c in all_cells[distinct:]] == [r["hash"] for r in rows]
    with pytest.raises(ValueError, match="labelled_shape"):
        config(tmp_path, labelled_shape="any")  # needs shape: nb201
    with pytest.raises(ValueError, match="labelled_shape"):
        config(tmp_path, shape="nb201", labelled_shape="nb201")


def test_failures_are_stored_with_reason_and_the_run_goes_on(tmp_path, monkeypatch):
    real = zc_predict.cell_scores
    calls = []

    def flaky(cell, probe):
        calls.append(cell)
        if len(calls) == 2:
            raise RuntimeError("NaN in the loss")
        values, problems, seconds = real(cell, probe)
        if len(calls) == 3:
            problems = {"naswot": "singular kernel: sentinel 0"}
        return values, problems, seconds

    monkeypatch.setattr(zc_predict, "cell_scores", flaky)
    metrics = run_zc_stage(config(tmp_path))
    assert metrics["labelled"] == 3 and metrics["failed"] == 2
    with Archive(tmp_path / "archive.sqlite") as archive:
        rows = {r["hash"]: r for r in archive.zc_rows(archive.probes()[0])}
    failed = [r for r in rows.values() if r["status"] == "failed"]
    assert sorted(r["reason"] for r in failed) == ["RuntimeError: NaN in the loss",
                                                   "naswot: singular kernel: sentinel 0"]
    # a failed row is final: a rerun does not retry it
    monkeypatch.setattr(zc_predict, "cell_scores", lambda *a: pytest.fail("recomputed a stored evaluation"))
    assert run_zc_stage(config(tmp_path))["evaluated_this_run"] == 0


def _shard_rows(workdir) -> dict[str, dict]:
    rows = {}
    for path in sorted((workdir / "zc" / "shards").glob("*.jsonl")):
        rows.update((r["hash"], r) for r in read_jsonl(path))
    return rows


def test_kill_minus_nine_of_one_rank_then_rerun_loses_and_duplicates_nothing(tmp_path):
    """Two ranks (gloo); kill -9 one of them mid-run (the launcher then stops the job); run again: the rows the
    killed job had written to its shards are merged, not recomputed, and every cell ends with exactly one row."""
    import psutil

    args = [sys.executable, "-m", "lightning_nas", "zc", "--config", str(REPO / "configs" / "zc" / "tiny.yaml"),
            f"--workdir={tmp_path}", "--op_set=graphnet", "--unlabelled=40", "--labelled=24", "--workers=2",
            "--threads=1", "--probe.source=gaussian", "--probe.batch_size=8", "--wandb=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 240
    done = 0
    while time.time() < deadline and done < 3 and proc.poll() is None:
        time.sleep(0.1)
        done = len(_shard_rows(tmp_path)) if (tmp_path / "zc" / "shards").exists() else 0
    ranks = [c for c in psutil.Process(proc.pid).children(recursive=True) if "python" in c.name()]
    assert ranks, "no rank process found"
    ranks[-1].send_signal(signal.SIGKILL)  # one rank dies; the launcher takes the job down
    try:
        proc.wait(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    # what the job had scored: rows rank 0 merged as the job went down, and shard rows nobody merged
    in_shards = _shard_rows(tmp_path)
    with Archive(tmp_path / "archive.sqlite") as archive:
        before = {r["hash"]: r for r in archive.zc_rows(archive.probes()[0])}
    assert not set(before) & set(in_shards)
    before.update(in_shards)
    assert 3 <= len(before) < 24, f"expected a job killed midway, saw {len(before)} rows"

    finished = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    metrics = json.loads((tmp_path / "zc" / "metrics.json").read_text())
    assert metrics["labelled"] + metrics["failed"] == 24
    assert metrics["recovered_from_shards"] == len(in_shards)
    assert metrics["evaluated_this_run"] == 24 - len(before)  # only what was missing
    with Archive(tmp_path / "archive.sqlite") as archive:
        probe_id = archive.probes()[0]
        after = {r["hash"]: r for r in archive.zc_rows(probe_id)}
        assert archive.zc_claims(probe_id) == []
    assert len(after) == 24
    for h, row in before.items():  # kept as the killed job scored them
        assert after[h]["values"] == row["values"] and after[h]["seconds"] == row["seconds"]
    with sqlite3.connect(tmp_path / "archive.sqlite") as con:
        assert con.execute("SELECT COUNT(*), COUNT(DISTINCT probe_id || cell_hash) FROM zc").fetchone() == (24, 24)
    assert list((tmp_path / "zc" / "shards").glob("*.jsonl")) == []


def test_shards_cut_short_are_read_up_to_the_last_whole_row_and_live_runs_shards_are_left(tmp_path):
    probe_id = "p"
    with Archive(tmp_path / "archive.sqlite", op_set="nb201") as archive:
        cells = list(sample_cells(3, seed=0, op_set="nb201"))
        archive.add_cells(cells, run="t", stage="zc", start_index=0)
        hashes = [c.canonical_hash() for c in cells]
        archive.claim_zc(probe_id, hashes[2:], 1, "live-run")  # a run of this process: alive
        shards = tmp_path / "shards"
        shards.mkdir()
        row = {"values": {"naswot": 1.0}, "status": "ok", "reason": "", "seconds": 0.5}
        dead = zc_predict.shard_path(shards, "dead:1:x", 0)
        dead.write_text(json.dumps({"hash": hashes[0], **row}) + "\n" + json.dumps({"hash": hashes[1], **row})[:20])
        live = zc_predict.shard_path(shards, "live-run", 1)
        live.write_text(json.dumps({"hash": hashes[2], **row}) + "\n")
        assert zc_predict.orphaned_shards(archive, probe_id, shards) == [dead]
        assert zc_predict.merge_shards(archive, probe_id, [dead]) == 1  # the torn second row is skipped
        assert list(archive.zc(probe_id)) == [hashes[0]] and not dead.exists() and live.exists()
        assert zc_predict.merge_shards(archive, probe_id, [live]) == 1


def _stand_in_vector(cell_hash: str) -> dict[str, float]:
    return {name: float(int(cell_hash[:8], 16) + k) for k, name in enumerate(("naswot", "snip_ssnr", "params",
                                                                               "flops", "tcet"))}


def _counted_zc_run(workdir: str, name: str, barrier) -> None:
    """One zc run in a process of its own (as a second `python -m lightning_nas zc` would be) whose evaluations are a
    0.3 s stand-in, logged to ``<workdir>/evaluated-<name>.txt``; its metrics go to ``metrics-<name>.json``."""
    from pathlib import Path

    log = Path(workdir) / f"evaluated-{name}.txt"

    def counted(cell, probe):
        with open(log, "a") as f:
            f.write(cell.canonical_hash() + "\n")
        time.sleep(0.3)
        return _stand_in_vector(cell.canonical_hash()), {}, 0.3

    zc_predict.cell_scores = counted
    barrier.wait(timeout=120)  # both runs start together, after their imports
    metrics = run_zc_stage(config(workdir, labelled=LABELLED_TOGETHER))
    (Path(workdir) / f"metrics-{name}.json").write_text(json.dumps(metrics))


LABELLED_TOGETHER = 10


def test_two_runs_on_one_archive_evaluate_each_cell_once(tmp_path):
    """Two zc processes started together on one archive share the pending cells: each is evaluated exactly once,
    and the archive ends with every labelled cell's vector and no claim left."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_counted_zc_run, args=(str(tmp_path), name, barrier)) for name in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(240)
    assert [p.exitcode for p in procs] == [0, 0]
    evaluated = {name: (tmp_path / f"evaluated-{name}.txt").read_text().split() if
                 (tmp_path / f"evaluated-{name}.txt").exists() else [] for name in "ab"}
    metrics = {name: json.loads((tmp_path / f"metrics-{name}.json").read_text()) for name in "ab"}
    with Archive(tmp_path / "archive.sqlite") as archive:
        (probe_id,) = archive.probes()
        labelled = [h for h, _ in archive.iter_cells(limit=LABELLED_TOGETHER)]
        vectors = archive.zc(probe_id)
        claims = archive.zc_claims(probe_id)
    every = evaluated["a"] + evaluated["b"]
    assert len(every) == LABELLED_TOGETHER, f"{len(every)} evaluations of {LABELLED_TOGETHER} cells: {evaluated}"
    assert sorted(every) == sorted(labelled)  # each labelled cell once, by one of the runs
    assert metrics["a"]["evaluated_this_run"] + metrics["b"]["evaluated_this_run"] == LABELLED_TOGETHER
    assert vectors == {h: _stand_in_vector(h) for h in labelled}
    assert metrics["a"]["labelled"] == metrics["b"]["labelled"] == LABELLED_TOGETHER  # each waited for the other
    assert claims == []


def test_two_ranks_give_exactly_the_archive_rows_of_one_process(tmp_path):
    """workers: 2 — Lightning's predict loop on two gloo processes (ddp_spawn) — stores the same cells with the same
    rows (values, status, reason) as one process."""
    one = tmp_path / "one"
    two = tmp_path / "two"
    m1 = run_zc_stage(config(one, labelled=6))
    m2 = run_zc_stage(config(two, labelled=6, workers=2))
    assert (m1["processes"], m2["processes"]) == (1, 2) and m2["evaluated_this_run"] == 6
    with Archive(one / "archive.sqlite") as a, Archive(two / "archive.sqlite") as b:
        assert [h for h, _ in a.iter_cells()] == [h for h, _ in b.iter_cells()]
        rows_a, rows_b = a.zc_rows(a.probes()[0]), b.zc_rows(b.probes()[0])
    keep = ("hash", "values", "status", "reason")
    assert [{k: r[k] for k in keep} for r in rows_a] == [{k: r[k] for k in keep} for r in rows_b]
    assert len(rows_a) == 6 and all(r["status"] == "ok" for r in rows_a)
    assert list((two / "zc" / "shards").glob("*.jsonl")) == []


def test_bad_settings_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="labelled"):
        config(tmp_path, labelled=50)
    with pytest.raises(ValueError, match="op_set"):
        config(tmp_path, op_set="darts")
    with pytest.raises(ValueError, match="probe.source"):
        ZCStageConfig(workdir=str(tmp_path), probe=ProbeConfig(source="imagenet"))
    run_zc_stage(config(tmp_path, labelled=0))
    with pytest.raises(ArchiveError, match="op_set"):
        run_zc_stage(config(tmp_path, op_set="graphnet", labelled=0))
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        Probe.from_source("cifar10", data_dir=tmp_path)


def test_cifar10_probe_from_a_generated_data_dir(tmp_path):
    """The cifar10 source reads torchvision's python-format CIFAR-10 from data_dir (here a tiny generated copy)."""
    import pickle

    import numpy as np

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, 20).tolist()}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f)
    probe = Probe.from_source("cifar10", seed=0, batch_size=16, data_dir=tmp_path)
    assert probe.x.shape == (16, 3, 32, 32) and probe.y.shape == (16,)
    assert Probe.from_source("cifar10", seed=0, batch_size=16, data_dir=tmp_path).id == probe.id
    assert abs(probe.x.mean().item()) < 0.5  # normalised
    cell = Cell.random(seed=0, op_set="nb201")
    assert zc_vector(cell, probe)["params"] > 0
