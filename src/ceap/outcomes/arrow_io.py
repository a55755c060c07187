"""Columnar reads from the store and bulk writes back, for the outcome tables.

``reader`` yields a function that runs queries in one read snapshot and
returns Arrow tables of a given schema: on PostgreSQL through ADBC (binary
COPY, no Python object per value); on SQLite through a second connection of
the same SQLite library, a batch of rows at a time. (ADBC's SQLite driver
links its own copy of SQLite, and two copies in one process break each
other's file locks on the store's file, so it is not used here.)
``bulk_insert`` writes an Arrow table with ``INSERT ... ON CONFLICT DO
NOTHING``: one ``executemany`` on SQLite, a COPY into a staging table on
PostgreSQL; both in the store's own transaction, returning how many rows
were new.
"""

from __future__ import annotations

import hashlib
import io
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

UTC_TS = pa.timestamp("us", tz="UTC")
_BATCH = 100_000

Read = Callable[[str, pa.Schema], pa.Table]


def literal(value: str) -> str:
    """A SQL string literal (for names already validated by the program spec)."""
    return "'" + str(value).replace("'", "''") + "'"


def dialect(store: Any) -> str:
    return "sqlite" if str(store.config.url).startswith("sqlite") else "postgres"


def _typed(values: Sequence[Any], kind: pa.DataType) -> pa.Array:
    if pa.types.is_timestamp(kind):
        return as_utc(pa.array(values, pa.string()))
    if pa.types.is_boolean(kind):
        return pc.cast(pa.array(values, pa.int64()), pa.bool_())
    return pa.array(values, kind)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    return pa.table([as_utc(table.column(i)) if pa.types.is_timestamp(f.type)
                     else pc.cast(table.column(i), f.type) for i, f in enumerate(schema)], schema=schema)


@contextmanager
def reader(store: Any) -> Iterator[Read]:
    """``read(sql, schema)`` over one consistent snapshot of the store (no parameters:
    callers inline only names the program spec has validated, through ``literal``)."""
    if dialect(store) == "postgres":
        import adbc_driver_postgresql.dbapi as pg

        url = str(store.config.url)
        with closing(pg.connect("postgresql" + url[url.index(":"):])) as conn, \
                closing(conn.cursor()) as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")

            def read_pg(sql: str, schema: pa.Schema) -> pa.Table:
                cur.execute(sql)
                return _conform(cur.fetch_arrow_table(), schema)

            yield read_pg
            conn.rollback()
        return
    path = getattr(store, "path", ":memory:")
    if path == ":memory:":  # only reachable through the store's own connection
        with store.tx() as tx:
            yield lambda sql, schema: _rows(tx.execute(sql), schema)
        return
    with closing(sqlite3.connect(path, timeout=30)) as conn:
        conn.execute("BEGIN")  # a read snapshot: writers are not blocked (WAL)
        yield lambda sql, schema: _rows(conn.execute(sql), schema)
        conn.rollback()


def _rows(cursor: Any, schema: pa.Schema) -> pa.Table:
    batches = []
    while True:
        rows = cursor.fetchmany(_BATCH)
        if not rows:
            break
        columns = list(zip(*rows, strict=True))
        batches.append(pa.record_batch([_typed(columns[i], f.type) for i, f in enumerate(schema)],
                                       schema=schema))
    return pa.Table.from_batches(batches, schema=schema)


def as_utc(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """A time column as UTC microseconds: a timestamp (PostgreSQL), or the stored ISO text
    (SQLite; empty text is null)."""
    if pa.types.is_timestamp(column.type):
        return pc.cast(column, UTC_TS)
    text = pc.cast(column, pa.string())
    text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
    return pc.cast(text, UTC_TS)


def bulk_insert(store: Any, table: str, rows: pa.Table, conflict: Sequence[str]) -> int:
    """Insert ``rows`` (column names as in ``table``), skipping conflicts; returns new rows."""
    if rows.num_rows == 0:
        return 0
    names = rows.column_names
    cols = ", ".join(names)
    with store.tx() as tx:
        if tx.dialect == "sqlite":
            from ceap.store.sqlite import arrow_row_iter

            conn = tx.conn
            before = conn.total_changes
            conn.executemany(f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' * len(names))}) "
                             f"ON CONFLICT ({', '.join(conflict)}) DO NOTHING", arrow_row_iter(rows))
            return int(conn.total_changes - before)
        cur = tx.cursor
        stage = f"ceap_stage_{table}_{hashlib.sha256(cols.encode()).hexdigest()[:8]}"  # per column set
        cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
                    f"SELECT {cols} FROM {table} WITH NO DATA")
        buffer = io.BytesIO()
        pacsv.write_csv(rows, buffer, pacsv.WriteOptions(include_header=False))
        with cur.copy(f"COPY {stage} ({cols}) FROM STDIN (FORMAT csv)") as copy:
            copy.write(buffer.getvalue())
        cur.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} "
                    f"ON CONFLICT ({', '.join(conflict)}) DO NOTHING")
        return max(int(cur.rowcount), 0)


__all__ = ["UTC_TS", "Read", "as_utc", "bulk_insert", "dialect", "literal", "reader"]
