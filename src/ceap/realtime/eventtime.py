"""Event time per partition: which partition each event came from, each partition's
watermark (the latest event time read from it), and the bound below which an event
is late for a program.

A broker partition (a Kafka partition, a Kinesis shard; a stream without partitions
is one) is read in order, but partitions are read at their own pace: a worker may
read all of one partition, then the other. So lateness is judged against the
event's own partition, never against the fastest one, and a timer armed by an
event fires on that event's partition.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ceap.model import DEFAULT_TENANT
from ceap.realtime.events import decode_bodies, problems_of, validate_events
from ceap.realtime.source import Received

EPOCH = datetime(1970, 1, 1)
_TS = pa.timestamp("us")


class Watermarks:
    """The latest event time read from each partition (naive UTC), in this worker."""

    def __init__(self) -> None:
        self.by_partition: dict[str, datetime] = {}

    def bounds(self, partitions: pa.Array) -> pa.Array:
        """Per event, the watermark of its partition before the batch (1970 when unseen)."""
        if not len(partitions):
            return pa.array([], _TS)
        encoded = pc.dictionary_encode(partitions)
        marks = pa.array([self.by_partition.get(p, EPOCH) for p in encoded.dictionary.to_pylist()], _TS)
        return pc.take(marks, encoded.indices)

    def advance(self, ts: pa.ChunkedArray | pa.Array, partitions: pa.Array) -> None:
        """Move each partition's watermark to the latest time of its events in the batch."""
        if not len(ts):
            return
        encoded = pc.dictionary_encode(partitions)
        names = encoded.dictionary.to_pylist()
        if len(names) == 1:  # one partition (most polls): its max, no grouping
            latest = [pc.max(ts).as_py()]
        else:                # per partition, without Acero's thread pool (a hand-off per poll)
            latest = pa.table({"p": encoded.indices, "ts": ts}).group_by("p", use_threads=False).aggregate(
                [("ts", "max")]).sort_by("p").column("ts_max").to_pylist()
        for p, t in zip(names, latest, strict=True):
            if t is not None and t > self.by_partition.get(p, EPOCH):
                self.by_partition[p] = t

    def lowest(self) -> datetime:
        """The slowest partition's watermark (1970 when none was read)."""
        return min(self.by_partition.values(), default=EPOCH)

    def highest(self) -> datetime:
        return max(self.by_partition.values(), default=EPOCH)


def late_mask(ts: pa.ChunkedArray | pa.Array, bound: pa.Array, lateness: timedelta) -> pa.Array:
    """True for the events older than their partition's watermark minus ``lateness``."""
    limit = pc.subtract(bound, pa.scalar(lateness, pa.duration("us")))
    return pc.less(ts, limit)


_BODY, _PARTITION = operator.attrgetter("body"), operator.attrgetter("partition")


def parse_received(received: Sequence[Received], tenant: str = DEFAULT_TENANT
                   ) -> tuple[pa.Table, list[tuple[int, str]], pa.Array]:
    """Messages as valid events (``EVENT_SCHEMA``), ``(index, reason)`` per rejected
    item (as ``parse_bodies``), and the partition of each valid event."""
    items, origin, broken = decode_bodies(list(map(_BODY, received)))
    table, rejected = validate_events(items, tenant, decoded=True)
    problems = problems_of(rejected, broken)
    names = set(map(_PARTITION, received))
    if len(names) <= 1:
        return table, problems, pa.array([next(iter(names), "")] * table.num_rows, pa.string())
    keep = np.ones(len(items), dtype=bool)
    keep[[i for i, _ in problems]] = False
    parts = np.array([r.partition for r in received], dtype=object)[np.asarray(origin, dtype=np.int64)[keep]]
    return table, problems, pa.array(parts, pa.string())


def rejected_rows(received: Sequence[Received], problems: list[tuple[int, str]]) -> list[tuple[str, str]]:
    """``(text, reason)`` for each rejected item of ``parse_received``: the item as JSON, or,
    for a body that is not JSON, the body's text (bytes that are not UTF-8 replaced)."""
    items, origin, _ = decode_bodies([r.body for r in received])
    rows = []
    for i, reason in problems:
        item = items[i] if i < len(items) else None
        text = (received[origin[i]].body.decode("utf-8", "replace")
                if item is None and i < len(origin) else json.dumps(item, default=str))
        rows.append((text, reason))
    return rows
