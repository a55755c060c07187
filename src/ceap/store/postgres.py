"""The server store: PostgreSQL, with bulk writes through COPY.

A run's candidates are written as Arrow-made CSV into a temporary staging
table with one COPY, then moved with ``INSERT ... ON CONFLICT DO NOTHING``,
all in the run's transaction.
"""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, ClassVar, Literal

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg_pool import ConnectionPool

from ceap.model import Candidate, CandidateQuery, InboxItem, RunRecord, WriteResult, utcnow
from ceap.store.base import Store, StoreConfig
from ceap.store.pg_serving import PgServingReads
from ceap.store.schema import CANDIDATE_COLUMNS, QUARANTINE_SCHEMA, loads
from ceap.store.sql_common import (
    INBOX_COLUMNS,
    RUN_COLUMNS,
    SELECT_CANDIDATE,
    candidate_from_row,
    inbox_from_row,
    run_from_row,
)
from ceap.store.tx import PostgresTx

_COLS = ", ".join(CANDIDATE_COLUMNS)


class PostgresStoreConfig(StoreConfig):
    type: Literal["postgres"] = "postgres"


#: the most read connections one store (one process) opens; ``CEAP_PG_POOL_MAX`` changes it
POOL_MAX_ENV = "CEAP_PG_POOL_MAX"


def _csv(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False))
    return buffer.getvalue()


