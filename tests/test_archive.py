"""The SQLite archive: round trips, first-write-wins ZC rows, concurrent writers, foreign files, kill -9, injection."""

import itertools
import math
import multiprocessing
import os
import pickle
import random
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
import torch

from lightning_nas.archive import SCHEMA_VERSION, Archive, ArchiveError, ArchiveNotFoundError
from lightning_nas.space.cell import Cell, sample_cells
from lightning_nas.space.nb201 import cell_from_nb201

REPO = Path(__file__).resolve().parents[1]
INJECTION = "x'); DROP TABLE cells; --"


def _relabelled(cell: Cell) -> Cell | None:
    """An isomorphic cell with different op numbering (and a different labelled form), if the cell has one."""
    n = cell.num_op_nodes
    for order in itertools.permutations(range(1, n + 1)):
        pos = {0: 0, n + 1: n + 1} | {old: k + 1 for k, old in enumerate(order)}
        if list(order) != list(range(1, n + 1)) and all(pos[i] < pos[j] for i, j in cell.edges):
            other = cell.relabel(order)
            if other != cell:
                return other
    return None


def _raw(path) -> sqlite3.Connection:
    return closing(sqlite3.connect(path))


# ---- 1. round trips ------------------------------------------------------------------------------
def test_cells_round_trip_dedup_and_sample_order(tmp_path):
    cells = list(dict((c.canonical_hash(), c) for c in sample_cells(40, seed=3)).values())[:30]
    with Archive(tmp_path / "a.sqlite", op_set="graphnet") as archive:
        assert archive.op_set == "graphnet"
        # Insert out of order; explicit sample indices decide the iteration order.
        assert archive.add_cells(cells[10:20], run="r", stage="zc", start_index=10) == 10
        assert archive.add_cells(cells[:10], run="r", stage="zc", start_index=0) == 10
        assert archive.add_cells(cells[:20], start_index=0) == 0
        # start_index=None continues after the largest index.
        assert archive.add_cells(cells[20:], run="r2") == 10
        assert archive.num_cells() == 30
        listed = list(archive.iter_cells())
        assert [h for h, _ in listed] == [c.canonical_hash() for c in cells]
        assert [c for _, c in listed] == cells
        assert [h for h, _ in archive.iter_cells(limit=7, offset=12)] == [c.canonical_hash() for c in cells[12:19]]
        assert list(archive.iter_cells(limit=0)) == []
        for cell in cells[:5]:
            assert archive.get_cell(cell.canonical_hash()) == cell
        with pytest.raises(KeyError):
            archive.get_cell("0" * 32)

        # An isomorphic relabelled cell is the same entry.
        base, twin = next((c, t) for c in sample_cells(200, seed=5) if (t := _relabelled(c)) is not None)
        assert twin != base and twin.canonical_hash() == base.canonical_hash()
        assert archive.add_cells([base]) == 1
        assert archive.add_cells([twin]) == 0
        assert archive.num_cells() == 31
        assert archive.get_cell(base.canonical_hash()) == base

    with _raw(tmp_path / "a.sqlite") as con:
        rows = con.execute("SELECT run, stage, sample_index FROM cells ORDER BY sample_index").fetchall()
    assert rows[0] == ("r", "zc", 0) and rows[29] == ("r2", "", 29) and rows[30][2] == 30


def test_op_set_is_enforced(tmp_path):
    nb201_cell = cell_from_nb201(
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    )
    with Archive(tmp_path / "nb.sqlite", op_set="nb201") as archive:
        assert archive.add_cells([nb201_cell]) == 1
        graphnet_only = next(c for c in sample_cells(50, seed=1) if not c.uses_only("nb201"))
        with pytest.raises(ArchiveError, match="op_set"):
            archive.add_cells([graphnet_only])
    with Archive(tmp_path / "nb.sqlite", create=False) as archive:
        assert archive.op_set == "nb201"
    # An archive made without an op set records the first one it is opened with.
    with Archive(tmp_path / "free.sqlite") as archive:
        assert archive.op_set is None
        archive.add_cells([nb201_cell])
    with Archive(tmp_path / "free.sqlite", op_set="nb201") as archive:
        assert archive.op_set == "nb201"


