"""The embedded default store: one SQLite file in WAL mode, nothing to install."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc

from ceap.model import Candidate, CandidateQuery, InboxItem, RunRecord, WriteResult
from ceap.store.base import Store, StoreConfig
from ceap.store.schema import CANDIDATE_COLUMNS, QUARANTINE_SCHEMA, to_iso
from ceap.store.sql_common import (
    INBOX_COLUMNS,
    RUN_COLUMNS,
    SELECT_CANDIDATE,
    candidate_from_row,
    inbox_from_row,
    run_from_row,
)
from ceap.store.tx import SqliteTx

_INSERT_CANDIDATES = (
    f"INSERT INTO candidates ({', '.join(CANDIDATE_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in CANDIDATE_COLUMNS)}) "
    "ON CONFLICT (tenant_id, dedup_key) DO NOTHING"
)
_ISO = "%Y-%m-%dT%H:%M:%S.%fZ"  # strftime in Arrow prints microseconds for %S


class SqliteStoreConfig(StoreConfig):
    type: Literal["sqlite"] = "sqlite"


def sqlite_path(url: str) -> str:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs.db`` -> ``/abs.db``."""
    if not url.startswith("sqlite://"):
        raise ValueError(f"not a sqlite URL: {url!r}")
    rest = url[len("sqlite://"):]
    return rest[1:] if rest.startswith("/") else rest


def _is_constant(column: pa.ChunkedArray) -> bool:
    """Whether every value equals the first (no nulls). Floats are never treated as
    constant: NaN and -0.0 would not come back as they were."""
    kind = column.type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind)
            or pa.types.is_boolean(kind) or pa.types.is_timestamp(kind) or pa.types.is_date(kind)):
        return False
    return bool(pc.all(pc.equal(column, column[0])).as_py())


#: rows from which ``_column_values`` looks for a column holding one value
_CONSTANT_FROM = 16


def _column_values(column: pa.ChunkedArray, n: int, time_format: str | None) -> list[Any]:
    """One column as Python values; a column holding one value (most candidate
    columns: tenant, program, run, times...) is converted once and repeated (from
    ``_CONSTANT_FROM`` rows: on fewer, converting them all is cheaper than the check)."""
    if n and column.null_count == n:
        return [None] * n
    if n >= _CONSTANT_FROM and column.null_count == 0 and _is_constant(column):
        return _column_values(column.slice(0, 1), 1, time_format) * n
    if time_format and pa.types.is_timestamp(column.type):
        fast = iso_text(column) if time_format == _ISO else None
        column = fast if fast is not None else pc.strftime(column, format=time_format.replace(".%f", ""))
    return column.to_pylist()


_FIRST = pa.scalar(-62135596800_000_000, pa.timestamp("us"))   # 0001-01-01: datetime's start
_END = pa.scalar(253402300800_000_000, pa.timestamp("us"))     # 10000-01-01: datetime's end


