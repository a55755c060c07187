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

import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ceap.realtime.events import EVENT_SCHEMA

#: sort a partition's recent chunks into a run once it has this many
COMPACT_EVERY = 16
#: a partition holding fewer events than this in its shards is scanned (cheaper than
#: hashing the customers sought)
SCAN_BELOW = 100_000
#: rows of a shard: one is merged a micro-batch, one past twice this is split
SHARD_ROWS = 8192
#: a run with at most this many customers sought in it gives them as slices, not a ``take``
SLICES_UP_TO = 8
#: each kept event's hash of ``(tenant_id, customer_id)``: the sorted tables' order
HASH = "__ceap_key_hash"
_SCHEMA = EVENT_SCHEMA.append(pa.field(HASH, pa.uint64()))


@dataclass
class _Run:
    """Events ordered by ``HASH`` (a customer's rows are a range), and those hashes."""
    table: pa.Table = field(default_factory=_SCHEMA.empty_table)
    hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))

    def cut(self, lo: int, hi: int | None) -> _Run:
        """The rows whose hash is in ``[lo, hi)`` (``hi`` None: no bound)."""
        a = int(np.searchsorted(self.hashes, np.uint64(lo), "left"))
        b = len(self.hashes) if hi is None else int(np.searchsorted(self.hashes, np.uint64(hi), "left"))
        return _Run(self.table.slice(a, b - a), self.hashes[a:b])


@dataclass
class _Partition:
    #: the compacted events, in shards by hash range: shard i holds ``[lows[i], lows[i+1])``
    shards: list[_Run] = field(default_factory=lambda: [_Run()])
    lows: list[int] = field(default_factory=lambda: [0])
    #: sorted runs being merged into the shards, one shard a micro-batch from ``cursor`` on
    #: (their rows below ``lows[cursor]`` are in the shards already), and those waiting
    merging: list[_Run] = field(default_factory=list)
    cursor: int = 0
    pending: list[_Run] = field(default_factory=list)
    #: events added since the last run was sorted, one chunk per micro-batch (``EVENT_SCHEMA``)
    recent: list[pa.Table] = field(default_factory=list)

    def unsharded(self) -> list[_Run]:
        """The sorted runs not in the shards: the rest of the merging ones, the pending ones."""
        unmerged = [r.cut(self.lows[self.cursor], None) for r in self.merging] if self.merging else []
        return [r for r in (*unmerged, *self.pending) if len(r.hashes)]

    def runs(self) -> list[_Run]:
        """Every sorted run holding events (each event in one): shards, then the others."""
        return [r for r in self.shards if len(r.hashes)] + self.unsharded()

    def tables(self) -> list[pa.Table]:
        return [r.table for r in self.runs()] + [t for t in self.recent if t.num_rows]

    def sharded(self) -> int:
        return sum(len(s.hashes) for s in self.shards)


