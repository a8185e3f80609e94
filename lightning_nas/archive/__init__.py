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

from .connection import BUSY_TIMEOUT_S, ArchiveError, ArchiveNotFoundError, Connection
from .schema import FORMAT, MIGRATIONS, PROBE_SOURCES, SCHEMA_VERSION, ZC_STATUSES
from .tables import CLAIM_LEASE_S, Archive

__all__ = ["BUSY_TIMEOUT_S", "CLAIM_LEASE_S", "FORMAT", "MIGRATIONS", "PROBE_SOURCES", "SCHEMA_VERSION", "ZC_STATUSES",
           "Archive", "ArchiveError", "ArchiveNotFoundError", "Connection"]
