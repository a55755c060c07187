"""Per-customer state in the store: an event log (deduplication by event id, and
the history state features are computed from) and absence timers.

The log keeps each customer's events for as long as the longest feature window
needs them; the same SQL runs on SQLite (embedded) and PostgreSQL (shared by
several workers), so state survives a worker restart.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import pyarrow as pa

from ceap.realtime.events import EVENT_SCHEMA
from ceap.store.base import Store
from ceap.store.schema import from_iso

CHUNK = 500


def _naive(value: datetime | str) -> datetime:
    """A stored timestamp as naive UTC (how the event tables hold time)."""
    ts = from_iso(value) if isinstance(value, str) else value
    assert ts is not None
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts


class EventLog:
    def __init__(self, store: Store):
        self.store = store

    def seen(self, tenant_ids: Sequence[str], event_ids: Sequence[str]) -> set[tuple[str, str]]:
        """``(tenant, event id)`` pairs already in the log."""
        found: set[tuple[str, str]] = set()
        by_tenant: dict[str, list[str]] = {}
        for t, e in zip(tenant_ids, event_ids, strict=True):
            by_tenant.setdefault(t, []).append(e)
        with self.store.tx() as tx:
            for tenant, ids in by_tenant.items():
                for start in range(0, len(ids), CHUNK):
                    chunk = ids[start:start + CHUNK]
                    rows = tx.execute(f"SELECT event_id FROM event_log WHERE tenant_id = ? AND event_id IN "
                                      f"({tx.placeholders(len(chunk))})", (tenant, *chunk)).fetchall()
                    found.update((tenant, r[0]) for r in rows)
        return found

    def append(self, events: pa.Table) -> None:
        """Add events (idempotent by event id)."""
        if not events.num_rows:
            return
        cols = [events.column(n).to_pylist() for n in
                ("tenant_id", "event_id", "customer_id", "type", "ts", "attributes")]
        with self.store.tx() as tx:
            rows = [(t, e, c or "", ty, tx.ts(ts.replace(tzinfo=UTC)), a)
                    for t, e, c, ty, ts, a in zip(*cols, strict=True)]
            tx.executemany("INSERT INTO event_log (tenant_id, event_id, customer_id, type, ts, attributes) "
                           "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, event_id) DO NOTHING", rows)

    def history(self, keys: Iterable[tuple[str, str]], since: datetime) -> pa.Table:
        """Logged events of these ``(tenant, customer)`` keys at or after ``since`` (naive UTC)."""
        by_tenant: dict[str, list[str]] = {}
        for tenant, customer in set(keys):
            by_tenant.setdefault(tenant, []).append(customer)
        out: dict[str, list[object]] = {n: [] for n in EVENT_SCHEMA.names}
        with self.store.tx() as tx:
            start_ts = tx.ts(since.replace(tzinfo=UTC))
            for tenant, customers in by_tenant.items():
                for start in range(0, len(customers), CHUNK):
                    chunk = customers[start:start + CHUNK]
                    rows = tx.execute(
                        "SELECT event_id, tenant_id, customer_id, type, ts, attributes FROM event_log "
                        f"WHERE tenant_id = ? AND customer_id IN ({tx.placeholders(len(chunk))}) "
                        "AND ts >= ?", (tenant, *chunk, start_ts)).fetchall()
                    for r in rows:
                        for name, value in zip(EVENT_SCHEMA.names, r, strict=True):
                            out[name].append(_naive(value) if name == "ts" else value)
        return pa.table(out, schema=EVENT_SCHEMA)

    def prune(self, before: datetime) -> int:
        with self.store.tx() as tx:
            cur = tx.execute("DELETE FROM event_log WHERE ts < ?",
                             (tx.ts(before.replace(tzinfo=UTC)),))
            return int(cur.rowcount or 0)


class Timers:
    """Absence timers: one per (program, customer, triggering event)."""

    def __init__(self, store: Store):
        self.store = store

    def add(self, program: str, rows: Sequence[tuple[str, str, str, datetime, datetime]]) -> None:
        """``(tenant, customer, event_id, after_ts, fire_at)`` rows, naive UTC times."""
        if not rows:
            return
        with self.store.tx() as tx:
            tx.executemany(
                "INSERT INTO timers (tenant_id, program, customer_id, event_id, after_ts, fire_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, program, customer_id, event_id) "
                "DO NOTHING",
                [(t, program, c, e, tx.ts(a.replace(tzinfo=UTC)), tx.ts(f.replace(tzinfo=UTC)))
                 for t, c, e, a, f in rows])

    def fire(self, program: str, feature: str, missing: str, until: datetime) -> pa.Table:
        """Take the timers of ``program`` due by ``until``; return, as events, the
        triggering events of those with no ``missing`` event in between."""
        with self.store.tx() as tx:
            due = tx.execute(
                "SELECT t.tenant_id, t.customer_id, t.event_id, t.after_ts, t.fire_at, e.attributes "
                "FROM timers t JOIN event_log e ON e.tenant_id = t.tenant_id AND e.event_id = t.event_id "
                "WHERE t.program = ? AND t.fire_at <= ? AND NOT EXISTS (SELECT 1 FROM event_log m "
                "WHERE m.tenant_id = t.tenant_id AND m.customer_id = t.customer_id AND m.type = ? "
                "AND m.ts > t.after_ts AND m.ts <= t.fire_at)",
                (program, tx.ts(until.replace(tzinfo=UTC)), missing)).fetchall()
            tx.execute("DELETE FROM timers WHERE program = ? AND fire_at <= ?",
                       (program, tx.ts(until.replace(tzinfo=UTC))))
        out: dict[str, list[object]] = {n: [] for n in EVENT_SCHEMA.names}
        for tenant, customer, event_id, _after, fire_at, attributes in due:
            attrs = json.loads(attributes) if isinstance(attributes, str) else dict(attributes)
            out["event_id"].append(f"timer:{event_id}")
            out["tenant_id"].append(tenant)
            out["customer_id"].append(customer)
            out["type"].append("__timer")
            out["ts"].append(_naive(fire_at))
            out["attributes"].append(json.dumps(attrs | {"__timer": True, f"__absence_{feature}": True}))
        return pa.table(out, schema=EVENT_SCHEMA)