class PostgresStore(Store[PostgresStoreConfig]):
    """PostgreSQL store, safe to share between threads and processes.

    Writes and ``tx()`` go through one connection behind a lock. Reads (``candidates``,
    ``runs``, ``inbox_list``, ...) borrow a connection from a pool (psycopg_pool, opened on
    the first read, 1 to ``CEAP_PG_POOL_MAX`` = 10 connections), so they run side by side;
    each read is its own autocommit statement and sees every transaction committed before
    it started. A read on a thread that is inside ``tx()`` uses the writer's connection,
    so it sees that transaction's own changes. The serving API's two hot reads run on the
    event loop, on connections of their own (``serving_reads``: ``ceap.store.pg_serving``).
    """

    config_model: ClassVar[type[StoreConfig]] = PostgresStoreConfig
    remote_reads: ClassVar[bool] = True
    schemes: ClassVar[tuple[str, ...]] = ("postgresql", "postgres")

    def __init__(self, config: PostgresStoreConfig, context: Any = None):
        super().__init__(config, context)
        url = config.url
        scheme, rest = url.split(":", 1)
        self._conninfo = "postgresql:" + rest if "+" in scheme or scheme == "postgres" else url
        self._serving = PgServingReads(self._conninfo, lambda: self.clock())
        self._conn = psycopg.connect(self._conninfo, autocommit=True)
        self._lock = threading.RLock()
        self._local = threading.local()  # per thread: whether it is inside tx()
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._pool_lock = threading.Lock()
        self._closed = False

    def serving_reads(self) -> PgServingReads:
        return self._serving

    def _read_pool(self) -> ConnectionPool[psycopg.Connection[Any]]:
        pool = self._pool
        if pool is None:
            with self._pool_lock:  # not the writer's lock: a write may be under way
                if self._closed:
                    raise psycopg.OperationalError("the connection is closed")
                if self._pool is None:
                    size = int(os.environ.get(POOL_MAX_ENV) or 10)
                    self._pool = ConnectionPool(self._conninfo, min_size=1, max_size=max(size, 1),
                                                kwargs={"autocommit": True}, open=True,
                                                name="ceap-read", timeout=30)
                pool = self._pool
        return pool

    def _read(self, sql: str, params: Any = ()) -> list[Any]:
        """Rows of a query, on a pooled connection (see the class docstring)."""
        if getattr(self._local, "writing", 0):
            with self._lock:
                return self._conn.execute(sql, params).fetchall()  # type: ignore[arg-type]
        with self._read_pool().connection() as conn:
            return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]

    def migrate(self) -> None:
        """Bring the schema to the newest revision under an advisory lock, so concurrent
        first starts wait for one another (``ceap.store.migrations``)."""
        from ceap.store.migrations import upgrade

        upgrade(self)

    def write_run(
        self, run: RunRecord, candidates: pa.Table, quarantine: pa.Table | None = None
    ) -> WriteResult:
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute("CREATE TEMP TABLE IF NOT EXISTS ceap_stage "
                        "(LIKE candidates) ON COMMIT DELETE ROWS")
            cur.execute("ALTER TABLE ceap_stage ALTER COLUMN id DROP NOT NULL")
            with cur.copy(f"COPY ceap_stage ({_COLS}) FROM STDIN (FORMAT csv)") as copy:
                copy.write(_csv(candidates.select(CANDIDATE_COLUMNS)))
            cur.execute(f"INSERT INTO candidates ({_COLS}) SELECT {_COLS} FROM ceap_stage "
                        "ON CONFLICT (tenant_id, dedup_key) DO NOTHING")
            inserted = max(cur.rowcount, 0)
            bad = quarantine.num_rows if quarantine is not None else 0
            if quarantine is not None and bad:
                names = ", ".join(QUARANTINE_SCHEMA.names)
                with cur.copy(f"COPY quarantine ({names}) FROM STDIN (FORMAT csv)") as copy:
                    copy.write(_csv(quarantine.select(QUARANTINE_SCHEMA.names)))
            result = WriteResult(inserted, candidates.num_rows - inserted, bad)
            run.funnel = {**run.funnel, "written": inserted, "already_present": result.duplicates}
            self._insert_run(cur, run)
        return result

    def record_run(self, run: RunRecord) -> None:
        with self._lock, self._conn.cursor() as cur:
            self._insert_run(cur, run)

    @staticmethod
    def _insert_run(cur: psycopg.Cursor[Any], run: RunRecord) -> None:
        cur.execute(
            f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s) "
            "ON CONFLICT (run_id) DO UPDATE SET status = EXCLUDED.status, "
            "finished_at = EXCLUDED.finished_at, funnel = EXCLUDED.funnel, error = EXCLUDED.error",
            (run.run_id, run.tenant_id, run.program, run.status, run.started_at,
             run.finished_at or utcnow(), json.dumps(run.funnel), run.error))

    def candidates(self, query: CandidateQuery) -> list[Candidate]:
        now = self.clock()
        where: list[str] = ["tenant_id = %s"]
        params: list[Any] = [query.tenant_id]
        for column in ("customer_id", "program", "status"):
            value = getattr(query, column)
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        if query.customer_ids is not None:
            where.append(f"customer_id IN ({', '.join('%s' for _ in query.customer_ids)})")
            params.extend(query.customer_ids)
        if query.servable:
            where.append("status IN ('pending', 'dispatched', 'sent') AND NOT holdout "
                         "AND not_before <= %s")
            params.append(now)
        if query.channel is not None:
            where.append("channels ? %s")
            params.append(query.channel)
        if not query.include_expired:
            where.append("expires_at > %s")
            params.append(now)
        sql = (f"{SELECT_CANDIDATE} WHERE {' AND '.join(where)} "
               "ORDER BY priority DESC, score DESC, id LIMIT %s")
        rows = self._read(sql, [*params, query.limit])
        return [candidate_from_row(r) for r in rows]

    def runs(self, tenant_id: str, program: str | None = None, limit: int = 20) -> list[RunRecord]:
        sql = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE tenant_id = %s"
        params: list[Any] = [tenant_id]
        if program:
            sql += " AND program = %s"
            params.append(program)
        sql += " ORDER BY started_at DESC LIMIT %s"
        rows = self._read(sql, [*params, limit])
        return [run_from_row(r) for r in rows]

    def last_cursor(self, tenant_id: str, program: str) -> dict[str, Any] | None:
        rows = self._read(
            "SELECT funnel->'cursor' FROM runs WHERE tenant_id = %s AND program = %s "
            "AND status = 'succeeded' AND jsonb_typeof(funnel->'cursor') = 'object' "
            "ORDER BY started_at DESC, finished_at DESC LIMIT 1", (tenant_id, program))
        return loads(rows[0][0]) if rows else None

    def quarantined(self, tenant_id: str, run_id: str) -> list[dict[str, str]]:
        rows = self._read(
            "SELECT row, reason FROM quarantine WHERE tenant_id = %s AND run_id = %s "
            "ORDER BY id", (tenant_id, run_id))
        return [{"row": r, "reason": why} for r, why in rows]

    def sweep_expired(self, now: datetime, tenant_id: str | None = None) -> int:
        # held for a digest: its own expires_at does not apply (docs/digests.md#limits)
        sql = ("DELETE FROM candidates WHERE expires_at <= %s AND NOT holdout "
               "AND status NOT IN ('digest', 'in_digest') AND NOT EXISTS "
               "(SELECT 1 FROM deliveries d WHERE d.candidate_id = candidates.id "
               "AND d.status IN ('queued', 'sending')) AND NOT EXISTS "
               "(SELECT 1 FROM candidates h WHERE h.tenant_id = candidates.tenant_id "
               "AND h.program = candidates.program AND h.holdout)")  # measured: keep
        params: list[Any] = [now]
        if tenant_id is not None:
            sql += " AND tenant_id = %s"
            params.append(tenant_id)
        with self._lock:
            cursor = self._conn.execute(sql, params)  # type: ignore[arg-type]
        return cursor.rowcount

    def inbox_add(self, items: list[InboxItem]) -> list[bool]:
        added = []
        now = self.clock()
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            for i in items:
                cur.execute(
                    "INSERT INTO inbox (tenant_id, customer_id, idempotency_key, program, "
                    "candidate_id, title, body, payload, created_at) "
                    "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) "
                    "ON CONFLICT (tenant_id, idempotency_key) DO NOTHING RETURNING id",
                    (i.tenant_id, i.customer_id, i.idempotency_key, i.program, i.candidate_id,
                     i.title, i.body, json.dumps(i.payload), now))
                added.append(cur.fetchone() is not None)
        return added

    def inbox_list(
        self, tenant_id: str, customer_id: str, unread_only: bool = False
    ) -> list[InboxItem]:
        sql = (f"SELECT {', '.join(INBOX_COLUMNS)} FROM inbox "
               "WHERE tenant_id = %s AND customer_id = %s")
        if unread_only:
            sql += " AND read_at IS NULL"
        rows = self._read(sql + " ORDER BY created_at DESC, id DESC", (tenant_id, customer_id))
        return [inbox_from_row(r) for r in rows]

    def inbox_mark_read(self, tenant_id: str, customer_id: str, ids: list[int]) -> int:
        if not ids:
            return 0
        with self._lock:
            cursor = self._conn.execute(
                "UPDATE inbox SET read_at = %s WHERE tenant_id = %s AND customer_id = %s "
                "AND read_at IS NULL AND id = ANY(%s)", (self.clock(), tenant_id, customer_id, ids))
        return cursor.rowcount

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        self._serving.close()
        with self._lock:
            self._conn.close()

    @contextmanager
    def tx(self) -> Iterator[PostgresTx]:
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            self._local.writing = getattr(self._local, "writing", 0) + 1
            try:
                yield PostgresTx(cur)
            finally:
                self._local.writing -= 1
