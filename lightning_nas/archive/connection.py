"""Opening an archive: the file checks, WAL, the schema and its migrations, the one write transaction, and SQLite
errors turned into :class:`ArchiveError` naming the file and what to do."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..space.ops import resolve_op_set
from .schema import _SCHEMA, FORMAT, MIGRATIONS, SCHEMA_VERSION

BUSY_TIMEOUT_S = 60.0
"""How long a writer waits for another writer's transaction before giving up."""

_SQLITE_HEADER = b"SQLite format 3\x00"
_INHERITED: list[sqlite3.Connection] = []  # connections inherited over fork, kept alive and never used

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


class Connection:
    """Opening an archive file and its connection (see :mod:`lightning_nas.archive`);
    :class:`~lightning_nas.archive.Archive` adds the tables. Use as a context manager or call :meth:`close`.

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
                raise ArchiveError(f"{self.path} is empty (no lightning-nas tables): a zc stage stopped before "
                                   "it wrote anything, or a file created by hand. Delete it and run the zc stage "
                                   "(python -m lightning_nas zc --config configs/zc/tiny.yaml) to make the archive")
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

    def __enter__(self):
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
