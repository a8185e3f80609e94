"""The archive: a resumable SQLite store of every evaluated cell and architecture (DESIGN §1, §4).

One file (``<workdir>/archive.sqlite``, shared by the stages of a run) holds

- ``cells``: every sampled cell keyed by :meth:`Cell.canonical_hash` (isomorphic cells are stored once) with its
  JSON spec, its sample index (the order of sampling) and the run/stage that added it;
- ``probes``: the fixed probe batches ``(x, y)`` the ZC vectors were computed on, stored as safetensors bytes
  (never pickle) with their source and seed;
- ``zc``: one row per (cell, probe): the proxy values (a JSON object ``name -> float``; NaN/±inf round-trip),
  ``status`` ``'ok'`` or ``'failed'`` with the reason, the seconds spent and when it was written;
- ``normalisers``: the ZC normaliser fitted for a probe (JSON);
- ``archs``: evaluated architectures (spec, HL spec, metrics, budget, stage, run) — the search history;
- ``clusters``: named cell clusterings ``(name, cell_hash) -> cluster`` with their source (the ``cluster`` stage);
- ``zc_claims``: leases on pending (cell, probe) evaluations, so that several zc runs on one archive share the work
  (:meth:`Archive.claim_zc`);
- ``latency``: host latencies of networks (:mod:`lightning_nas.hw.measure`) keyed by network, device fingerprint
  and batch, with the fingerprint itself, so measurements of different machines or runtimes never mix;
- ``meta``: ``format = 'lightning-nas-archive'``, ``schema_version`` (:data:`SCHEMA_VERSION`), ``op_set``, …

Concurrency: the file is in WAL mode with a long busy timeout, every write is one short ``BEGIN IMMEDIATE``
transaction and cells/ZC rows are inserted with ``INSERT OR IGNORE``, so any number of processes on one
machine may write at once (the ZC stage shards across workers) and a killed writer loses only its uncommitted
transaction. With ``synchronous = NORMAL`` a committed transaction survives a killed process; after a power cut
the last few commits may be rolled back, but the file stays consistent. WAL needs a local file system (not NFS).
Runs that evaluate the same pending ZC rows claim them first (:meth:`Archive.claim_zc`): a claim lasts until its
lease expires or its owner process is gone, so each pending cell is evaluated once and a killed run's cells return
to the pool.

SQLite errors (a corrupted file, a read-only file, a lock held too long, a full disk, …) raise :class:`ArchiveError`
naming the file, what happened and what to do.

An :class:`Archive` (its SQLite connection) belongs to the process and thread that opened it: **each process
opens its own** ``Archive(path)``; using one after a ``fork`` raises :class:`ArchiveError`, and it cannot be
pickled.

Opening never modifies a file that is not a lightning-nas archive: the header and the ``meta`` table are
checked over a read-only connection first, and anything unexpected raises :class:`ArchiveError` naming the
file and the problem.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from . import __version__
from .space.cell import Cell
from .space.ops import resolve_op_set

SCHEMA_VERSION = 2
"""Version of the table layout: an older archive is migrated when opened (:data:`MIGRATIONS`), a newer one refused."""

FORMAT = "lightning-nas-archive"
"""Value of ``meta.format`` that marks a lightning-nas archive."""

PROBE_SOURCES = ("digits", "cifar10", "gaussian")
"""Where a probe batch may come from."""

ZC_STATUSES = ("ok", "failed")

BUSY_TIMEOUT_S = 60.0
"""How long a writer waits for another writer's transaction before giving up."""

_SQLITE_HEADER = b"SQLite format 3\x00"
_INHERITED: list[sqlite3.Connection] = []  # connections inherited over fork, kept alive and never used
_CHUNK = 1000  # rows per transaction when adding many cells
_IN_CHUNK = 500  # bound parameters per IN (...) query

_SAMPLE_ORDER = "ORDER BY c.sample_index IS NULL, c.sample_index, z.cell_hash"
"""ZC rows in the order of their cells' sample index (rows without a stored cell last, by hash)."""

_CLUSTERS_TABLE = (
    "CREATE TABLE IF NOT EXISTS clusters (name TEXT NOT NULL, cell_hash TEXT NOT NULL, cluster INTEGER NOT NULL,"
    " source TEXT NOT NULL, PRIMARY KEY (name, cell_hash))"
)
_CLAIMS_TABLE = (
    "CREATE TABLE IF NOT EXISTS zc_claims (probe_id TEXT NOT NULL, cell_hash TEXT NOT NULL, owner TEXT NOT NULL,"
    " host TEXT NOT NULL, pid INTEGER NOT NULL, expires REAL NOT NULL, PRIMARY KEY (probe_id, cell_hash))"
)
_LATENCY_TABLE = (
    "CREATE TABLE IF NOT EXISTS latency (network TEXT NOT NULL, device_id TEXT NOT NULL, batch INTEGER NOT NULL,"
    " median_ms REAL NOT NULL, iqr_ms REAL NOT NULL, p10_ms REAL NOT NULL, runs INTEGER NOT NULL,"
    " device TEXT NOT NULL, task TEXT NOT NULL DEFAULT '', spec TEXT, created REAL NOT NULL,"
    " PRIMARY KEY (network, device_id, batch))"
)

MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: (_CLUSTERS_TABLE, _CLAIMS_TABLE, _LATENCY_TABLE),
}
"""``version → statements`` that bring an archive of ``version − 1`` to ``version``, applied in order when an older
archive is opened (one write transaction; ``meta.schema_version`` follows). Version 2: the GMM clusters, the ZC
claims of concurrent runs and the host latencies — tables that version-1 archives gained lazily when first written."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cells (
    hash         TEXT PRIMARY KEY,
    spec         TEXT NOT NULL,
    num_op_nodes INTEGER NOT NULL,
    sample_index INTEGER NOT NULL,
    run          TEXT NOT NULL DEFAULT '',
    stage        TEXT NOT NULL DEFAULT '',
    created      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS cells_by_sample_index ON cells (sample_index);
CREATE TABLE IF NOT EXISTS probes (
    id      TEXT PRIMARY KEY,
    source  TEXT NOT NULL,
    seed    INTEGER NOT NULL,
    tensors BLOB NOT NULL,
    meta    TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS zc (
    probe_id  TEXT NOT NULL,
    cell_hash TEXT NOT NULL,
    status    TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    reason    TEXT NOT NULL DEFAULT '',
    vals      TEXT CHECK (status = 'failed' OR vals IS NOT NULL),
    seconds   REAL NOT NULL,
    created   REAL NOT NULL,
    PRIMARY KEY (probe_id, cell_hash)
);
CREATE INDEX IF NOT EXISTS zc_by_cell ON zc (cell_hash);
CREATE TABLE IF NOT EXISTS normalisers (
    probe_id TEXT PRIMARY KEY,
    data     TEXT NOT NULL,
    updated  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS archs (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    spec    TEXT NOT NULL,
    hl_spec TEXT,
    metrics TEXT NOT NULL,
    budget  TEXT,
    stage   TEXT NOT NULL DEFAULT '',
    run     TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS archs_by_stage_run ON archs (stage, run);
"""

CLAIM_LEASE_S = 600.0
"""How long a claim on a pending ZC evaluation lasts unless renewed (:meth:`Archive.claim_zc`)."""
_OWNERS: set[str] = set()  # claim owners that made claims in this process


class ArchiveError(ValueError):
    """A file that is not a (compatible) lightning-nas archive, a conflicting write, or an SQLite error on the file
    (corrupted, read-only, locked, disk full, …), named with the archive's path and what to do about it."""


class ArchiveNotFoundError(ArchiveError, FileNotFoundError):
    """``Archive(path, create=False)`` on a path that does not exist (also a ``FileNotFoundError``)."""


_RESTORE = ("restore it from a backup, or delete it (with the -wal and -shm files beside it) to start again; the zc "
            "stage rebuilds missing rows")
_SQLITE_ADVICE = (  # (primary SQLite result code, what it means, what to do)
    ("SQLITE_CORRUPT", "the archive file is corrupted", _RESTORE),
    ("SQLITE_NOTADB", "the archive file is corrupted (not a database)", _RESTORE),
    ("SQLITE_READONLY", "the archive cannot be written",
     "make the file writable for this user (and its folder: SQLite writes the -wal and -shm files beside it), or "
     "copy the archive to a writable place"),
    ("SQLITE_PERM", "the archive cannot be written", "make the file and its folder writable for this user"),
    ("SQLITE_BUSY", "another process held the archive's write lock too long",
     "another process is writing to it: wait for that process to finish (or stop it), then run again"),
    ("SQLITE_LOCKED", "another process held the archive's write lock too long",
     "another process is writing to it: wait for that process to finish (or stop it), then run again"),
    ("SQLITE_FULL", "the disk is full", "free space on its file system and run again (committed rows are kept)"),
    ("SQLITE_CANTOPEN", "the archive or its -wal/-shm files cannot be opened",
     "check that its folder exists and is writable, and that it is on a local file system (not NFS)"),
    ("SQLITE_IOERR", "a disk I/O error on the archive",
     "check the disk and that the archive is on a local file system (WAL needs one, not NFS), then run again"),
    ("SQLITE_PROTOCOL", "the archive's WAL lock protocol failed",
     "check that the archive is on a local file system (WAL needs one, not NFS)"),
)
_SQLITE_MESSAGES = {  # Python < 3.11 has no sqlite_errorname: recognise the primary code by its message
    "malformed": "SQLITE_CORRUPT", "file is not a database": "SQLITE_NOTADB", "readonly": "SQLITE_READONLY",
    "locked": "SQLITE_BUSY", "disk is full": "SQLITE_FULL", "unable to open": "SQLITE_CANTOPEN",
    "disk i/o error": "SQLITE_IOERR",
}


def _sqlite_code(err: sqlite3.Error) -> str:
    """The SQLite result code name of ``err`` (``SQLITE_CORRUPT``, ``SQLITE_READONLY_DBMOVED``, …) or ``""``."""
    return getattr(err, "sqlite_errorname", None) or next(
        (code for text, code in _SQLITE_MESSAGES.items() if text in str(err).lower()), "")


def _sqlite_error(path: Path, err: sqlite3.Error) -> ArchiveError:
    """An :class:`ArchiveError` for an SQLite error on the archive ``path``: the path, SQLite's message, what it means
    and what to do."""
    name = _sqlite_code(err)
    for code, meaning, todo in _SQLITE_ADVICE:
        if name == code or name.startswith(code + "_"):  # extended codes: SQLITE_READONLY_DBMOVED, SQLITE_IOERR_…
            return ArchiveError(f"{path}: {meaning} ({err}): {todo}")
    return ArchiveError(f"{path}: SQLite error on the archive ({type(err).__name__}: {err})")