def test_probe_round_trip_bit_identical(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 8, 8, generator=g)
    x[0, 0, 0, 0] = float("nan")
    x[0, 0, 0, 1] = -0.0
    y = torch.tensor([3, 1, 4, 1], dtype=torch.int64)
    with Archive(tmp_path / "a.sqlite") as archive:
        archive.add_probe("digits-0", "digits", 0, x, y, meta={"size": 8})
        archive.add_probe("digits-0", "digits", 0, x.clone(), y.clone(), meta={"other": 1})  # idempotent
        archive.add_probe("noise-7", "gaussian", 7, torch.randn(2, 1, 4, generator=g, dtype=torch.float64), y[:2])
        assert archive.probes() == ["digits-0", "noise-7"]
        x2, y2, info = archive.get_probe("digits-0")
        assert x2.dtype == x.dtype and x2.shape == x.shape
        assert x2.view(torch.int32).equal(x.view(torch.int32))  # bit-identical, NaN and -0.0 included
        assert y2.equal(y) and y2.dtype == torch.int64
        assert info["source"] == "digits" and info["seed"] == 0 and info["meta"] == {"size": 8}
        assert archive.get_probe("noise-7")[0].dtype == torch.float64
        with pytest.raises(ArchiveError, match="different tensors"):
            archive.add_probe("digits-0", "digits", 0, x + 1, y)
        with pytest.raises(ArchiveError, match="seed"):
            archive.add_probe("digits-0", "digits", 1, x, y)
        with pytest.raises(ValueError, match="source"):
            archive.add_probe("imagenet", "imagenet", 0, x, y)
        with pytest.raises(KeyError):
            archive.get_probe("missing")
    with _raw(tmp_path / "a.sqlite") as con:
        blob = con.execute("SELECT tensors FROM probes WHERE id = 'digits-0'").fetchone()[0]
    with pytest.raises(pickle.UnpicklingError):  # safetensors bytes, not a pickle
        pickle.loads(blob)


def test_zc_rows_come_back_in_sample_order_whatever_order_workers_wrote_them(tmp_path):
    """#20 item 6: parallel zc workers finish in any order; readers (the normaliser's sums, clustering) must not
    see that order, or two runs of one config differ in the last bits and then in the architecture."""
    cells = list(sample_cells(6, seed=0, op_set="graphnet"))
    with Archive(tmp_path / "a.sqlite", op_set="graphnet") as archive:
        archive.add_cells(cells, start_index=0)
        for i in (4, 1, 5, 0, 3, 2):  # the order the workers happened to finish in
            archive.add_zc(cells[i].canonical_hash(), "p", {"naswot": float(i)})
        archive.add_zc("not-a-stored-cell", "p", {"naswot": -1.0})
        assert list(archive.zc("p")) == [c.canonical_hash() for c in cells] + ["not-a-stored-cell"]
        assert [r["values"]["naswot"] for r in archive.zc_rows("p")] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, -1.0]