class KeyedState:
    """The events of ``types`` per partition, kept ``keep`` behind each partition's watermark
    of the micro-batch before the last (``horizon``: from when a restored partition holds all).

    Each partition holds sorted runs (by a hash of the customer key): shards of a few
    thousand events by hash range, the runs of recent micro-batches being merged into
    them one shard a micro-batch (so a micro-batch's share of the compaction does not grow
    with the state), and the chunks of the micro-batches since the last run was sorted
    (scanned). A customer's events are found in a run by binary search once the partition
    holds ``SCAN_BELOW`` events; scanned before."""

    def __init__(self, types: set[str], keep: timedelta):
        self.types = set(types)
        self.keep = keep
        self.partitions: dict[str, _Partition] = {}
        #: per partition loaded (``load``), the time from which it holds every event of its
        #: types: events before it may have been dropped (or never restored)
        self.horizon: dict[str, datetime] = {}
        #: per partition, its watermark at the last ``add`` (or that of the log at ``load``)
        self._marks: dict[str, datetime] = {}
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

    def _sorted(self, events: pa.Table) -> _Run:
        """``events`` (``EVENT_SCHEMA``) as a run: hashed and sorted stably by hash."""
        hashes = self._hash(events.column("tenant_id"), events.column("customer_id"))
        new = hashes.to_numpy(zero_copy_only=False)
        order = np.argsort(new, kind="stable")
        table = events.append_column(HASH, hashes).take(pa.array(order)).combine_chunks()
        return _Run(table, new[order])

    def load(self, partition: str, events: pa.Table, since: datetime | None = None) -> None:
        """Replace a partition's state with ``events`` (``EVENT_SCHEMA``), e.g. from the log:
        every logged event of the kept types at or after ``since`` (None: every one)."""
        run = self._sorted(_of_types(events, self.types).select(EVENT_SCHEMA.names))
        part = _Partition()
        part.shards, part.lows = _split(run, 0)
        self.partitions[partition] = part
        self.horizon[partition] = since or datetime.min
        if since is not None:
            self._marks[partition] = since + self.keep
        else:
            self._marks.pop(partition, None)

    def _step(self, part: _Partition, since: datetime | None) -> None:
        """Merge the waiting runs into one shard of ``part``, dropping its events before ``since``."""
        if not part.merging:
            if not part.pending:
                return
            part.merging, part.pending, part.cursor = part.pending, [], 0
        i = part.cursor
        hi = part.lows[i + 1] if i + 1 < len(part.lows) else None
        pieces = [r.cut(part.lows[i], hi) for r in part.merging]
        pieces = [r for r in pieces if len(r.hashes)]
        new = _Run() if not pieces else pieces[0] if len(pieces) == 1 else _stable(pieces)
        merged = merge(part.shards[i], new, since)
        if merged is not None:
            shards, lows = _split(merged, part.lows[i])
            part.shards[i:i + 1], part.lows[i:i + 1] = shards, lows
            i += len(shards) - 1
        part.cursor = i + 1
        if part.cursor >= len(part.shards):
            part.merging, part.cursor = [], 0

    def add(self, events: pa.Table, partitions: pa.Array, watermarks: dict[str, datetime]) -> None:
        """Add logged events (``EVENT_SCHEMA``; ``partitions`` per event) of the kept types;
        every ``COMPACT_EVERY`` micro-batches a partition's chunks become a sorted run, and
        each micro-batch merges the runs into one of its shards (pruning that shard)."""
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
            if len(part.recent) >= COMPACT_EVERY:
                part.pending.append(self._sorted(pa.concat_tables(part.recent)))
                part.recent = []
            if name in watermarks:
                # kept behind the watermark of the micro-batch before: an absence timer armed
                # in the last one and already due fires in this one, and the events after
                # its arming event are still all here for it (``ceap.realtime.timers``)
                mark, before = watermarks[name], self._marks.get(name)
                since = None if before is None else min(before, mark) - self.keep
                self._marks[name] = mark
                self._step(part, since)
                if since is not None and name in self.horizon:  # the step may drop older ones
                    self.horizon[name] = max(self.horizon[name], since)

    def history(self, customers: pa.Array, tenants: pa.Array) -> pa.Table:
        """The kept events of these customers (``tenants``: the tenant of each), in every
        partition held."""
        if not len(customers) or not self.partitions:
            return EVENT_SCHEMA.empty_table()
        sought: np.ndarray | None = None
        out: list[pa.Table] = []
        for part in self.partitions.values():
            found_in_runs: list[pa.Table] = []
            runs = part.runs()
            scanned = part.recent
            if 0 < sum(len(r.hashes) for r in runs) < SCAN_BELOW:
                scanned = [*(r.table for r in runs), *part.recent]
            elif runs:
                if sought is None:
                    sought = np.unique(self._hash(tenants, customers).to_numpy(zero_copy_only=False))
                # a shard is searched for the hashes in its range only (most are not searched)
                bounds = np.searchsorted(sought, np.array([*part.lows[1:]], dtype=np.uint64), "left")
                starts = [0, *bounds.tolist()]
                ends = [*bounds.tolist(), len(sought)]
                for shard, a, b in zip(part.shards, starts, ends, strict=True):
                    if a < b and len(shard.hashes):
                        found_in_runs.extend(_find(shard, sought[a:b]))
                for run in part.unsharded():
                    found_in_runs.extend(_find(run, sought))
            if found_in_runs:  # one table of them, one chunk (a slice a customer: the filter
                # below and the features cost a fixed cost a chunk), before the newer chunks
                out.append(pa.concat_tables(found_in_runs).select(EVENT_SCHEMA.names).combine_chunks())
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
        """Bytes of the Arrow buffers (and the sorted hashes) held (a run being merged whole)."""
        held = [r for p in self.partitions.values() for r in (*p.shards, *p.merging, *p.pending)]
        return sum(r.table.nbytes + r.hashes.nbytes for r in held) + sum(
            t.nbytes for p in self.partitions.values() for t in p.recent)