def _dumps(obj: Any, what: str) -> str:
    try:
        return json.dumps(obj, allow_nan=True, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what}: not JSON-serialisable ({err})") from None


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _values(values: Any, what: str) -> dict[str, float] | None:
    if values is None:
        return None
    if not isinstance(values, dict):
        raise ValueError(f"{what}: expected a dict proxy name -> float, got {type(values).__name__}")
    out = {}
    for key, value in values.items():
        if not isinstance(key, str):
            raise ValueError(f"{what}: proxy names must be strings, got {key!r}")
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{what}[{key!r}]: {value!r} is not a number") from None
    return out


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-identical (NaN-safe): same dtype, shape and bytes."""
    return a.dtype == b.dtype and a.shape == b.shape and _tensor_bytes(a) == _tensor_bytes(b)


class Archive:
    """A lightning-nas archive file (see the module docstring). Use as a context manager or call :meth:`close`.

    ``Archive(path)`` creates the file and its schema when missing (``create=True``); with ``create=False`` a
    missing path raises :class:`ArchiveNotFoundError` (an :class:`ArchiveError` and a ``FileNotFoundError``).
    ``op_set`` (an op-set name such as ``"graphnet"``) is recorded when the archive is created (or when an archive
    without one is first opened with one); opening with an ``op_set`` other than the recorded one raises
    :class:`ArchiveError`, and :meth:`add_cells` refuses cells with ops outside the recorded op set.
    """

    def __init__(self, path: str | os.PathLike, create: bool = True, op_set: str | None = None):
        self.path = Path(path)
        self._con: sqlite3.Connection | None = None
        self._pid = os.getpid()
        if op_set is not None:
            if not isinstance(op_set, str):
                raise ValueError(f"op_set: expected an op-set name (a string), got {type(op_set).__name__}")
            self._allowed = frozenset(resolve_op_set(op_set))  # ValueError for an unknown name
        if self.path.is_dir():
            raise ArchiveError(f"{self.path}: is a directory, not an archive file")
        if self.path.exists():
            state = self._inspect()
            if state == "empty" and not create:
                raise ArchiveError(f"{self.path}: an empty SQLite database, not a lightning-nas archive (create=False)")
        elif not create:
            raise ArchiveNotFoundError(f"{self.path}: no such archive (pass create=True to make one)")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._sqlite_errors():
            self._con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            with self._sqlite_errors():
                self._setup(create, op_set)
        except BaseException:
            self.close()
            raise

    # ---- opening ---------------------------------------------------------------------------------
    def _inspect(self) -> str:
        """Check an existing file without modifying it: ``"ours"`` or ``"empty"`` (SQLite with no tables)."""
        path = self.path
        with open(path, "rb") as f:
            head = f.read(100)
        if head and head[: len(_SQLITE_HEADER)] != _SQLITE_HEADER:
            raise ArchiveError(
                f"{path}: not an SQLite database (starts with {head[:16]!r}), so not a lightning-nas archive"
            )
        # A read-only connection to a WAL-mode file leaves empty -wal/-shm files behind. When no -wal exists nobody
        # has written since the last checkpoint, so read the main file as immutable (no side files); a writer that
        # starts meanwhile only appends to its WAL, so the main file stays a consistent snapshot.
        wal_file = len(head) > 18 and head[18] == 2
        immutable = wal_file and not Path(f"{path}-wal").exists()
        base = path.resolve().as_uri()
        try:
            try:
                tables, meta = self._peek(base + ("?mode=ro&immutable=1" if immutable else "?mode=ro"))
            except sqlite3.Error:
                if not immutable:
                    raise
                tables, meta = self._peek(base + "?mode=ro")
        except sqlite3.Error as err:
            if _sqlite_code(err).startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_BUSY", "SQLITE_IOERR",
                                             "SQLITE_CANTOPEN")):  # a damaged or busy file, not a foreign one
                raise _sqlite_error(path, err) from err
            raise ArchiveError(f"{path}: unreadable SQLite database ({err}); not a lightning-nas archive") from None
        if not tables:
            return "empty"
        if meta is None:
            raise ArchiveError(
                f"{path}: an SQLite database without a lightning-nas 'meta' table "
                f"(tables: {', '.join(sorted(tables))}); not a lightning-nas archive, left untouched"
            )
        self._check_meta(meta)
        return "ours"

    @staticmethod
    def _peek(uri: str) -> tuple[list[str], dict[str, str] | None]:
        """Table names and the ``meta`` table (``None`` if absent) over a read-only connection."""
        con = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S)
        try:
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            if "meta" not in tables:
                return tables, None
            try:
                return tables, {str(k): str(v) for k, v in con.execute("SELECT key, value FROM meta")}
            except sqlite3.OperationalError:  # a foreign 'meta' table of another shape
                return tables, {}
        finally:
            con.close()

    def _check_meta(self, meta: dict[str, str]) -> None:
        path = self.path
        if meta.get("format") != FORMAT:
            raise ArchiveError(
                f"{path}: meta.format is {meta.get('format')!r}, expected {FORMAT!r}; not a lightning-nas archive"
            )
        version = meta.get("schema_version")
        if not (isinstance(version, str) and version.isdigit() and 1 <= int(version) <= SCHEMA_VERSION):
            raise ArchiveError(
                f"{path}: archive schema_version {version!r}, but lightning-nas {__version__} reads schema_version "
                f"1..{SCHEMA_VERSION}; use the lightning-nas version that wrote it"
            )

    def _migrate(self) -> None:
        """Bring an older archive to :data:`SCHEMA_VERSION` (:data:`MIGRATIONS`), under the write lock: a process that
        migrated it meanwhile leaves nothing to do."""
        with self._write() as cur:
            version = int(cur.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[target]:
                    cur.execute(statement)
            cur.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

    def _setup(self, create: bool, op_set: str | None) -> None:
        con = self._con
        # Switching a new file to WAL needs its exclusive lock, and SQLite answers "locked" at once (the busy handler
        # is not consulted) while another process opening the same new archive holds it: retry until the timeout.
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        if str(mode).lower() != "wal":
            raise ArchiveError(f"{self.path}: cannot switch to WAL mode (got {mode!r}); is it on a local file system?")
        con.execute("PRAGMA synchronous = NORMAL")
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" not in tables:
            if not create:
                raise ArchiveError(f"{self.path}: not a lightning-nas archive (no 'meta' table)")
            with self._write() as cur:
                # Re-check under the write lock: another process may have created the file meanwhile.
                tables = {r[0] for r in cur.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if tables and "meta" not in tables:
                    raise ArchiveError(
                        f"{self.path}: an SQLite database without a lightning-nas 'meta' table; left untouched"
                    )
                for statement in [*_SCHEMA.split(";"), *(sql for v in sorted(MIGRATIONS) for sql in MIGRATIONS[v])]:
                    if statement.strip():
                        cur.execute(statement)
                created = datetime.now(timezone.utc).isoformat(timespec="seconds")
                rows = [
                    ("format", FORMAT),
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("created", created),
                    ("lightning_nas_version", __version__),
                ]
                if op_set is not None:
                    rows.append(("op_set", op_set))
                cur.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", rows)
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        self._check_meta(meta)
        if int(meta["schema_version"]) < SCHEMA_VERSION:
            self._migrate()
        stored = meta.get("op_set")
        if op_set is not None and stored is None:
            with self._write() as cur:
                stored = cur.execute("SELECT value FROM meta WHERE key = 'op_set'").fetchone()
                stored = stored[0] if stored else None
                if stored is None:
                    bad = self._cells_outside(cur, frozenset(resolve_op_set(op_set)))
                    if bad:
                        raise ArchiveError(
                            f"{self.path}: cannot record op_set {op_set!r}: stored cell {bad} uses other ops"
                        )
                    cur.execute("INSERT INTO meta (key, value) VALUES ('op_set', ?)", (op_set,))
                    stored = op_set
        if op_set is not None and stored != op_set:
            raise ArchiveError(f"{self.path}: archive holds op_set {stored!r}, but op_set {op_set!r} was requested")
        self._op_set = stored
        try:
            self._allowed = frozenset(resolve_op_set(stored)) if stored is not None else None
        except ValueError as err:
            raise ArchiveError(
                f"{self.path}: recorded op_set {stored!r} is unknown to this lightning-nas ({err})"
            ) from None

    @staticmethod
    def _cells_outside(cur: sqlite3.Cursor, allowed: frozenset[str]) -> str | None:
        for cell_hash, spec in cur.execute("SELECT hash, spec FROM cells"):
            if not set(json.loads(spec)["ops"]) <= allowed:
                return cell_hash
        return None

    # ---- connection ------------------------------------------------------------------------------
    @property
    def op_set(self) -> str | None:
        """The op-set name recorded in the archive, or ``None``."""
        return self._op_set

    @property
    def _db(self) -> sqlite3.Connection:
        if self._con is None:
            raise ArchiveError(f"{self.path}: archive is closed")
        if os.getpid() != self._pid:
            raise ArchiveError(
                f"{self.path}: this Archive was opened in process {self._pid}; open a new Archive in each process"
            )
        return self._con

    @contextmanager
    def _sqlite_errors(self) -> Iterator[None]:
        """Where every SQLite call of an Archive runs (opening, :meth:`_write`, :meth:`_read`): an ``sqlite3.Error``
        becomes an :class:`ArchiveError` naming the file, what happened and what to do (:func:`_sqlite_error`)."""
        try:
            yield
        except sqlite3.Error as err:
            raise _sqlite_error(self.path, err) from err

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        """One short write transaction (``BEGIN IMMEDIATE`` takes the write lock up front, waiting if busy)."""
        con = self._db
        with self._sqlite_errors():
            cur = con.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
                try:
                    yield cur
                    con.execute("COMMIT")
                except BaseException:
                    if con.in_transaction:
                        try:
                            con.execute("ROLLBACK")
                        except sqlite3.Error:  # e.g. a corrupted file: report the error that got us here
                            pass
                    raise
            finally:
                cur.close()

    def _read(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        with self._sqlite_errors():
            cur = self._db.execute(sql, params)
            try:
                return cur.fetchall()
            finally:
                cur.close()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        con, self._con = self._con, None
        if con is not None:
            if os.getpid() == self._pid:
                con.close()
            else:  # inherited over fork: never close (or checkpoint) the parent's connection from a child
                _INHERITED.append(con)

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __getstate__(self):
        raise TypeError("an Archive cannot be pickled: pass its path and open a new Archive in each process")

    def __repr__(self) -> str:
        state = "closed" if self._con is None else "open"
        return f"Archive({str(self.path)!r}, op_set={getattr(self, '_op_set', None)!r}, {state})"

    # ---- cells -----------------------------------------------------------------------------------
    def add_cells(self, cells: Iterable[Cell], run: str = "", stage: str = "", start_index: int | None = None) -> int:
        """Insert cells not yet present (by canonical hash); return how many were new.

        The ``k``-th cell of ``cells`` gets sample index ``start_index + k`` (so a resumed sampler that replays its
        stream with the same ``start_index`` reproduces the indices); with ``start_index=None`` indices continue
        after the largest stored one. Cells already present (or isomorphic to one) keep their first row.
        Written in transactions of ~1000 cells."""
        run, stage = str(run), str(stage)
        position = 0
        next_free: int | None = None
        inserted = 0
        batch: list[tuple[str, str, int]] = []

        def flush() -> None:
            nonlocal next_free, inserted
            now = time.time()
            with self._write() as cur:
                if start_index is None:
                    top = cur.execute("SELECT MAX(sample_index) FROM cells").fetchone()[0]
                    base = max(-1 if top is None else top, -1 if next_free is None else next_free - 1) + 1
                    params = [(h, s, n, base + k, run, stage, now) for k, (h, s, n) in enumerate(batch)]
                    next_free = base + len(batch)
                else:
                    first = start_index + position - len(batch)
                    params = [(h, s, n, first + k, run, stage, now) for k, (h, s, n) in enumerate(batch)]
                cur.executemany(
                    "INSERT OR IGNORE INTO cells (hash, spec, num_op_nodes, sample_index, run, stage, created)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    params,
                )
                inserted += cur.rowcount
            batch.clear()

        for cell in cells:
            if not isinstance(cell, Cell):
                raise TypeError(f"cells[{position}]: expected a Cell, got {type(cell).__name__}")
            if self._allowed is not None and not set(cell.ops) <= self._allowed:
                raise ArchiveError(
                    f"{self.path}: cells[{position}] {cell} uses ops outside the archive's op_set {self._op_set!r}"
                )
            batch.append((cell.canonical_hash(), _dumps(cell.to_json(), "cell"), cell.num_op_nodes))
            position += 1
            if len(batch) >= _CHUNK:
                flush()
        if batch:
            flush()
        return inserted

    def num_cells(self) -> int:
        """Number of distinct cells stored."""
        return self._read("SELECT COUNT(*) FROM cells")[0][0]

    def get_cell(self, cell_hash: str) -> Cell:
        """The stored cell with this canonical hash (``KeyError`` if absent)."""
        rows = self._read("SELECT spec FROM cells WHERE hash = ?", (cell_hash,))
        if not rows:
            raise KeyError(f"{self.path}: no cell with hash {cell_hash!r}")
        return Cell.from_json(rows[0][0])

    def iter_cells(self, limit: int | None = None, offset: int = 0) -> Iterator[tuple[str, Cell]]:
        """``(hash, cell)`` in sample order, skipping ``offset`` and yielding at most ``limit``.

        Reads in pages (no statement stays open between yields), so the archive may be written meanwhile."""
        remaining = -1 if limit is None else int(limit)
        page = _CHUNK if remaining < 0 else min(_CHUNK, remaining)
        if page == 0:
            return
        rows = self._read(
            "SELECT sample_index, rowid, hash, spec FROM cells ORDER BY sample_index, rowid LIMIT ? OFFSET ?",
            (page, int(offset)),
        )
        while rows:
            for _, _, cell_hash, spec in rows:
                yield cell_hash, Cell.from_json(spec)
            if remaining >= 0:
                remaining -= len(rows)
                if remaining <= 0:
                    return
            page = _CHUNK if remaining < 0 else min(_CHUNK, remaining)
            index, rowid = rows[-1][0], rows[-1][1]
            rows = self._read(
                "SELECT sample_index, rowid, hash, spec FROM cells WHERE (sample_index, rowid) > (?, ?)"
                " ORDER BY sample_index, rowid LIMIT ?",
                (index, rowid, page),
            )

    # ---- probes ----------------------------------------------------------------------------------
    def add_probe(
        self, probe_id: str, source: str, seed: int, x: torch.Tensor, y: torch.Tensor, meta: dict | None = None
    ) -> None:
        """Store a probe batch (idempotent). Re-adding an existing id with other tensors, source or seed raises
        :class:`ArchiveError`; a different ``meta`` is ignored (the first one is kept)."""
        if not isinstance(probe_id, str) or not probe_id:
            raise ValueError(f"probe_id: expected a non-empty string, got {probe_id!r}")
        if source not in PROBE_SOURCES:
            raise ValueError(f"source: {source!r} is not one of {', '.join(PROBE_SOURCES)}")
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
            raise TypeError("x, y: expected torch tensors")
        x = x.detach().cpu().contiguous().clone()
        y = y.detach().cpu().contiguous().clone()
        blob = _st_save({"x": x, "y": y})
        meta_text = _dumps(meta or {}, "meta")
        with self._write() as cur:
            cur.execute(
                "INSERT OR IGNORE INTO probes (id, source, seed, tensors, meta, created) VALUES (?, ?, ?, ?, ?, ?)",
                (probe_id, source, int(seed), blob, meta_text, time.time()),
            )
            if cur.rowcount:
                return
            old_source, old_seed, old_blob = cur.execute(
                "SELECT source, seed, tensors FROM probes WHERE id = ?", (probe_id,)
            ).fetchone()
        old = _st_load(bytes(old_blob))
        if old_source != source or old_seed != int(seed):
            raise ArchiveError(
                f"{self.path}: probe {probe_id!r} exists with source {old_source!r} seed {old_seed}, "
                f"not {source!r} seed {int(seed)}"
            )
        if not (_same_tensor(old["x"], x) and _same_tensor(old["y"], y)):
            raise ArchiveError(f"{self.path}: probe {probe_id!r} exists with different tensors; use a new probe id")

    def get_probe(self, probe_id: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """``(x, y, {"source", "seed", "meta", "created"})`` of a stored probe (``KeyError`` if absent)."""
        rows = self._read("SELECT source, seed, tensors, meta, created FROM probes WHERE id = ?", (probe_id,))
        if not rows:
            raise KeyError(f"{self.path}: no probe {probe_id!r} (stored: {self.probes()})")
        source, seed, blob, meta, created = rows[0]
        tensors = _st_load(bytes(blob))
        info = {"source": source, "seed": seed, "meta": json.loads(meta), "created": created}
        return tensors["x"], tensors["y"], info

    def resolve_probe(self, requested: str | None = None) -> str:
        """The probe id to use: ``requested`` if stored, else the archive's only probe. Raises ``ValueError`` naming
        the fix when it is not stored, when there is none, or when there are several to choose from."""
        probes = self.probes()
        hint = "run the zc stage first: python -m lightning_nas zc --config configs/zc/tiny.yaml"
        if requested is not None:
            if requested not in probes:
                raise ValueError(f"{self.path}: no probe {requested!r} (stored: {', '.join(probes) or 'none'}); "
                                 f"set probe: to one of them or {hint}")
            return requested
        if not probes:
            raise ValueError(f"{self.path}: no probe and no ZC vectors yet; {hint}")
        if len(probes) > 1:
            raise ValueError(f"{self.path}: {len(probes)} probes ({', '.join(probes)}); choose one with probe: <id>")
        return probes[0]

    def probes(self) -> list[str]:
        """Ids of the stored probes, in the order they were added."""
        return [r[0] for r in self._read("SELECT id FROM probes ORDER BY created, rowid")]

    # ---- zero-cost rows --------------------------------------------------------------------------
    @staticmethod
    def _zc_params(row: tuple, now: float, where: str) -> tuple:
        if not isinstance(row, tuple | list) or len(row) != 6:
            raise ValueError(f"{where}: expected (cell_hash, probe_id, values, status, reason, seconds), got {row!r}")
        cell_hash, probe_id, values, status, reason, seconds = row
        if not isinstance(cell_hash, str) or not cell_hash:
            raise ValueError(f"{where}: cell_hash must be a non-empty string, got {cell_hash!r}")
        if not isinstance(probe_id, str) or not probe_id:
            raise ValueError(f"{where}: probe_id must be a non-empty string, got {probe_id!r}")
        if status not in ZC_STATUSES:
            raise ValueError(f"{where}: status must be 'ok' or 'failed', got {status!r}")
        values = _values(values, f"{where}: values")
        if status == "ok" and values is None:
            raise ValueError(f"{where}: an 'ok' row needs values (only 'failed' rows may have None)")
        seconds = float(seconds)
        if not math.isfinite(seconds):
            raise ValueError(f"{where}: seconds must be finite, got {seconds}")
        vals = None if values is None else _dumps(values, f"{where}: values")
        return probe_id, cell_hash, status, str(reason), vals, seconds, now

    _INSERT_ZC = (
        "INSERT OR IGNORE INTO zc (probe_id, cell_hash, status, reason, vals, seconds, created)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)"
    )

    def add_zc(
        self,
        cell_hash: str,
        probe_id: str,
        values: dict[str, float] | None,
        status: str = "ok",
        reason: str = "",
        seconds: float = 0.0,
    ) -> bool:
        """Record the ZC values of a cell on a probe. ``True`` if inserted; ``False`` if a row for
        (cell, probe) already existed (it is kept unchanged, whatever its status)."""
        params = self._zc_params((cell_hash, probe_id, values, status, reason, seconds), time.time(), "add_zc")
        with self._write() as cur:
            cur.execute(self._INSERT_ZC, params)
            return cur.rowcount == 1

    def add_zc_many(self, rows: Iterable[tuple[str, str, dict | None, str, str, float]]) -> int:
        """:meth:`add_zc` for many ``(cell_hash, probe_id, values, status, reason, seconds)`` rows in one
        transaction; returns how many were new. Rows are validated before anything is written."""
        now = time.time()
        params = [self._zc_params(row, now, f"rows[{k}]") for k, row in enumerate(rows)]
        if not params:
            return 0
        with self._write() as cur:
            cur.executemany(self._INSERT_ZC, params)
            return cur.rowcount

    def zc(self, probe_id: str, status: str | None = "ok") -> dict[str, dict[str, float]]:
        """``cell_hash -> values`` on a probe, for rows of ``status`` (``None``: any status; rows without values
        are left out), in the cells' sample order — not the order in which parallel workers happened to finish, so
        whatever is computed from them (the normaliser's sums, the clustering) is the same in every process."""
        if status is not None and status not in ZC_STATUSES:
            raise ValueError(f"status: must be 'ok', 'failed' or None, got {status!r}")
        rows = self._read(
            f"SELECT z.cell_hash, z.vals FROM zc z LEFT JOIN cells c ON c.hash = z.cell_hash WHERE z.probe_id = ? "
            f"AND z.vals IS NOT NULL {'' if status is None else 'AND z.status = ?'} {_SAMPLE_ORDER}",
            (probe_id,) if status is None else (probe_id, status),
        )
        return {h: json.loads(v) for h, v in rows}

    def zc_rows(self, probe_id: str) -> list[dict]:
        """Every row on a probe (failed ones included), in the cells' sample order (as :meth:`zc`), as dicts with
        keys ``hash``, ``probe_id``, ``status``, ``reason``, ``seconds``, ``created`` (unix time) and ``values``
        (dict or None)."""
        rows = self._read(
            "SELECT z.cell_hash, z.status, z.reason, z.seconds, z.created, z.vals FROM zc z LEFT JOIN cells c "
            f"ON c.hash = z.cell_hash WHERE z.probe_id = ? {_SAMPLE_ORDER}",
            (probe_id,),
        )
        return [
            {
                "hash": h,
                "probe_id": probe_id,
                "status": s,
                "reason": r,
                "seconds": sec,
                "created": c,
                "values": _loads(v),
            }
            for h, s, r, sec, c, v in rows
        ]

    def pending(self, probe_id: str, hashes: Iterable[str]) -> list[str]:
        """Those of ``hashes`` without a row on ``probe_id`` (ok or failed), in the given order, duplicates
        dropped — the work left for a resumed ZC stage."""
        wanted = list(dict.fromkeys(hashes))
        done: set[str] = set()
        for k in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[k : k + _IN_CHUNK]
            marks = ", ".join("?" * len(chunk))  # placeholders only; values are bound
            done.update(
                r[0]
                for r in self._read(
                    f"SELECT cell_hash FROM zc WHERE probe_id = ? AND cell_hash IN ({marks})", [probe_id, *chunk]
                )
            )
        return [h for h in wanted if h not in done]

    def count_zc(self, probe_id: str) -> dict[str, int]:
        """``{"ok": n, "failed": m}`` rows on a probe."""
        counts = dict.fromkeys(ZC_STATUSES, 0)
        counts.update(self._read("SELECT status, COUNT(*) FROM zc WHERE probe_id = ? GROUP BY status", (probe_id,)))
        return counts

    # ---- normalisers -----------------------------------------------------------------------------
    def set_normaliser(self, probe_id: str, data: dict) -> None:
        """Store (or replace) the ZC normaliser fitted on a probe's values."""
        if not isinstance(data, dict):
            raise ValueError(f"data: expected a dict, got {type(data).__name__}")
        text = _dumps(data, "normaliser")
        with self._write() as cur:
            cur.execute(
                "INSERT INTO normalisers (probe_id, data, updated) VALUES (?, ?, ?)"
                " ON CONFLICT (probe_id) DO UPDATE SET data = excluded.data, updated = excluded.updated",
                (probe_id, text, time.time()),
            )

    def get_normaliser(self, probe_id: str) -> dict | None:
        """The stored normaliser of a probe, or ``None``."""
        rows = self._read("SELECT data FROM normalisers WHERE probe_id = ?", (probe_id,))
        return json.loads(rows[0][0]) if rows else None

    # ---- architectures ---------------------------------------------------------------------------
    def add_arch(
        self,
        spec: dict,
        metrics: dict | None = None,
        hl_spec: dict | None = None,
        budget: dict | None = None,
        stage: str = "",
        run: str = "",
    ) -> int:
        """Append an evaluated architecture (spec and HL spec as JSON objects); return its id."""
        if not isinstance(spec, dict):
            raise ValueError(f"spec: expected a dict (the architecture's JSON spec), got {type(spec).__name__}")
        params = (
            _dumps(spec, "spec"),
            None if hl_spec is None else _dumps(hl_spec, "hl_spec"),
            _dumps(metrics or {}, "metrics"),
            None if budget is None else _dumps(budget, "budget"),
            str(stage),
            str(run),
            time.time(),
        )
        with self._write() as cur:
            cur.execute(
                "INSERT INTO archs (spec, hl_spec, metrics, budget, stage, run, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                params,
            )
            return int(cur.lastrowid)

    def archs(self, stage: str | None = None, run: str | None = None) -> list[dict]:
        """Stored architectures (filtered by ``stage``/``run`` when given) in insertion order, as dicts with keys
        ``id``, ``spec``, ``hl_spec``, ``metrics``, ``budget``, ``stage``, ``run``, ``created``."""
        rows = self._read(
            "SELECT id, spec, hl_spec, metrics, budget, stage, run, created FROM archs"
            " WHERE (?1 IS NULL OR stage = ?1) AND (?2 IS NULL OR run = ?2) ORDER BY id",
            (stage, run),
        )
        return [
            {
                "id": i,
                "spec": json.loads(s),
                "hl_spec": _loads(h),
                "metrics": json.loads(m),
                "budget": _loads(b),
                "stage": st,
                "run": r,
                "created": c,
            }
            for i, s, h, m, b, st, r, c in rows
        ]

    # ---- clusters --------------------------------------------------------------------------------
    def set_clusters(self, name: str, assignments: dict[str, int], source: str | dict[str, str] = "zc") -> None:
        """Replace the clustering ``name``: every stored row of that name is deleted and ``cell_hash -> cluster``
        from ``assignments`` is written, in one transaction (readers see the old or the new set, never a mix).
        ``source`` says where the assignments came from (``"zc"``: a GMM on the cells' normalised ZC vectors;
        ``"gvae"``: the GMM on the G-VAE's predicted vectors q(f(x))), for all cells or per cell hash."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"name: expected a non-empty string, got {name!r}")
        sources = source if isinstance(source, dict) else None
        if sources is not None and not set(assignments) <= set(sources):
            raise ValueError("source: a per-cell source mapping must name every cell of assignments")
        if not isinstance(source, str | dict) or not all(isinstance(v, str) for v in (sources or {}).values()):
            raise ValueError(f"source: expected a string or a dict of strings, got {type(source).__name__}")
        if not isinstance(assignments, dict):
            raise ValueError(f"assignments: expected a dict cell_hash -> cluster, got {type(assignments).__name__}")
        params = []
        for cell_hash, cluster in assignments.items():
            if not isinstance(cell_hash, str) or not cell_hash:
                raise ValueError(f"assignments: cell hashes must be non-empty strings, got {cell_hash!r}")
            try:  # ints and numpy integers; not bools, floats or strings
                if isinstance(cluster, bool):
                    raise TypeError
                cluster = cluster.__index__()
            except (AttributeError, TypeError):
                raise ValueError(f"assignments[{cell_hash!r}]: cluster must be an int, got {cluster!r}") from None
            if cluster < 0:
                raise ValueError(f"assignments[{cell_hash!r}]: cluster must be ≥ 0, got {cluster}")
            params.append((name, cell_hash, cluster, sources[cell_hash] if sources is not None else source))
        with self._write() as cur:
            cur.execute("DELETE FROM clusters WHERE name = ?", (name,))
            cur.executemany("INSERT INTO clusters (name, cell_hash, cluster, source) VALUES (?, ?, ?, ?)", params)

    def clusters(self, name: str) -> dict[str, int]:
        """``cell_hash -> cluster`` of the clustering ``name`` in the order written (empty if there is none)."""
        return dict(self._read("SELECT cell_hash, cluster FROM clusters WHERE name = ? ORDER BY rowid", (name,)))

    # ---- ZC claims -------------------------------------------------------------------------------
    def claim_zc(
        self, probe_id: str, hashes: Iterable[str], limit: int, owner: str, lease_s: float = CLAIM_LEASE_S
    ) -> list[str]:
        """Claim for ``owner`` up to ``limit`` of ``hashes`` (in the given order) that have no ZC row on
        ``probe_id`` and no live claim, until ``lease_s`` seconds from now; return them.

        One write transaction, so two runs (processes) never claim the same cell. First, stale claims are dropped:
        those whose lease expired, and those whose owner process on this machine has ended (a killed run's claims
        return at once when it is restarted). ``owner`` names one run, unique among the runs sharing the archive
        (say ``host:pid:random``); it renews its claims with :meth:`renew_zc_claims` and gives them back with
        :meth:`release_zc_claims` (after writing each row with :meth:`add_zc`)."""
        if not isinstance(owner, str) or not owner:
            raise ValueError(f"owner: expected a non-empty string, got {owner!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit: expected an int ≥ 0, got {limit!r}")
        lease_s = float(lease_s)
        if not (math.isfinite(lease_s) and lease_s > 0):
            raise ValueError(f"lease_s: expected a positive number of seconds, got {lease_s}")
        if limit == 0:
            return []
        _OWNERS.add(owner)
        host, pid = socket.gethostname(), os.getpid()
        claimed: list[str] = []
        with self._write() as cur:
            now = time.time()
            cur.execute("DELETE FROM zc_claims WHERE expires <= ?", (now,))
            # Stale: an owner process that has ended, or, under this process's own pid, an owner this process never
            # ran (an earlier process that had the same pid).
            stale = [
                (other_owner, other_pid)
                for other_owner, other_pid in cur.execute(
                    "SELECT DISTINCT owner, pid FROM zc_claims WHERE host = ?", (host,)
                ).fetchall()
                if (other_owner not in _OWNERS if other_pid == pid else not _process_alive(other_pid))
            ]
            cur.executemany("DELETE FROM zc_claims WHERE host = ? AND owner = ? AND pid = ?",
                            [(host, o, p) for o, p in stale])
            for chunk in _chunks(hashes, _IN_CHUNK):  # read only as far as needed: ``hashes`` may be long
                marks = ", ".join("?" * len(chunk))  # placeholders only; values are bound
                taken = {
                    r[0]
                    for r in cur.execute(
                        f"SELECT cell_hash FROM zc WHERE probe_id = ? AND cell_hash IN ({marks})"
                        f" UNION SELECT cell_hash FROM zc_claims WHERE probe_id = ? AND cell_hash IN ({marks})",
                        [probe_id, *chunk, probe_id, *chunk],
                    )
                }
                claimed += [h for h in chunk if h not in taken][: limit - len(claimed)]
                if len(claimed) == limit:
                    break
            cur.executemany(
                "INSERT INTO zc_claims (probe_id, cell_hash, owner, host, pid, expires) VALUES (?, ?, ?, ?, ?, ?)",
                [(probe_id, h, owner, host, pid, now + lease_s) for h in claimed],
            )
        return claimed

    def renew_zc_claims(self, probe_id: str, owner: str, lease_s: float = CLAIM_LEASE_S) -> int:
        """Extend ``owner``'s claims on ``probe_id`` to ``lease_s`` seconds from now; returns how many it holds."""
        with self._write() as cur:
            cur.execute("UPDATE zc_claims SET expires = ? WHERE probe_id = ? AND owner = ?",
                        (time.time() + float(lease_s), probe_id, owner))
            return cur.rowcount

    def release_zc_claims(self, probe_id: str, owner: str, hashes: Iterable[str] | None = None) -> int:
        """Give back ``owner``'s claims on ``probe_id`` (those on ``hashes``, or all); returns how many."""
        with self._write() as cur:
            if hashes is None:
                cur.execute("DELETE FROM zc_claims WHERE probe_id = ? AND owner = ?", (probe_id, owner))
                return cur.rowcount
            cur.executemany("DELETE FROM zc_claims WHERE probe_id = ? AND owner = ? AND cell_hash = ?",
                            [(probe_id, owner, h) for h in dict.fromkeys(hashes)])
            return cur.rowcount

    def zc_claims(self, probe_id: str) -> list[dict]:
        """The claims on ``probe_id`` (expired ones included until the next :meth:`claim_zc` drops them), as dicts
        with keys ``hash``, ``owner``, ``host``, ``pid`` and ``expires`` (unix time)."""
        rows = self._read(
            "SELECT cell_hash, owner, host, pid, expires FROM zc_claims WHERE probe_id = ? ORDER BY rowid", (probe_id,)
        )
        return [{"hash": h, "owner": o, "host": host, "pid": pid, "expires": e} for h, o, host, pid, e in rows]

    # ---- host latency ----------------------------------------------------------------------------------------------
    def add_latency(self, network: str, measurement, arch_spec: dict | None = None, task: str = "") -> None:
        """Store a :class:`~lightning_nas.hw.measure.LatencyMeasurement` of the network keyed ``network``
        (:func:`~lightning_nas.hw.measure.network_key`); a later measurement of the same network, device and batch
        replaces it."""
        device = measurement.device
        params = (network, device.id, int(measurement.batch), float(measurement.median_ms),
                  float(measurement.iqr_ms), float(measurement.p10_ms), int(measurement.runs),
                  _dumps(device.to_json(), "device"), str(task),
                  None if arch_spec is None else _dumps(arch_spec, "arch_spec"), time.time())
        with self._write() as cur:
            cur.execute("INSERT OR REPLACE INTO latency (network, device_id, batch, median_ms, iqr_ms, p10_ms, runs,"
                        " device, task, spec, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", params)

    def latency(self, network: str, device_id: str, batch: int = 1) -> dict | None:
        """The stored measurement of ``network`` on the device fingerprint ``device_id`` at ``batch``, or None."""
        rows = self.latencies(device_id, network=network, batch=batch)
        return rows[0] if rows else None

    def latencies(self, device_id: str | None = None, network: str | None = None,
                  batch: int | None = None) -> list[dict]:
        """Stored measurements (filtered by device fingerprint id, network and batch when given), oldest first,
        as dicts with keys ``network``, ``device_id``, ``batch``, ``median_ms``, ``iqr_ms``, ``p10_ms``, ``runs``,
        ``device``
        (the fingerprint), ``task``, ``spec`` (the architecture) and ``created``."""
        where, params = [], []
        for column, value in (("device_id", device_id), ("network", network), ("batch", batch)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = ("SELECT network, device_id, batch, median_ms, iqr_ms, p10_ms, runs, device, task, spec, created "
               "FROM latency"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY created, rowid")
        keys = ("network", "device_id", "batch", "median_ms", "iqr_ms", "p10_ms", "runs", "device", "task", "spec",
                "created")
        rows = [dict(zip(keys, row, strict=True)) for row in self._read(sql, params)]
        for row in rows:
            row["device"], row["spec"] = _loads(row["device"]), _loads(row["spec"])
        return rows


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    """``items`` without repeats, in lists of up to ``size``, read lazily."""
    seen: set[str] = set()
    chunk: list[str] = []
    for item in items:
        if item not in seen:
            seen.add(item)
            chunk.append(item)
            if len(chunk) == size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine is running (``True`` when that cannot be told, e.g. on Windows, where
    a claim then lasts until its lease expires)."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, another user's
        return True
    return True
