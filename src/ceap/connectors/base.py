"""The connector contract: a source of Arrow record batches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from pydantic import Field

from ceap.factories import empty_dict, empty_list
from ceap.plugin import Plugin, PluginConfig

if TYPE_CHECKING:  # Arrow is imported where batches are read, not to validate a config
    import pyarrow as pa

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
    context: list[str] = Field(default_factory=empty_list, description="context dimension columns")
    columns: dict[str, ColumnType] = Field(default_factory=empty_dict)
    max_bad_share: float = Field(0.05, ge=0, le=1, description="fail the run past this share")
    batch_rows: int = Field(1_000_000, gt=0, description="rows per batch handed to the stages")
    cursor: str | None = Field(None, description="incremental source: a column that grows "
                               "(an update time, a sequence); each run reads only the rows "
                               "past the last committed run's high-water mark")


C = TypeVar("C", bound=ConnectorConfig)


class Connector(Plugin[C]):
    """Reads a source as a stream of Arrow record batches."""

    kind: ClassVar[str] = "connector"
    config_model: ClassVar[type[ConnectorConfig]] = ConnectorConfig
    #: True when ``read`` itself honours ``after`` (the filter runs in the source's scan)
    pushes_cursor: ClassVar[bool] = False
    #: the high-water mark of the last committed run (``config.cursor`` values past it are new)
    after: Any = None

    def describe(self) -> str:
        """A short name of what is read, used in messages (a path, a query)."""
        return self.config.type

    def schema(self) -> pa.Schema:
        """The schema of the batches ``read`` yields, without reading the data."""
        raise NotImplementedError

    def read(self) -> Iterator[pa.RecordBatch]:
        """Yield the source's rows as record batches of at most ``batch_rows`` rows."""
        raise NotImplementedError

    def batches(self) -> Iterator[pa.RecordBatch]:
        """``read``, limited to the rows past ``after`` when the source has a cursor.

        Connectors that can push the condition into their scan set ``pushes_cursor``;
        for the others the rows are filtered here, batch by batch."""
        import pyarrow as pa
        import pyarrow.compute as pc

        cursor = self.config.cursor
        if cursor is None or self.after is None or self.pushes_cursor:
            yield from self.read()
            return
        for batch in self.read():
            column = batch.column(cursor)
            kept = pc.fill_null(pc.greater(column, pa.scalar(self.after, column.type)), False)
            filtered = batch.filter(kept)
            if filtered.num_rows:
                yield filtered

    def estimated_rows(self) -> int | None:
        """How many rows ``read`` will yield, when known cheaply (for progress bars)."""
        return None
