"""The connector contract: a source of Arrow record batches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal, TypeVar

import pyarrow as pa
from pydantic import Field

from ceap.plugin import Plugin, PluginConfig

ColumnType = Literal["string", "int", "float", "bool", "date", "timestamp"]

#: DuckDB type for each declared column type.
DUCKDB_TYPES: dict[str, str] = {
    "string": "VARCHAR",
    "int": "BIGINT",
    "float": "DOUBLE",
    "bool": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
}


class ConnectorConfig(PluginConfig):
    """Fields every source has, whatever it reads from.

    ``columns`` declares the types the program relies on: values that do not
    parse as the declared type send their row to quarantine with the reason.
    """

    customer_id: str = Field("customer_id", description="column holding the customer id")
    subject_id: str | None = Field(None, description="column holding what the action is about")
    context: list[str] = Field(default_factory=list, description="context dimension columns")
    columns: dict[str, ColumnType] = Field(default_factory=dict)
    max_bad_share: float = Field(0.05, ge=0, le=1, description="fail the run past this share")
    batch_rows: int = Field(1_000_000, gt=0, description="rows per batch handed to the stages")


C = TypeVar("C", bound=ConnectorConfig)


class Connector(Plugin[C]):
    """Reads a source as a stream of Arrow record batches."""

    kind: ClassVar[str] = "connector"
    config_model: ClassVar[type[ConnectorConfig]] = ConnectorConfig

    def describe(self) -> str:
        """A short name of what is read, used in messages (a path, a query)."""
        return self.config.type

    def schema(self) -> pa.Schema:
        """The schema of the batches ``read`` yields, without reading the data."""
        raise NotImplementedError

    def read(self) -> Iterator[pa.RecordBatch]:
        """Yield the source's rows as record batches of at most ``batch_rows`` rows."""
        raise NotImplementedError

    def estimated_rows(self) -> int | None:
        """How many rows ``read`` will yield, when known cheaply (for progress bars)."""
        return None
