"""A thin transaction handle over both stores' drivers, so code outside the
stores (the outbox, the policies) writes each statement once.

Statements use ``?`` placeholders; timestamps go in through ``ts()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol


class Tx(Protocol):
    dialect: str

    def execute(self, sql: str, params: Sequence[Any] = (), prepare: bool | None = None) -> Any:
        """``prepare=False``: plan this statement afresh each time (PostgreSQL), for a
        lookup by index on a table that grows while the connection lives: a plan cached
        while it was empty would scan it whole."""

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    def ts(self, value: datetime | None) -> Any: ...

    def placeholders(self, n: int) -> str: ...


class SqliteTx:
    dialect = "sqlite"

    def __init__(self, conn: Any):
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = (), prepare: bool | None = None) -> Any:
        return self.conn.execute(sql, tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    def ts(self, value: datetime | None) -> Any:
        from ceap.store.schema import to_iso  # here: the schema module imports Arrow

        return None if value is None else to_iso(value)

    def placeholders(self, n: int) -> str:
        return ", ".join("?" * n)


class PostgresTx:
    dialect = "postgres"

    def __init__(self, cursor: Any):
        self.cursor = cursor

    def execute(self, sql: str, params: Sequence[Any] = (), prepare: bool | None = None) -> Any:
        self.cursor.execute(sql.replace("?", "%s"), tuple(params), prepare=prepare)
        return self.cursor

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.cursor.executemany(sql.replace("?", "%s"), rows)

    def ts(self, value: datetime | None) -> Any:
        return value

    def placeholders(self, n: int) -> str:
        return ", ".join("?" * n)
