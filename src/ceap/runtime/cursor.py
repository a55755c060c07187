"""Incremental sources: the high-water mark of a program's cursor column.

A program whose source declares ``cursor: updated_at`` reads only the rows whose
cursor is past the last committed run's mark (like the ``last_sync_time`` of
reverse-ETL tools). The mark travels in the run record's funnel
(``{"column", "type", "through"}``), which the store commits in the same
transaction as the run's candidates: a run that fails, or dies before its write
commits, does not move it, and the next run reads the same rows again (their
dedup keys keep candidates from doubling within the dedup window).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ceap.errors import SourceError


def encode(column: str, kind: pa.DataType, value: Any) -> dict[str, Any]:
    """A JSON-ready high-water mark."""
    shown = value.isoformat() if isinstance(value, date | datetime) else value
    return {"column": column, "type": str(kind), "through": shown}


def decode(mark: dict[str, Any] | None, column: str) -> Any:
    """The Python value of ``mark`` if it is for ``column`` (a renamed cursor starts over)."""
    if not mark or mark.get("column") != column or mark.get("through") is None:
        return None
    kind, value = str(mark.get("type", "")), mark["through"]
    if kind.startswith("timestamp"):
        return datetime.fromisoformat(value)
    if kind.startswith("date"):
        return date.fromisoformat(value)
    return value


class HighWater:
    """The largest cursor value seen in a run's batches (or the previous mark)."""

    def __init__(self, column: str, previous: dict[str, Any] | None):
        self.column = column
        self.previous = previous if previous and previous.get("column") == column else None
        self.kind: pa.DataType | None = None
        self.value: Any = None

    def see(self, batch: pa.RecordBatch | pa.Table) -> None:
        if self.column not in batch.schema.names:
            raise SourceError(f"source.cursor: unknown column {self.column!r} "
                              f"(the rows have: {', '.join(batch.schema.names)})")
        column = batch.column(self.column)
        top = pc.max(column).as_py()
        if top is None:
            return
        self.kind = column.type
        if self.value is None or top > self.value:
            self.value = top

    def mark(self) -> dict[str, Any] | None:
        """The mark this run leaves: its largest value, or the previous mark if it read none."""
        if self.value is None or self.kind is None:
            return self.previous
        return encode(self.column, self.kind, self.value)
