"""What an archive holds, table by table: cells, probes, ZC rows, normalisers, architectures, clusters, ZC claims
and host latencies (:class:`Archive`)."""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections.abc import Iterable, Iterator

import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from ..space.cell import Cell
from .connection import ArchiveError, Connection, _dumps, _loads, _same_tensor, _values
from .schema import PROBE_SOURCES, ZC_STATUSES

_CHUNK = 1000  # rows per transaction when adding many cells
_IN_CHUNK = 500  # bound parameters per IN (...) query

_SAMPLE_ORDER = "ORDER BY c.sample_index IS NULL, c.sample_index, z.cell_hash"
"""ZC rows in the order of their cells' sample index (rows without a stored cell last, by hash)."""


CLAIM_LEASE_S = 600.0
"""How long a claim on a pending ZC evaluation lasts unless renewed (:meth:`Archive.claim_zc`)."""
_OWNERS: set[str] = set()  # claim owners that made claims in this process



class Archive(Connection):
    """A lightning-nas archive file (see :mod:`lightning_nas.archive`). Use as a context manager or call
    :meth:`close`."""

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
    _INSERT_ARCH = ("INSERT INTO archs (spec, hl_spec, metrics, budget, stage, run, created)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)")

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
            cur.execute(self._INSERT_ARCH, params)
            return int(cur.lastrowid)

    def add_archs(self, records: Iterable[dict]) -> int:
        """:meth:`add_arch` for many records (dicts with ``spec`` and optionally ``metrics``, ``hl_spec``,
        ``budget``, ``stage``, ``run``) in one transaction, in the given order; returns how many."""
        now = time.time()
        params = []
        for k, r in enumerate(records):
            if not isinstance(r.get("spec"), dict):
                raise ValueError(f"records[{k}].spec: expected a dict (the architecture's JSON spec)")
            hl_spec = r.get("hl_spec")
            params.append((_dumps(r["spec"], "spec"), None if hl_spec is None else _dumps(hl_spec, "hl_spec"),
                           _dumps(r.get("metrics") or {}, "metrics"),
                           None if r.get("budget") is None else _dumps(r["budget"], "budget"),
                           str(r.get("stage", "")), str(r.get("run", "")), now))
        if not params:
            return 0
        with self._write() as cur:
            cur.executemany(self._INSERT_ARCH, params)
        return len(params)

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
            self._drop_stale_claims(cur, now)
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

    @staticmethod
    def _drop_stale_claims(cur, now: float) -> None:
        """Drop expired claims and those of an owner process on this machine that has ended (or, under this
        process's own pid, an owner this process never ran: an earlier process that had the same pid)."""
        host, pid = socket.gethostname(), os.getpid()
        cur.execute("DELETE FROM zc_claims WHERE expires <= ?", (now,))
        stale = [
            (other_owner, other_pid)
            for other_owner, other_pid in cur.execute(
                "SELECT DISTINCT owner, pid FROM zc_claims WHERE host = ?", (host,)
            ).fetchall()
            if (other_owner not in _OWNERS if other_pid == pid else not _process_alive(other_pid))
        ]
        cur.executemany("DELETE FROM zc_claims WHERE host = ? AND owner = ? AND pid = ?",
                        [(host, o, p) for o, p in stale])

    def live_zc_owners(self, probe_id: str) -> set[str]:
        """The owners holding a live claim on ``probe_id`` (stale claims are dropped first, as in
        :meth:`claim_zc`)."""
        with self._write() as cur:
            self._drop_stale_claims(cur, time.time())
            return {r[0] for r in cur.execute("SELECT DISTINCT owner FROM zc_claims WHERE probe_id = ?", (probe_id,))}

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
