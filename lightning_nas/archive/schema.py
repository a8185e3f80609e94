"""The archive's table layout: the schema of a new archive and the migrations of older ones."""

from __future__ import annotations

SCHEMA_VERSION = 2
"""Version of the table layout: an older archive is migrated when opened (:data:`MIGRATIONS`), a newer one refused."""

FORMAT = "lightning-nas-archive"
"""Value of ``meta.format`` that marks a lightning-nas archive."""

PROBE_SOURCES = ("digits", "cifar10", "gaussian")
"""Where a probe batch may come from."""

ZC_STATUSES = ("ok", "failed")

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

