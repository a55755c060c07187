"""Keyed state in memory: the events each customer's features need, per partition.

A worker keeps, for every partition it reads, the events of the types its programs'
features name, within the longest window plus the allowed lateness of that
partition's watermark, as Arrow tables. A micro-batch takes its customers' events
from here (``history``) instead of reading the event log, and adds its own events
once they are logged (``add``); the features are computed over them exactly as
before (``ceap.realtime.features``), so the result does not depend on arrival order
or on how the stream is split into micro-batches.

The event log in the store is the changelog: every micro-batch appends its events,
with their partition, in one statement before the broker's offsets are committed.
A partition's state is restored from it (``restore``) when the worker takes the
partition over (``ceap.realtime.claims``): after a start, a rebalance, or a move
back from another worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from ceap.realtime.events import EVENT_SCHEMA

#: compact a partition's chunks (and drop what no window reaches) past this many
COMPACT_EVERY = 16


@dataclass
class _Partition:
    chunks: list[pa.Table] = field(default_factory=list)
    rows: int = 0


class KeyedState:
    """The events of ``types`` per partition, kept ``keep`` behind each partition's watermark."""

    def __init__(self, types: set[str], keep: timedelta):
        self.types = set(types)
        self.keep = keep
        self.partitions: dict[str, _Partition] = {}

    def covers(self, types: set[str], keep: timedelta) -> bool:
        """Whether this state holds what programs needing ``types`` over ``keep`` read."""
        return types <= self.types and keep <= self.keep

    def drop(self, partition: str) -> None:
        self.partitions.pop(partition, None)

    def load(self, partition: str, events: pa.Table) -> None:
        """Replace a partition's state with ``events`` (``EVENT_SCHEMA``), e.g. from the log."""
        events = _of_types(events.select(EVENT_SCHEMA.names), self.types)
        self.partitions[partition] = _Partition([events], events.num_rows)

    def add(self, events: pa.Table, partitions: pa.Array, watermarks: dict[str, datetime]) -> None:
        """Add logged events (``EVENT_SCHEMA``; ``partitions`` per event) of the kept types;
        a partition's chunks are compacted and pruned now and then."""
        if not events.num_rows:
            return
        events = events.select(EVENT_SCHEMA.names).append_column("__p", partitions)
        events = _of_types(events, self.types)
        names = pc.unique(events.column("__p")).to_pylist()
        for name in names:
            mine = events if len(names) == 1 else events.filter(pc.equal(events.column("__p"), name))
            part = self.partitions.setdefault(name, _Partition())
            part.chunks.append(mine.drop_columns(["__p"]))
            part.rows += mine.num_rows
            if len(part.chunks) >= COMPACT_EVERY and name in watermarks:
                self._compact(part, watermarks[name] - self.keep)

    def _compact(self, part: _Partition, since: datetime) -> None:
        table = pa.concat_tables(part.chunks)
        table = table.filter(pc.greater_equal(table.column("ts"), pa.scalar(since, pa.timestamp("us"))))
        table = table.combine_chunks()
        part.chunks, part.rows = [table], table.num_rows

    def history(self, customers: pa.Array, tenants: pa.Array | None = None) -> pa.Table:
        """The kept events of these customers (in every partition held); with ``tenants``
        (one per customer) only those of the same tenant."""
        chunks = [c for p in self.partitions.values() for c in p.chunks if c.num_rows]
        if not chunks or not len(customers):
            return EVENT_SCHEMA.empty_table()
        single = tenants is None or pc.count_distinct(tenants).as_py() <= 1
        out = []
        for chunk in chunks:
            if single:
                mask = pc.is_in(chunk.column("customer_id"), value_set=customers)
                if tenants is not None and len(tenants):
                    mask = pc.and_(mask, pc.equal(chunk.column("tenant_id"), tenants[0]))
            else:
                keys = pc.binary_join_element_wise(chunk.column("tenant_id"), chunk.column("customer_id"),
                                                   "\x00")
                mask = pc.is_in(keys, value_set=pc.binary_join_element_wise(tenants, customers, "\x00"))
            picked = chunk.filter(mask)
            if picked.num_rows:
                out.append(picked)
        return pa.concat_tables(out) if out else EVENT_SCHEMA.empty_table()

    def event_ids(self, partition: str) -> pa.ChunkedArray:
        part = self.partitions.get(partition)
        if part is None or not part.chunks:
            return pa.chunked_array([], pa.string())
        return pa.chunked_array([c.column("event_id").combine_chunks() for c in part.chunks], pa.string())

    def rows(self) -> int:
        return sum(p.rows for p in self.partitions.values())

    def nbytes(self) -> int:
        """Bytes of the Arrow buffers held."""
        return sum(c.nbytes for p in self.partitions.values() for c in p.chunks)


def _of_types(events: pa.Table, types: set[str]) -> pa.Table:
    if not events.num_rows:
        return events
    mask = pc.is_in(events.column("type"), value_set=pa.array(sorted(types), pa.string()))
    return events.filter(mask)