def iso_text(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array | None:
    """Microsecond UTC (or naive) times as ``pc.strftime(_ISO)`` writes them
    (``2026-11-25T10:00:00.000000Z``; nulls stay null) by Arrow's cast to text, which
    formats column-wise (``strftime`` value by value: some 6 µs each); None for another
    unit or zone, or a time outside years 1-9999 (left to ``strftime``)."""
    kind = column.type
    if kind.unit != "us" or kind.tz not in (None, "UTC"):
        return None
    plain = column.cast(pa.timestamp("us"))
    if len(plain) > plain.null_count and not (
            pc.greater_equal(pc.min(plain), _FIRST).as_py() and pc.less(pc.max(plain), _END).as_py()):
        return None
    text = pc.utf8_replace_slice(pc.cast(plain, pa.string()), 10, 11, "T")
    return pc.binary_join_element_wise(text, pa.scalar("Z", pa.string()), "")


def arrow_row_iter(table: pa.Table, time_format: str | None = _ISO) -> Iterator[tuple[Any, ...]]:
    """Rows of ``table`` as tuples, converted column by column (no per-cell Python).

    Columns are converted up front; the tuples are made one at a time, so a
    consumer such as ``executemany`` never holds them all."""
    n = table.num_rows
    columns = [_column_values(table.column(name), n, time_format) for name in table.column_names]
    return zip(*columns, strict=True)


def arrow_rows(table: pa.Table, time_format: str | None = _ISO) -> list[tuple[Any, ...]]:
    """Rows of ``table`` as a list of tuples (see ``arrow_row_iter``)."""
    return list(arrow_row_iter(table, time_format))


#: the writer connection's page cache (KiB) and WAL pages between automatic checkpoints
WRITER_CACHE_KIB = 65_536
WAL_CHECKPOINT_PAGES = 10_000


class SqliteStore(Store[SqliteStoreConfig]):
    """SQLite store; safe to share between threads and processes.

    Writes go through one connection behind a lock. Reads (``candidates``, ``runs``,
    ``inbox_list``, ...) use a read-only connection per thread, so they run side by side
    with each other and with a write (WAL: a read sees every transaction committed
    before it started). A read on a thread that is inside ``tx()`` uses the writer's
    connection, so it sees that transaction's own changes. ``:memory:`` has one
    connection for everything.
    """

    config_model: ClassVar[type[StoreConfig]] = SqliteStoreConfig
    schemes: ClassVar[tuple[str, ...]] = ("sqlite",)

    def __init__(self, config: SqliteStoreConfig, context: Any = None):
        super().__init__(config, context)
        path = sqlite_path(config.url)
        if path != ":memory:":
            resolved = self.context.path(path)
            resolved.parent.mkdir(parents=True, exist_ok=True)
            path = str(resolved)
        self.path = path
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                     timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        # the worker's event log inserts each micro-batch at random places of its customer
        # index: a page cache of 64 MiB (default 2 MiB) and a checkpoint every 10,000 WAL
        # pages (default 1,000) halve the system time of those inserts (bench/README.md)
        self._conn.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
        self._conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
        self._local = threading.local()  # per thread: its read connection, whether in a write
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False

    def _read_connection(self) -> sqlite3.Connection | None:
        """This thread's read-only connection, or None to read on the writer's."""
        local = self._local
        writing: int = getattr(local, "writing", 0)
        if writing or self.path == ":memory:":
            return None
        conn: sqlite3.Connection | None = getattr(local, "reader", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=30)
            conn.execute("PRAGMA query_only=ON")
            with self._readers_lock:  # not the writer's lock: a write may be under way
                if self._closed:
                    conn.close()
                    raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
                self._readers.append(conn)
            local.reader = conn
        return conn

    def _read(self, sql: str, params: Any = ()) -> list[Any]:
        """Rows of a query, on this thread's read connection (see the class docstring)."""
        conn = self._read_connection()
        if conn is None:
            with self._lock:
                return self._conn.execute(sql, params).fetchall()
        return conn.execute(sql, params).fetchall()

    # -- schema ---------------------------------------------------------
    def migrate(self) -> None:
        """Bring the schema to the newest revision (``ceap.store.migrations``)."""
        from ceap.store.migrations import upgrade

        upgrade(self)

    # -- writes ---------------------------------------------------------
    def write_run(
        self, run: RunRecord, candidates: pa.Table, quarantine: pa.Table | None = None
    ) -> WriteResult:
        rows = arrow_row_iter(candidates.select(CANDIDATE_COLUMNS))
        bad = arrow_rows(quarantine.select(QUARANTINE_SCHEMA.names)) if quarantine else []
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                before = conn.total_changes
                conn.executemany(_INSERT_CANDIDATES, rows)
                inserted = conn.total_changes - before
                if bad:
                    conn.executemany(
                        "INSERT INTO quarantine (tenant_id, run_id, program, row, reason) "
                        "VALUES (?, ?, ?, ?, ?)", bad)
                result = WriteResult(inserted, candidates.num_rows - inserted, len(bad))
                run.funnel = {**run.funnel, "written": inserted, "already_present": result.duplicates}
                self._insert_run(run)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return result

    def record_run(self, run: RunRecord) -> None:
        with self._lock:
            self._insert_run(run)

    def _insert_run(self, run: RunRecord) -> None:
        self._conn.execute(
            f"INSERT OR REPLACE INTO runs ({', '.join(RUN_COLUMNS)}) VALUES (?,?,?,?,?,?,?,?)",
            (run.run_id, run.tenant_id, run.program, run.status, to_iso(run.started_at),
             to_iso(run.finished_at or self.clock()), json.dumps(run.funnel), run.error),
        )

    # -- reads ----------------------------------------------------------
    def candidates(self, query: CandidateQuery) -> list[Candidate]:
        now = to_iso(self.clock())
        where, params = ["tenant_id = ?"], [query.tenant_id]
        for column in ("customer_id", "program", "status"):
            value = getattr(query, column)
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if query.customer_ids is not None:
            where.append(f"customer_id IN ({', '.join('?' for _ in query.customer_ids)})")
            params.extend(query.customer_ids)
        if query.servable:
            where.append("status IN ('pending', 'dispatched', 'sent') AND NOT holdout "
                         "AND not_before <= ?")
            params.append(now)
        if query.channel is not None:
            where.append("EXISTS (SELECT 1 FROM json_each(channels) WHERE value = ?)")
            params.append(query.channel)
        if not query.include_expired:
            where.append("expires_at > ?")
            params.append(now)
        sql = (f"{SELECT_CANDIDATE} WHERE {' AND '.join(where)} "
               "ORDER BY priority DESC, score DESC, id LIMIT ?")
        rows = self._read(sql, [*params, query.limit])
        return [candidate_from_row(r) for r in rows]

    def runs(self, tenant_id: str, program: str | None = None, limit: int = 20) -> list[RunRecord]:
        sql = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE tenant_id = ?"
        params: list[Any] = [tenant_id]
        if program:
            sql += " AND program = ?"
            params.append(program)
        sql += " ORDER BY started_at DESC LIMIT ?"
        rows = self._read(sql, [*params, limit])
        return [run_from_row(r) for r in rows]

    def last_cursor(self, tenant_id: str, program: str) -> dict[str, Any] | None:
        rows = self._read(
            "SELECT json_extract(funnel, '$.cursor') FROM runs WHERE tenant_id = ? "
            "AND program = ? AND status = 'succeeded' "
            "AND json_type(funnel, '$.cursor') = 'object' "
            "ORDER BY started_at DESC, finished_at DESC LIMIT 1", (tenant_id, program))
        return json.loads(rows[0][0]) if rows else None

    def quarantined(self, tenant_id: str, run_id: str) -> list[dict[str, str]]:
        rows = self._read(
            "SELECT row, reason FROM quarantine WHERE tenant_id = ? AND run_id = ? ORDER BY id",
            (tenant_id, run_id))
        return [{"row": r, "reason": why} for r, why in rows]

    def sweep_expired(self, now: datetime, tenant_id: str | None = None) -> int:
        # held for a digest: its own expires_at does not apply (docs/digests.md#limits)
        sql = ("DELETE FROM candidates WHERE expires_at <= ? AND NOT holdout "
               "AND status NOT IN ('digest', 'in_digest') AND NOT EXISTS "
               "(SELECT 1 FROM deliveries d WHERE d.candidate_id = candidates.id "
               "AND d.status IN ('queued', 'sending')) AND NOT EXISTS "
               "(SELECT 1 FROM candidates h WHERE h.tenant_id = candidates.tenant_id "
               "AND h.program = candidates.program AND h.holdout)")  # measured: keep
        params: list[Any] = [to_iso(now)]
        if tenant_id is not None:
            sql += " AND tenant_id = ?"
            params.append(tenant_id)
        with self._lock:
            cursor = self._conn.execute(sql, params)
        return cursor.rowcount

    # -- inbox ----------------------------------------------------------
    def inbox_add(self, items: list[InboxItem]) -> list[bool]:
        now = to_iso(self.clock())
        added = []
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for i in items:
                    cursor = self._conn.execute(
                        "INSERT INTO inbox (tenant_id, customer_id, idempotency_key, program, "
                        "candidate_id, title, body, payload, created_at) "
                        "VALUES (?,?,?,?,?,?,?,?,?) "
                        "ON CONFLICT (tenant_id, idempotency_key) DO NOTHING",
                        (i.tenant_id, i.customer_id, i.idempotency_key, i.program,
                         i.candidate_id, i.title, i.body, json.dumps(i.payload), now))
                    added.append(cursor.rowcount == 1)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return added

    def inbox_list(
        self, tenant_id: str, customer_id: str, unread_only: bool = False
    ) -> list[InboxItem]:
        sql = (f"SELECT {', '.join(INBOX_COLUMNS)} FROM inbox "
               "WHERE tenant_id = ? AND customer_id = ?")
        if unread_only:
            sql += " AND read_at IS NULL"
        rows = self._read(sql + " ORDER BY created_at DESC, id DESC", (tenant_id, customer_id))
        return [inbox_from_row(r) for r in rows]

    def inbox_mark_read(self, tenant_id: str, customer_id: str, ids: list[int]) -> int:
        if not ids:
            return 0
        marks = ", ".join("?" for _ in ids)
        with self._lock:
            cursor = self._conn.execute(
                f"UPDATE inbox SET read_at = ? WHERE tenant_id = ? AND customer_id = ? "
                f"AND read_at IS NULL AND id IN ({marks})",
                (to_iso(self.clock()), tenant_id, customer_id, *ids))
        return cursor.rowcount

    def close(self) -> None:
        with self._readers_lock:
            self._closed = True
            for reader in self._readers:
                reader.close()
            self._readers.clear()
        with self._lock:
            self._conn.close()

    @contextmanager
    def tx(self) -> Iterator[SqliteTx]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            self._local.writing = getattr(self._local, "writing", 0) + 1
            try:
                yield SqliteTx(self._conn)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            finally:
                self._local.writing -= 1


__all__ = ["SqliteStore", "SqliteStoreConfig", "arrow_row_iter", "arrow_rows", "sqlite_path"]
