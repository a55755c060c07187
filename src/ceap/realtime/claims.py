"""Which worker holds each partition's state: ``partition_claims`` in the store.

Before a micro-batch, a worker checks, in one query, that it still holds the claim of
every partition in the batch at the epoch it took. A partition it does not hold (first
seen, or taken meanwhile by another worker of the group) is claimed again with the next
epoch, and its in-memory state is restored from the event log (``restore``, the rows
of this stream and those logged without one, before migration 0010): the
state of a partition that moved away and back is never the stale copy. A worker that
logs a batch of a partition it lost meanwhile moves that claim on by one epoch
(``written``), so the new holder restores again and sees those events too.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pyarrow as pa

from ceap.realtime.events import EVENT_SCHEMA
from ceap.realtime.state import _event_table, _in_list, _naive, of_stream
from ceap.realtime.status import worker_name
from ceap.store.base import Store


class Claims:
    """This worker's claims on the partitions of one stream."""

    def __init__(self, store: Store, tenant: str, stream: str, owner: str | None = None):
        self.store = store
        self.tenant = tenant
        self.stream = stream
        self.owner = owner or f"{worker_name()}:{uuid.uuid4().hex[:8]}"
        self.epochs: dict[str, int] = {}

    def take(self, partitions: Iterable[str]) -> list[str]:
        """Claim the partitions this worker does not hold at its epoch; return them (their
        state must be restored). One query when every claim still holds. The leases on the
        absence timers of a partition claimed anew are released: timers a killed worker had
        taken fire again at the next batch (a second firing changes nothing: the candidate's
        dedup key)."""
        names = sorted(set(partitions))
        if not names:
            return []
        with self.store.tx() as tx:
            where, params = _in_list(tx, "partition_key", names)
            held = {p: (o, e) for p, o, e in tx.execute(
                f"SELECT partition_key, owner, epoch FROM partition_claims WHERE tenant_id = ? "
                f"AND stream = ? AND {where}", (self.tenant, self.stream, *params)).fetchall()}
            moved = [p for p in names if held.get(p) != (self.owner, self.epochs.get(p))]
            for p in moved:
                epoch = int(held[p][1]) + 1 if p in held else 1
                tx.execute("INSERT INTO partition_claims (tenant_id, stream, partition_key, owner, epoch, "
                           "claimed_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, stream, "
                           "partition_key) DO UPDATE SET owner = excluded.owner, epoch = excluded.epoch, "
                           "claimed_at = excluded.claimed_at",
                           (self.tenant, self.stream, p, self.owner, epoch, tx.ts(datetime.now(UTC))))
                self.epochs[p] = epoch
            if moved:  # the timers a dead holder had taken: due again now, not when its lease ends
                where, params = _in_list(tx, "COALESCE(partition_key, '')", moved)
                tx.execute(f"UPDATE timers SET claimed_until = NULL WHERE tenant_id = ? AND {where} "
                           f"AND {of_stream()} AND claimed_until IS NOT NULL",
                           (self.tenant, *params, self.stream))
        return moved

    def written(self, partitions: Iterable[str]) -> None:
        """After logging a batch: for each partition whose claim this worker lost meanwhile
        (a rebalance while it worked), move the claim to the next epoch, so the worker that
        holds it now restores its state again and sees what this one just logged."""
        names = sorted(set(partitions))
        if not names:
            return
        with self.store.tx() as tx:
            where, params = _in_list(tx, "partition_key", names)
            held = tx.execute(f"SELECT partition_key, owner, epoch FROM partition_claims WHERE tenant_id = ? "
                              f"AND stream = ? AND {where}", (self.tenant, self.stream, *params)).fetchall()
            lost = [p for p, o, e in held if (o, e) != (self.owner, self.epochs.get(p))]
            for p in lost:
                tx.execute("UPDATE partition_claims SET epoch = epoch + 1 WHERE tenant_id = ? AND stream = ? "
                           "AND partition_key = ?", (self.tenant, self.stream, p))
                self.epochs.pop(p, None)


def restore(store: Store, partition: str, types: Iterable[str], keep: timedelta,
            stream: str | None = None) -> tuple[pa.Table, datetime | None]:
    """A partition's logged events of ``types`` (every tenant) at most ``keep`` older than
    the latest event time logged on it, and that time (its watermark; None when nothing
    of the partition is logged). With ``stream``, the partition of that stream: its rows
    and those logged without a stream (before migration 0010), never another stream's."""
    kinds = sorted(set(types))
    where, own = "partition_key = ?", [partition]
    if stream is not None:
        where, own = f"{where} AND {of_stream()}", [partition, stream]
    with store.tx() as tx:
        top = tx.execute(f"SELECT max(ts) FROM event_log WHERE {where}", own).fetchone()
        mark = _naive(top[0]) if top and top[0] is not None else None
        if not kinds or mark is None:
            return EVENT_SCHEMA.empty_table(), mark
        rows = tx.execute("SELECT event_id, tenant_id, customer_id, type, ts, attributes FROM event_log "
                          f"WHERE {where} AND ts >= ? AND type IN ({tx.placeholders(len(kinds))})",
                          (*own, tx.ts((mark - keep).replace(tzinfo=UTC)), *kinds)).fetchall()
    return (_event_table(rows) if rows else EVENT_SCHEMA.empty_table()), mark