def _find(run: _Run, sought: np.ndarray) -> list[pa.Table]:
    """The rows of ``run`` whose hash is one of ``sought`` (sorted), by binary search."""
    lo = np.searchsorted(run.hashes, sought, "left")
    hi = np.searchsorted(run.hashes, sought, "right")
    hit = hi > lo
    if not hit.any():
        return []
    lo, hi = lo[hit], hi[hit]
    if len(lo) <= SLICES_UP_TO:  # a slice a customer (some 1 µs each) beats a take (some 20 µs)
        return [run.table.slice(a, b - a) for a, b in zip(lo.tolist(), hi.tolist(), strict=True)]
    n = hi - lo
    starts = np.repeat(lo - np.concatenate(([0], np.cumsum(n)[:-1])), n)
    return [run.table.take(pa.array(starts + np.arange(int(n.sum()))))]


def _stable(runs: list[_Run]) -> _Run:
    """Sorted runs as one, rows of equal hash in the runs' order."""
    hashes = np.concatenate([r.hashes for r in runs])
    order = np.argsort(hashes, kind="stable")
    table = pa.concat_tables([r.table for r in runs]).take(pa.array(order)).combine_chunks()
    return _Run(table, hashes[order])


def merge(old: _Run, new: _Run, since: datetime | None) -> _Run | None:
    """``old`` and ``new`` (both sorted) merged, each of ``new``'s rows after ``old``'s rows of
    equal hash (what a stable sort of both, old first, gives), the rows before ``since``
    dropped: one ``take``, no sort. None when that changes nothing."""
    old_h, new_h = old.hashes, new.hashes
    kept: np.ndarray | None = None
    if since is not None and (len(old_h) or len(new_h)):
        cut = int(pa.scalar(since, pa.timestamp("us")).cast(pa.int64()).as_py())
        stamps = np.concatenate([pc.cast(t.column("ts"), pa.int64()).to_numpy()
                                 for t in (old.table, new.table)])
        kept = stamps >= cut
    if not len(new_h) and (kept is None or kept.all()):
        return None
    at = np.searchsorted(old_h, new_h, "right") + np.arange(len(new_h))
    from_new = np.zeros(len(old_h) + len(new_h), dtype=bool)
    from_new[at] = True
    order = np.empty(len(from_new), dtype=np.int64)
    order[from_new] = len(old_h) + np.arange(len(new_h))
    order[~from_new] = np.arange(len(old_h))
    hashes = np.concatenate([old_h, new_h])[order]
    if kept is not None:
        keep = kept[order]
        order, hashes = order[keep], hashes[keep]
    table = pa.concat_tables([old.table, new.table]).take(pa.array(order)).combine_chunks()
    return _Run(table, hashes)


def _split(run: _Run, low: int) -> tuple[list[_Run], list[int]]:
    """``run`` (covering hashes from ``low`` on) as shards of about ``SHARD_ROWS`` rows once it
    has twice that, cut where the hash changes, and their lows."""
    n = len(run.hashes)
    if n < 2 * SHARD_ROWS:
        return [run], [low]
    cuts = sorted({int(np.searchsorted(run.hashes, run.hashes[k], "left"))
                   for k in range(SHARD_ROWS, n, SHARD_ROWS)} - {0})
    edges = [0, *cuts, n]
    shards = [_Run(run.table.slice(a, b - a), run.hashes[a:b]) for a, b in itertools.pairwise(edges)]
    return shards, [low, *(int(run.hashes[c]) for c in cuts)]


def _of_types(events: pa.Table, types: set[str]) -> pa.Table:
    if not events.num_rows:
        return events
    mask = pc.is_in(events.column("type"), value_set=pa.array(sorted(types), pa.string()))
    return events.filter(mask)
