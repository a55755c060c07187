"""The outbound stream of outcomes (like Braze Currents): what was sent,
suppressed (with the reason), engaged with and converted, for a warehouse.

Each export (``ceap.yaml``'s ``exports``) keeps a cursor per tenant and kind
of record in ``export_cursors``: the time up to which it has sent records
(``sent_at`` of deliveries, ``created_at`` of suppressed ones, ``recorded_at``
of engagements, ``attributed_at`` of conversions). A pass sends the records
after the cursor and older than ``grace`` (so a transaction still open when
the pass starts is not skipped), in windows of about ``batch`` records; the
cursor moves after the sink took a window. Delivery is at least once: a
crash between the two sends the window again, and every record carries a
stable ``id`` to deduplicate on.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from ceap.outcomes.arrow_io import UTC_TS
from ceap.outcomes.config import RECORD_KINDS
from ceap.outcomes.sinks import open_sink
from ceap.store.schema import from_iso
from ceap.store.tx import Tx

RECORD_SCHEMA = pa.schema([
    ("id", pa.string()), ("kind", pa.string()), ("tenant_id", pa.string()), ("ts", UTC_TS),
    ("program", pa.string()), ("candidate_id", pa.int64()), ("customer_id", pa.string()),
    ("channel", pa.string()), ("delivery_id", pa.int64()), ("type", pa.string()), ("source", pa.string()),
    ("reason", pa.string()), ("url", pa.string()), ("event_id", pa.string()), ("value", pa.float64()),
])
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: kind -> (table, cursor column, extra condition, selected columns)
_SOURCES: dict[str, tuple[str, str, str, str]] = {
    "sent": ("deliveries d", "d.sent_at", "",
             "d.id, d.program, d.candidate_id, d.customer_id, d.channel, d.sent_at, d.status"),
    "suppressed": ("deliveries d", "d.created_at", "AND d.status = 'suppressed'",
                   "d.id, d.program, d.candidate_id, d.customer_id, d.channel, d.created_at, d.policy"),
    "engaged": ("engagements d", "d.recorded_at", "",
                "d.delivery_id, d.program, d.candidate_id, d.customer_id, d.channel, d.ts, d.type, d.source, "
                "d.url, d.dedup_key"),
    "converted": ("conversions d", "d.attributed_at", "",
                  "d.program, d.candidate_id, d.customer_id, d.event_id, d.event_type, d.value, d.event_ts"),
}


def _record(kind: str, tenant: str, row: tuple[Any, ...]) -> dict[str, Any]:
    base: dict[str, Any] = dict.fromkeys(RECORD_SCHEMA.names)
    base.update(kind=kind, tenant_id=tenant)
    if kind in ("sent", "suppressed"):
        delivery, program, candidate, customer, channel, ts, extra = row
        base.update(id=f"{kind}:{tenant}:{delivery}", delivery_id=delivery, program=program,
                    candidate_id=candidate, customer_id=customer, channel=channel, ts=from_iso(ts),
                    type=kind)
        if kind == "suppressed":
            base["reason"] = extra
    elif kind == "engaged":
        delivery, program, candidate, customer, channel, ts, type_, source, url, key = row
        base.update(id=f"engaged:{tenant}:{key}", delivery_id=delivery, program=program,
                    candidate_id=candidate, customer_id=customer, channel=channel, ts=from_iso(ts),
                    type=type_, source=source, url=url)
    else:
        program, candidate, customer, event_id, event_type, value, ts = row
        base.update(id=f"converted:{tenant}:{program}:{event_id}", program=program, candidate_id=candidate,
                    customer_id=customer, event_id=event_id, type=event_type, value=value, ts=from_iso(ts))
    return base


def records(tx: Tx, kind: str, tenant: str, after: datetime, until: datetime) -> pa.Table:
    """The records of ``kind`` whose cursor time is in ``(after, until]``."""
    table, column, extra, columns = _SOURCES[kind]
    rows = tx.execute(f"SELECT {columns} FROM {table} WHERE d.tenant_id = ? AND {column} > ? "
                      f"AND {column} <= ? {extra} ORDER BY {column}",
                      (tenant, tx.ts(after), tx.ts(until))).fetchall()
    return pa.Table.from_pylist([_record(kind, tenant, tuple(r)) for r in rows], schema=RECORD_SCHEMA)


def _boundary(tx: Tx, kind: str, tenant: str, after: datetime, until: datetime, batch: int) -> datetime:
    """The end of the next window: the time of the ``batch``-th record after ``after``
    (a window holds every record of its last instant, so it may hold a few more)."""
    table, column, extra, _ = _SOURCES[kind]
    row = tx.execute(f"SELECT {column} FROM {table} WHERE d.tenant_id = ? AND {column} > ? AND {column} <= ? "
                     f"{extra} ORDER BY {column} LIMIT 1 OFFSET ?",
                     (tenant, tx.ts(after), tx.ts(until), batch - 1)).fetchone()
    found = from_iso(row[0]) if row else None
    return found or until


def cursor(store: Any, tenant: str, export: str, kind: str) -> datetime:
    with store.tx() as tx:
        row = tx.execute("SELECT position FROM export_cursors WHERE tenant_id = ? AND export = ? "
                         "AND source = ?", (tenant, export, kind)).fetchone()
    return (from_iso(row[0]) if row else None) or EPOCH


def _advance(store: Any, tenant: str, export: str, kind: str, position: datetime, now: datetime) -> None:
    with store.tx() as tx:
        tx.execute("INSERT INTO export_cursors (tenant_id, export, source, position, updated_at) "
                   "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, export, source) DO UPDATE SET "
                   "position = excluded.position, updated_at = excluded.updated_at",
                   (tenant, export, kind, tx.ts(position), tx.ts(now)))


def run_export(store: Any, config: Any, tenant: str, now: datetime, base_dir: Path,
               open_stream: Callable[[str], Any] | None = None) -> dict[str, int]:
    """One pass of one export: records sent per kind. A sink failure raises
    ``ExportError`` after the windows already taken have moved the cursor."""
    sink = open_sink(config, base_dir, open_stream)
    name = config.key()
    until = now - config.grace
    sent: dict[str, int] = {}
    try:
        for kind in RECORD_KINDS:
            if kind not in config.kinds:
                continue
            sent[kind] = 0
            after = cursor(store, tenant, name, kind)
            while after < until:
                with store.tx() as tx:
                    end = _boundary(tx, kind, tenant, after, until, config.batch)
                    found = records(tx, kind, tenant, after, end)
                if found.num_rows:
                    sink.write(found, (after, end))
                    sent[kind] += found.num_rows
                _advance(store, tenant, name, kind, end, now)
                after = end
    finally:
        sink.close()
    return sent


def run_exports(store: Any, exports: list[Any], tenant: str, now: datetime, base_dir: Path,
                open_stream: Callable[[str], Any] | None = None) -> dict[str, dict[str, int]]:
    """One pass of every export (``ceap outcomes export``)."""
    return {e.key(): run_export(store, e, tenant, now, base_dir, open_stream) for e in exports}


__all__ = ["EPOCH", "RECORD_SCHEMA", "cursor", "records", "run_export", "run_exports"]