def test_zc_normaliser_and_arch_round_trip(tmp_path):
    values = {"naswot": 812.5, "snip_ssnr": float("nan"), "params": float("inf"), "flops": -float("inf")}
    with Archive(tmp_path / "a.sqlite") as archive:
        assert archive.add_zc("h1", "p", values, seconds=0.25)
        assert archive.add_zc("h2", "p", None, status="failed", reason="singular kernel in NASWOT", seconds=0.5)
        assert archive.add_zc("h3", "p", {"naswot": 1.0}, status="failed", reason="NaN gradient")
        assert archive.add_zc("h1", "q", {"naswot": 2})
        got = archive.zc("p")
        assert list(got) == ["h1"]
        assert got["h1"]["naswot"] == 812.5 and math.isnan(got["h1"]["snip_ssnr"])
        assert got["h1"]["params"] == math.inf and got["h1"]["flops"] == -math.inf
        assert archive.zc("p", status="failed") == {"h3": {"naswot": 1.0}}
        assert set(archive.zc("p", status=None)) == {"h1", "h3"}
        rows = {r["hash"]: r for r in archive.zc_rows("p")}
        assert rows["h2"]["status"] == "failed" and rows["h2"]["values"] is None
        assert rows["h2"]["reason"] == "singular kernel in NASWOT" and rows["h2"]["seconds"] == 0.5
        assert rows["h1"]["status"] == "ok" and rows["h1"]["reason"] == ""
        assert archive.count_zc("p") == {"ok": 1, "failed": 2}
        assert archive.count_zc("none") == {"ok": 0, "failed": 0}
        with pytest.raises(ValueError, match="values"):
            archive.add_zc("h4", "p", None)  # an ok row needs values
        with pytest.raises(ValueError, match="status"):
            archive.add_zc("h4", "p", {}, status="maybe")

        norm = {"mean": [1.0, 2.0], "std": [0.5, 3.0], "log": ["params", "flops"]}
        assert archive.get_normaliser("p") is None
        archive.set_normaliser("p", norm)
        assert archive.get_normaliser("p") == norm
        archive.set_normaliser("p", norm | {"mean": [0.0, 0.0]})
        assert archive.get_normaliser("p")["mean"] == [0.0, 0.0]

        spec = {"stages": [{"cell": {"ops": ["conv_k3"], "edges": [[0, 1], [1, 2]]}, "channels": 16}]}
        a1 = archive.add_arch(
            spec,
            {"tcet": 1.5, "params": 1000},
            hl_spec={"stages": [{"cluster": 2}]},
            budget={"max_params": 5000, "unit": "params"},
            stage="search",
            run="r",
        )
        a2 = archive.add_arch(spec, stage="final", run="r")
        assert a2 == a1 + 1
        everything = archive.archs()
        assert [a["id"] for a in everything] == [a1, a2]
        first = archive.archs(stage="search")[0]
        assert first["spec"] == spec and first["metrics"] == {"tcet": 1.5, "params": 1000}
        assert first["hl_spec"] == {"stages": [{"cluster": 2}]} and first["budget"]["unit"] == "params"
        second = archive.archs(stage="final", run="r")[0]
        assert second["metrics"] == {} and second["hl_spec"] is None and second["budget"] is None
        assert archive.archs(run="other") == []
    with Archive(tmp_path / "a.sqlite", create=False) as archive:  # persisted
        assert archive.count_zc("p") == {"ok": 1, "failed": 2} and len(archive.archs()) == 2


# ---- 2. first write wins -------------------------------------------------------------------------
def test_add_zc_keeps_first_row_and_pending(tmp_path):
    hashes = [c.canonical_hash() for c in sample_cells(6, seed=11)]
    with Archive(tmp_path / "a.sqlite") as archive:
        assert archive.add_zc(hashes[0], "p", {"naswot": 1.0}, seconds=1.0)
        before = archive.zc_rows("p")[0]
        time.sleep(0.01)
        assert not archive.add_zc(hashes[0], "p", {"naswot": 2.0}, seconds=9.0)
        assert not archive.add_zc(hashes[0], "p", None, status="failed", reason="later")
        assert archive.zc_rows("p") == [before]
        assert archive.add_zc(hashes[1], "p", None, status="failed", reason="NaN")
        assert (
            archive.add_zc_many(
                [(hashes[1], "p", {"naswot": 3.0}, "ok", "", 0.1), (hashes[2], "p", {"naswot": 4.0}, "ok", "", 0.1)]
            )
            == 1
        )
        assert archive.zc("p", status="failed") == {}  # h1 failed without values
        assert archive.pending("p", reversed(hashes)) == [hashes[5], hashes[4], hashes[3]]
        assert archive.pending("p", [hashes[3], hashes[0], hashes[3]]) == [hashes[3]]
        assert archive.pending("other", hashes[:2]) == hashes[:2]
        with pytest.raises(ValueError):  # validated before writing: nothing of the batch lands
            archive.add_zc_many([(hashes[3], "p", {"naswot": 1.0}, "ok", "", 0.0), (hashes[4], "p")])
        assert archive.count_zc("p") == {"ok": 2, "failed": 1}


