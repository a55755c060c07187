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

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ceap.realtime.events import EVENT_SCHEMA

#: compact a partition's recent chunks into its sorted table (and drop what no window
#: reaches) once it has this many
COMPACT_EVERY = 16
#: a sorted table smaller than this is scanned (cheaper than hashing the customers sought)
SCAN_BELOW = 100_000
#: each kept event's hash of ``(tenant_id, customer_id)``: the sorted table's order
HASH = "__ceap_key_hash"
_SCHEMA = EVENT_SCHEMA.append(pa.field(HASH, pa.uint64()))


@dataclass
class _Partition:
    #: compacted events, ordered by ``HASH``, and those hashes (a customer's rows are a range)
    table: pa.Table = field(default_factory=_SCHEMA.empty_table)
    hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    #: events added since, one chunk per micro-batch (``EVENT_SCHEMA``, no hash yet)
    recent: list[pa.Table] = field(default_factory=list)

    def tables(self) -> list[pa.Table]:
        return [t for t in (self.table, *self.recent) if t.num_rows]


class KeyedState:
    """The events of ``types`` per partition, kept ``keep`` behind each partition's watermark.

    Each partition holds a table sorted by a hash of the customer key (a customer's
    events are found by binary search once it holds ``SCAN_BELOW`` events; scanned
    before) and the chunks of the micro-batches since its last compaction (scanned)."""

    def __init__(self, types: set[str], keep: timedelta):
        self.types = set(types)
        self.keep = keep
        self.partitions: dict[str, _Partition] = {}
        self._con = duckdb.connect(config={"enable_external_access": False, "threads": 1})

    def covers(self, types: set[str], keep: timedelta) -> bool:
        """Whether this state holds what programs needing ``types`` over ``keep`` read."""
        return types <= self.types and keep <= self.keep

    def _hash(self, tenants: pa.Array | pa.ChunkedArray, customers: pa.Array | pa.ChunkedArray) -> pa.Array:
        self._con.register("keys", pa.table({"t": tenants, "c": customers}))
        try:
            hashed = self._con.sql("SELECT hash(t, c) AS h FROM keys").to_arrow_table()
            return hashed.column("h").combine_chunks()
        finally:
            self._con.unregister("keys")

    def load(self, partition: str, events: pa.Table) -> None:
        """Replace a partition's state with ``events`` (``EVENT_SCHEMA``), e.g. from the log."""
        part = _Partition()
        part.recent = [_of_types(events, self.types).select(EVENT_SCHEMA.names)]
        self._compact(part, None)
        self.partitions[partition] = part

    def _compact(self, part: _Partition, since: datetime | None) -> None:
        """Merge a partition's recent chunks into its sorted table, dropping events before ``since``."""
        recent = pa.concat_tables(part.recent) if part.recent else EVENT_SCHEMA.empty_table()
        hashes = self._hash(recent.column("tenant_id"), recent.column("customer_id"))
        recent = recent.append_column(HASH, hashes)
        # the sorted table and the new run merged (the new run sorted, stably, and placed after
        # the old rows of equal hash: what a stable sort of both, old first, gives), then the
        # rows before ``since`` dropped; one ``take`` of the whole table, no sort of it
        old = part.hashes
        new = hashes.to_numpy(zero_copy_only=False)
        new_order = np.argsort(new, kind="stable")
        at = np.searchsorted(old, new[new_order], "right") + np.arange(len(new))
        from_new = np.zeros(len(old) + len(new), dtype=bool)
        from_new[at] = True
        order = np.empty(len(from_new), dtype=np.int64)
        order[from_new] = len(old) + new_order
        order[~from_new] = np.arange(len(old))
        table = pa.concat_tables([part.table, recent])
        merged = np.concatenate([old, new])[order]
        if since is not None:
            stamps = pc.cast(table.column("ts"), pa.int64()).to_numpy()[order]
            kept = stamps >= int(pa.scalar(since, pa.timestamp("us")).cast(pa.int64()).as_py())
            order, merged = order[kept], merged[kept]
        part.table = table.take(pa.array(order)).combine_chunks()
        part.hashes = merged
        part.recent = []

    def add(self, events: pa.Table, partitions: pa.Array, watermarks: dict[str, datetime]) -> None:
        """Add logged events (``EVENT_SCHEMA``; ``partitions`` per event) of the kept types;
        a partition's chunks are compacted and pruned now and then."""
        if not events.num_rows:
            return
        events = _of_types(events.append_column("__p", partitions), self.types)
        if not events.num_rows:
            return
        names = pc.unique(events.column("__p")).to_pylist()
        for name in names:
            mine = events if len(names) == 1 else events.filter(pc.equal(events.column("__p"), name))
            part = self.partitions.setdefault(name, _Partition())
            part.recent.append(mine.select(EVENT_SCHEMA.names))
            if len(part.recent) >= COMPACT_EVERY and name in watermarks:
                self._compact(part, watermarks[name] - self.keep)

    def history(self, customers: pa.Array, tenants: pa.Array) -> pa.Table:
        """The kept events of these customers (``tenants``: the tenant of each), in every
        partition held."""
        if not len(customers) or not self.partitions:
            return EVENT_SCHEMA.empty_table()
        sought: np.ndarray | None = None
        out: list[pa.Table] = []
        for part in self.partitions.values():
            scanned = part.recent
            if 0 < len(part.hashes) < SCAN_BELOW:
                scanned = [part.table, *part.recent]
            elif len(part.hashes):
                if sought is None:
                    sought = np.unique(self._hash(tenants, customers).to_numpy(zero_copy_only=False))
                lo = np.searchsorted(part.hashes, sought, "left")
                n = np.searchsorted(part.hashes, sought, "right") - lo
                lo, n = lo[n > 0], n[n > 0]
                if len(n):
                    starts = np.repeat(lo - np.concatenate(([0], np.cumsum(n)[:-1])), n)
                    out.append(part.table.take(pa.array(starts + np.arange(int(n.sum())))))
            chunks = [c for c in scanned if c.num_rows]
            if chunks:  # one filter over the chunks (a pass adds one each; a filter a chunk
                # cost some 15 µs of fixed cost apiece, 16 of them between compactions)
                chunk = chunks[0] if len(chunks) == 1 else pa.concat_tables(
                    [c.select(EVENT_SCHEMA.names) for c in chunks])
                picked = chunk.filter(pc.is_in(chunk.column("customer_id"), value_set=customers))
                if picked.num_rows:
                    out.append(picked)
        if not out:
            return EVENT_SCHEMA.empty_table()
        found = pa.concat_tables([t.select(EVENT_SCHEMA.names) for t in out])  # only those asked:
        keys = pc.binary_join_element_wise(found.column("tenant_id"), found.column("customer_id"), "\x00")
        asked = pc.binary_join_element_wise(tenants, customers, "\x00")
        return found.filter(pc.is_in(keys, value_set=asked)).select(EVENT_SCHEMA.names)

    def event_ids(self, partition: str) -> pa.ChunkedArray:
        part = self.partitions.get(partition)
        if part is None:
            return pa.chunked_array([], pa.string())
        return pa.chunked_array([t.column("event_id").combine_chunks() for t in part.tables()], pa.string())

    def rows(self) -> int:
        return sum(t.num_rows for p in self.partitions.values() for t in p.tables())

    def nbytes(self) -> int:
        """Bytes of the Arrow buffers (and the sorted hashes) held."""
        return sum(t.nbytes for p in self.partitions.values() for t in p.tables()) + sum(
            p.hashes.nbytes for p in self.partitions.values())


def _of_types(events: pa.Table, types: set[str]) -> pa.Table:
    if not events.num_rows:
        return events
    mask = pc.is_in(events.column("type"), value_set=pa.array(sorted(types), pa.string()))
    return events.filter(mask)
