"""What the warehouse sources (Snowflake, Athena) share: a query or a table read as
Arrow batches, the cursor condition in the query, lower-case column names, and
errors that name the source and never show a credential."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, urlparse

import pyarrow as pa
from pydantic import Field, model_validator

from ceap.connectors import object_store
from ceap.connectors.base import Connector, ConnectorConfig
from ceap.errors import SourceError

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*){0,2}$")


class WarehouseConfig(ConnectorConfig):
    connection: str = Field(description="a connection named in ceap.yaml, or its URL")
    query: str | None = Field(None, description="a SELECT statement")
    table: str | None = Field(None, description="a table to read whole (instead of query)")
    lowercase_columns: bool = Field(True, description="the warehouse's upper-case column "
                                                      "names as lower case")

    @model_validator(mode="after")
    def _query_or_table(self) -> WarehouseConfig:
        if (self.query is None) == (self.table is None):
            raise ValueError("give exactly one of 'query' and 'table'")
        if self.table is not None and not _IDENT.match(self.table):
            raise ValueError("table: a name like events or db.schema.events")
        if self.cursor is not None and not _IDENT.match(self.cursor):
            raise ValueError("cursor: a plain column name")
        return self


class ParsedUrl:
    """A connection URL's parts; the password is kept out of ``repr`` and messages."""

    def __init__(self, url: str, scheme: str):
        parsed = urlparse(url)
        if parsed.scheme != scheme:
            raise SourceError(f"source.connection: expected a {scheme}:// URL")
        self.user = unquote(parsed.username or "")
        self.password = unquote(parsed.password or "")
        self.host = parsed.hostname or ""
        self.path = [unquote(p) for p in parsed.path.split("/") if p]
        self.options = {k: v[-1] for k, v in parse_qs(parsed.query).items()}

    def __repr__(self) -> str:
        return f"ParsedUrl(user={self.user!r}, host={self.host!r}, path={self.path!r})"


class WarehouseConnector(Connector[Any]):
    """Reads ``statement()`` with a DB-API cursor that yields Arrow."""

    pushes_cursor: ClassVar[bool] = True
    scheme: ClassVar[str] = ""

    def url(self) -> str:
        name = self.config.connection
        if "://" in name:
            return str(name)
        if name not in self.context.connections:
            known = ", ".join(sorted(self.context.connections)) or "none"
            raise SourceError(f"source.connection: no connection named {name!r} in ceap.yaml "
                              f"(known: {known})")
        return self.context.connections[name]

    def parsed(self) -> ParsedUrl:
        return ParsedUrl(self.url(), self.scheme)

    def describe(self) -> str:
        return str(self.config.table or "query")

    def statement(self) -> tuple[str, dict[str, Any] | None]:
        """The SQL to run and its parameters (the cursor's mark, bound by the driver)."""
        base = (f"SELECT * FROM {self.config.table}" if self.config.table
                else str(self.config.query).strip().rstrip(";"))
        if self.config.cursor and self.after is not None:
            return (f"SELECT * FROM ({base}) AS ceap_q WHERE {self.config.cursor} > %(after)s",
                    {"after": self.after})
        return base, None

    def fail(self, exc: BaseException, doing: str = "") -> SourceError:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        try:
            secret = self.parsed().password
        except SourceError:
            secret = ""
        text = object_store.redact(text.replace(secret, "***") if secret else text)
        return SourceError(f"source {self.describe()!r}: {doing}{text}")

    def tidy(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        if self.config.lowercase_columns:
            table = table.rename_columns([n.lower() for n in table.column_names])
        return table

    def rebatch(self, tables: Iterator[pa.Table]) -> Iterator[pa.RecordBatch]:
        size = self.config.batch_rows
        for table in tables:
            for batch in self.tidy(table).to_batches(max_chunksize=size):
                if batch.num_rows:
                    yield batch