# ---- 3. concurrent writers -----------------------------------------------------------------------
N_WORKERS, PER_WORKER, STRIDE = 4, 200, 100


def _concurrent_worker(path: str, k: int, barrier) -> None:
    cells = list(sample_cells(STRIDE * (N_WORKERS - 1) + PER_WORKER, seed=21))[k * STRIDE : k * STRIDE + PER_WORKER]
    with Archive(path, create=False) as archive:
        barrier.wait()
        batch = []
        for i, cell in enumerate(cells):
            h = cell.canonical_hash()
            archive.add_cells([cell], run=f"worker{k}", start_index=k * STRIDE + i)
            archive.add_zc(h, "p", {"naswot": float(i), "worker": float(k)}, seconds=0.01)
            batch.append((h, "q", None, "failed", f"worker {k}", 0.0))
            if len(batch) == 5:
                archive.add_zc_many(batch)
                batch = []
        archive.add_zc_many(batch)


def test_concurrent_writers(tmp_path):
    path = tmp_path / "a.sqlite"
    Archive(path).close()
    all_cells = list(sample_cells(STRIDE * (N_WORKERS - 1) + PER_WORKER, seed=21))
    union = {c.canonical_hash() for c in all_cells}
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(N_WORKERS)
    procs = [ctx.Process(target=_concurrent_worker, args=(str(path), k, barrier)) for k in range(N_WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * N_WORKERS
    for p in procs:
        p.close()
    with Archive(path, create=False) as archive:
        assert archive.num_cells() == len(union)
        assert {h for h, _ in archive.iter_cells()} == union
        assert archive.count_zc("p") == {"ok": len(union), "failed": 0}
        assert archive.count_zc("q") == {"ok": 0, "failed": len(union)}
        assert archive.pending("p", union) == [] and archive.pending("q", union) == []
    with _raw(path) as con:
        assert con.execute("SELECT COUNT(*), COUNT(DISTINCT hash) FROM cells").fetchone() == (len(union),) * 2
        assert (
            con.execute("SELECT COUNT(*), COUNT(DISTINCT probe_id || ':' || cell_hash) FROM zc").fetchone()
            == (2 * len(union),) * 2
        )
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# ---- 4. foreign and incompatible files -----------------------------------------------------------
def _assert_refused(path: Path, match: str, **kwargs) -> None:
    before = path.read_bytes()
    siblings = sorted(p.name for p in path.parent.iterdir())
    with pytest.raises(ArchiveError, match=match) as info:
        Archive(path, **kwargs)
    assert str(path) in str(info.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == siblings


def test_foreign_files_are_refused_untouched(tmp_path):
    text = tmp_path / "notes" / "a.sqlite"
    text.parent.mkdir()
    text.write_text("hello, this is not a database\n")
    _assert_refused(text, "not an SQLite database")

    noise = tmp_path / "noise" / "a.sqlite"
    noise.parent.mkdir()
    noise.write_bytes(random.Random(0).randbytes(8192))
    _assert_refused(noise, "not an SQLite database")

    foreign = tmp_path / "foreign" / "a.sqlite"
    foreign.parent.mkdir()
    with _raw(foreign) as con:
        con.execute("CREATE TABLE results (model TEXT, accuracy REAL)")
        con.execute("INSERT INTO results VALUES ('resnet', 0.9)")
        con.commit()
    _assert_refused(foreign, "without a lightning-nas 'meta' table")
    _assert_refused(foreign, "meta", create=False)

    other_meta = tmp_path / "other_meta" / "a.sqlite"
    other_meta.parent.mkdir()
    with _raw(other_meta) as con:
        con.execute("CREATE TABLE meta (key TEXT, value TEXT)")
        con.execute("INSERT INTO meta VALUES ('format', 'someone-else')")
        con.commit()
    _assert_refused(other_meta, "format")

    newer = tmp_path / "newer" / "a.sqlite"
    newer.parent.mkdir()
    with Archive(newer, op_set="graphnet") as archive:
        archive.add_zc("h", "p", {"naswot": 1.0})
    with _raw(newer) as con:
        con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
        con.commit()
    _assert_refused(newer, f"schema_version '{SCHEMA_VERSION + 1}'")


def test_an_archive_of_schema_version_1_is_migrated_on_opening(tmp_path):
    """A version-1 archive (before clusters, ZC claims and latencies had their tables) opens as the current version:
    the tables of MIGRATIONS are created, meta.schema_version follows, and the stored rows are untouched."""
    from lightning_nas.archive import MIGRATIONS

    path = tmp_path / "old.sqlite"
    cells = list(dict((c.canonical_hash(), c) for c in sample_cells(8, seed=3)).values())[:4]
    with Archive(path, op_set="graphnet") as archive:
        archive.add_cells(cells)
        archive.add_zc(cells[0].canonical_hash(), "p", {"naswot": 1.5})
    with _raw(path) as con:  # what an archive written by version 1 looked like
        for table in ("clusters", "zc_claims", "latency"):
            con.execute(f"DROP TABLE {table}")
        con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        con.commit()
    assert sorted(MIGRATIONS) == list(range(2, SCHEMA_VERSION + 1))
    with Archive(path, create=False) as archive:
        assert archive.num_cells() == 4 and archive.zc("p") == {cells[0].canonical_hash(): {"naswot": 1.5}}
        assert archive.clusters("any") == {} and archive.zc_claims("p") == [] and archive.latencies() == []
        archive.set_clusters("p", {cells[0].canonical_hash(): 0})
        assert archive.clusters("p") == {cells[0].canonical_hash(): 0}
    with _raw(path) as con:
        assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"clusters", "zc_claims", "latency"} <= tables


def test_op_set_mismatch_and_missing_file(tmp_path):
    path = tmp_path / "a.sqlite"
    with Archive(path, op_set="graphnet") as archive:
        archive.add_cells(sample_cells(3))
    _assert_refused(path, "op_set 'graphnet'.*op_set 'nb201'", op_set="nb201")
    with pytest.raises(ValueError, match="unknown op set"):
        Archive(path, op_set="bogus")

    missing = tmp_path / "missing" / "a.sqlite"
    with pytest.raises(ArchiveNotFoundError, match="no such archive") as info:
        Archive(missing, create=False)
    assert isinstance(info.value, FileNotFoundError) and str(missing) in str(info.value)
    assert not missing.parent.exists()


def test_archive_stays_in_its_process(tmp_path):
    with Archive(tmp_path / "a.sqlite") as archive:
        with pytest.raises(TypeError, match="open a new Archive"):
            pickle.dumps(archive)
    with pytest.raises(ArchiveError, match="closed"):
        archive.num_cells()


# ---- 5. a killed writer loses nothing committed --------------------------------------------------
_WRITER = """
import sys
from lightning_nas.archive import Archive
archive = Archive(sys.argv[1], create=False)
for i in range(1_000_000):
    archive.add_zc(f"cell-{i}", "p", {"naswot": float(i)}, seconds=0.001)
    print(i, flush=True)
"""


def test_killed_writer_loses_nothing_committed(tmp_path):
    path = tmp_path / "a.sqlite"
    Archive(path).close()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env)
    printed = []
    try:
        deadline = time.monotonic() + 60
        while len(printed) < 20 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            printed.append(int(line))
        proc.kill()
        proc.wait(30)
        printed += [int(line) for line in proc.stdout.read().split()]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert len(printed) >= 20, f"writer printed only {printed}"
    assert proc.returncode == -9
    with Archive(path, create=False) as archive:
        done = archive.zc("p")
    assert all(f"cell-{i}" in done and done[f"cell-{i}"]["naswot"] == i for i in printed)
    assert len(done) in (len(printed), len(printed) + 1)  # at most one committed but not yet printed
    with _raw(path) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# ---- 6. SQL injection ----------------------------------------------------------------------------
def test_sql_injection_is_stored_verbatim(tmp_path):
    cell = Cell.random(seed=0)
    with Archive(tmp_path / "a.sqlite") as archive:
        archive.add_cells([cell], run=INJECTION, stage=INJECTION)
        archive.add_zc(INJECTION, INJECTION, None, status="failed", reason=INJECTION)
        archive.add_arch({"name": INJECTION}, {INJECTION: 1.0}, stage=INJECTION, run=INJECTION)
        archive.set_normaliser(INJECTION, {"note": INJECTION})
        assert archive.num_cells() == 1
        assert archive.zc_rows(INJECTION)[0]["reason"] == INJECTION
        assert archive.zc_rows(INJECTION)[0]["hash"] == INJECTION
        assert archive.pending(INJECTION, [INJECTION, "x"]) == ["x"]
        (arch,) = archive.archs(stage=INJECTION, run=INJECTION)
        assert arch["spec"] == {"name": INJECTION} and arch["metrics"] == {INJECTION: 1.0}
        assert archive.get_normaliser(INJECTION) == {"note": INJECTION}
    with _raw(tmp_path / "a.sqlite") as con:
        assert con.execute("SELECT run, stage FROM cells").fetchone() == (INJECTION, INJECTION)
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_probe_round_trips_through_the_archive_and_ambiguity_is_refused(tmp_path):
    from lightning_nas.zc import Probe

    probe = Probe.from_source("gaussian", seed=3, batch_size=4)
    with Archive(tmp_path / "a.sqlite") as archive:
        with pytest.raises(ValueError, match="no probe and no ZC vectors yet; run the zc stage"):
            Probe.from_archive(archive)
        archive.add_probe(probe.id, probe.source, probe.seed, probe.x, probe.y)
        loaded = Probe.from_archive(archive)
        assert loaded.id == probe.id and torch.equal(loaded.x, probe.x) and torch.equal(loaded.y, probe.y)
        other = Probe.from_source("gaussian", seed=4, batch_size=4)
        archive.add_probe(other.id, other.source, other.seed, other.x, other.y)
        with pytest.raises(ValueError, match="2 probes.*probe: <id>"):
            Probe.from_archive(archive)
        assert Probe.from_archive(archive, other.id).id == other.id
        with pytest.raises(ValueError, match="no probe 'x'"):
            archive.resolve_probe("x")


# ---- 7. I/O errors name the file and what to do ----------------------------------------------------------------
def _corrupt_pages(path: Path, first_page: int) -> None:
    """Overwrite the start of every page from ``first_page`` (1-based) on with garbage."""
    data = bytearray(path.read_bytes())
    size = int.from_bytes(data[16:18], "big")
    rng = random.Random(0)
    for offset in range(size * (first_page - 1), len(data), size):
        data[offset : offset + 200] = rng.randbytes(200)
    path.write_bytes(bytes(data))


def test_a_corrupted_archive_names_the_file_and_what_to_do(tmp_path):
    advice = r"corrupted.*restore it from a backup, or delete it .*to start again; the zc stage rebuilds missing rows"
    path = tmp_path / "archive.sqlite"
    with Archive(path, op_set="graphnet") as archive:
        archive.add_cells(sample_cells(400, seed=0))
    with _raw(path) as con:
        last_root = con.execute("SELECT MAX(rootpage) FROM sqlite_master").fetchone()[0]
    _corrupt_pages(path, last_root + 1)  # the cells' rows only: the schema and meta still read
    with Archive(path, op_set="graphnet") as archive:
        with pytest.raises(ArchiveError, match=advice) as info:
            list(archive.iter_cells())
        assert f"{path}: " in str(info.value) and "database disk image is malformed" in str(info.value)
        with pytest.raises(ArchiveError, match=advice):
            archive.add_cells(sample_cells(400, seed=1))

    broken = tmp_path / "broken" / "archive.sqlite"  # the meta table too: opening says so
    broken.parent.mkdir()
    with Archive(broken, op_set="graphnet") as archive:
        archive.add_cells(sample_cells(20, seed=0))
    _corrupt_pages(broken, 2)
    with pytest.raises(ArchiveError, match=advice) as info:
        Archive(broken)
    assert str(broken) in str(info.value)


def _read_only_connections(monkeypatch) -> None:
    """Open every SQLite file read-only, as the OS does for a user without write permission on it (the tests run
    as root, whom chmod does not stop)."""
    real = sqlite3.connect

    def connect(database, *args, uri=False, **kwargs):
        if not uri:
            database, uri = f"{Path(database).resolve().as_uri()}?mode=ro", True
        return real(database, *args, uri=uri, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", connect)


def test_a_read_only_archive_names_the_file_and_what_to_do(tmp_path, monkeypatch):
    path = tmp_path / "archive.sqlite"
    with Archive(path) as archive:
        archive.add_zc("h1", "p", {"naswot": 1.0})
    with monkeypatch.context() as m:
        _read_only_connections(m)
        with Archive(path) as archive:
            assert archive.zc("p") == {"h1": {"naswot": 1.0}}  # reading still works
            with pytest.raises(ArchiveError, match=r"attempt to write a readonly database.*make the file") as info:
                archive.add_zc("h2", "p", {"naswot": 2.0})
            assert f"{path}: " in str(info.value) and "writable" in str(info.value)
    if os.geteuid() != 0:  # a real read-only file, where the permission holds
        path.chmod(0o444)
        try:
            with pytest.raises(ArchiveError, match=r"readonly.*writable"):
                with Archive(path) as archive:
                    archive.add_zc("h2", "p", {"naswot": 2.0})
        finally:
            path.chmod(0o644)
    with Archive(path) as archive:
        assert archive.zc("p") == {"h1": {"naswot": 1.0}}


def test_a_writer_locked_out_names_the_file_and_what_to_do(tmp_path, monkeypatch):
    import lightning_nas.archive.connection as archive_module

    path = tmp_path / "archive.sqlite"
    Archive(path).close()
    monkeypatch.setattr(archive_module, "BUSY_TIMEOUT_S", 0.2)
    with _raw(path) as holder, Archive(path) as archive:
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with pytest.raises(ArchiveError, match=r"database is locked.*another process") as info:
            archive.add_zc("h", "p", {"naswot": 1.0})
        assert f"{path}: " in str(info.value)
        holder.rollback()
        assert archive.add_zc("h", "p", {"naswot": 1.0})


# ---- 8. claims on pending ZC evaluations -------------------------------------------------------------------------
_CLAIMER = """
import os, sys
from lightning_nas.archive import Archive
archive = Archive(sys.argv[1], create=False)
print(",".join(archive.claim_zc("p", sys.argv[2].split(","), 3, "killed-run")), flush=True)
os._exit(0)  # ends without releasing its claims, like a killed run
"""


def test_zc_claims_share_pending_cells_and_come_back(tmp_path):
    path = tmp_path / "archive.sqlite"
    hashes = [f"h{k}" for k in range(12)]
    with Archive(path) as a, Archive(path) as b:
        a.add_zc("h0", "p", {"naswot": 0.0})  # done: never claimed
        assert a.claim_zc("p", hashes, 3, "run-a") == ["h1", "h2", "h3"]
        assert b.claim_zc("p", hashes, 3, "run-b") == ["h4", "h5", "h6"]
        assert b.claim_zc("q", hashes, 2, "run-b") == ["h0", "h1"]  # claims are per probe
        assert a.claim_zc("p", reversed(hashes), 2, "run-a") == ["h11", "h10"]  # in the order given
        assert [(c["hash"], c["owner"]) for c in b.zc_claims("p")] == [
            ("h1", "run-a"), ("h2", "run-a"), ("h3", "run-a"), ("h4", "run-b"), ("h5", "run-b"), ("h6", "run-b"),
            ("h11", "run-a"), ("h10", "run-a")]
        assert all(c["pid"] == os.getpid() and c["expires"] > time.time() + 500 for c in a.zc_claims("p"))

        # a finished cell: row written, claim released; it is not claimed again
        a.add_zc("h1", "p", {"naswot": 1.0})
        assert a.release_zc_claims("p", "run-a", ["h1"]) == 1
        # released unfinished claims go back to the pool
        assert a.release_zc_claims("p", "run-a", ["h2"]) == 1
        assert b.claim_zc("p", hashes, 10, "run-b") == ["h2", "h7", "h8", "h9"]
        assert b.claim_zc("p", hashes, 10, "run-c") == []

        # an expired lease goes back to the pool; a renewed one does not
        assert b.release_zc_claims("p", "run-b") == 7
        assert a.release_zc_claims("p", "run-a") == 3
        assert a.claim_zc("p", hashes, 2, "run-a", lease_s=0.2) == ["h2", "h3"]
        assert b.claim_zc("p", hashes, 2, "run-b", lease_s=0.2) == ["h4", "h5"]
        assert a.renew_zc_claims("p", "run-a", lease_s=600) == 2
        time.sleep(0.3)
        assert b.claim_zc("p", hashes, 3, "run-c") == ["h4", "h5", "h6"]

        # a run that ended without releasing (killed): its claims come back at once, before its lease expires
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        killed = subprocess.run([sys.executable, "-c", _CLAIMER, str(path), ",".join(hashes)], env=env,
                                capture_output=True, text=True, timeout=120)
        assert killed.stdout.strip() == "h7,h8,h9", killed.stderr[-2000:]
        assert {c["hash"] for c in a.zc_claims("p") if c["owner"] == "killed-run"} == {"h7", "h8", "h9"}
        assert a.claim_zc("p", hashes, 10, "run-a") == ["h7", "h8", "h9", "h10", "h11"]
        assert "killed-run" not in {c["owner"] for c in a.zc_claims("p")}

        with pytest.raises(ValueError, match="owner"):
            a.claim_zc("p", hashes, 1, "")
        with pytest.raises(ValueError, match="lease_s"):
            a.claim_zc("p", hashes, 1, "run-a", lease_s=0)


def test_an_archive_without_the_claims_table_still_opens_and_gets_it(tmp_path):
    """Archives written before claims existed (schema version 1 without ``zc_claims``) open (migrated), read no
    claims, and claim."""
    path = tmp_path / "archive.sqlite"
    with Archive(path) as archive:
        archive.add_zc("h0", "p", {"naswot": 0.0})
    with _raw(path) as con:
        con.execute("DROP TABLE zc_claims")
        con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        con.commit()
    with Archive(path, create=False) as archive:
        assert archive.zc_claims("p") == [] and archive.release_zc_claims("p", "run") == 0
        assert archive.renew_zc_claims("p", "run") == 0
        assert archive.claim_zc("p", ["h0", "h1"], 5, "run") == ["h1"]
        assert [c["hash"] for c in archive.zc_claims("p")] == ["h1"]
        assert archive.zc("p") == {"h0": {"naswot": 0.0}}
