"""Reading store tables into Arrow for the experiment reports (both SQL stores).

Rows come through the store's own connection (``Store.tx``), are turned into Arrow
column by column with the declared types, and are joined in DuckDB by the callers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from ceap.store.tx import Tx


def table_exists(tx: Tx, name: str) -> bool:
    """Whether the store has table ``name`` (PostgreSQL: in the current search path)."""
    if tx.dialect == "sqlite":
        return tx.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                          (name,)).fetchone() is not None
    return tx.execute("SELECT to_regclass(?) IS NOT NULL", (name,)).fetchone()[0]


def first_channel(tx: Tx, column: str = "channels") -> str:
    """SQL for the first channel of a candidate's JSON channel list."""
    return f"json_extract({column}, '$[0]')" if tx.dialect == "sqlite" else f"{column}->>0"


def _array(values: Sequence[Any], kind: pa.DataType) -> pa.Array:
    if pa.types.is_timestamp(kind) and any(isinstance(v, str) for v in values):
        return pa.array(values, pa.string()).cast(kind)  # SQLite keeps ISO text
    if pa.types.is_boolean(kind):
        return pa.array(values).cast(kind)  # SQLite keeps 0 and 1
    return pa.array(values, kind)


def fetch_table(tx: Tx, sql: str, params: Sequence[Any], schema: pa.Schema) -> pa.Table:
    """The rows of ``sql`` as a table of ``schema`` (one field per selected column, in order)."""
    rows = tx.execute(sql, params).fetchall()
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    return pa.table([_array(list(c), f.type) for c, f in zip(columns, schema, strict=True)],
                    schema=schema)
