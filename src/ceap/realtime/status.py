"""A worker's report of itself in the store, every few seconds (``worker_status``): which
partitions it reads and how far each has come (its watermark), the broker's lag, what it
has handled and its rate. The dashboard's Real-time page reads it; the Prometheus metrics
(docs/operations.md) carry the same figures for alerting."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ceap.store.schema import from_iso

log = logging.getLogger(__name__)


def worker_name() -> str:
    """``host:pid``: unique among the workers running at one time."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class WorkerReport:
    worker: str
    stream: str
    partitions: dict[str, str]  # partition -> its watermark (ISO 8601, event time)
    lag: int | None
    messages: int
    events: int
    rate: float | None  # events/s since the previous report
    started_at: datetime | None
    updated_at: datetime | None


class StatusReporter:
    """Upserts one row per worker; a failure is logged, never raised (the status must
    not stop the worker)."""

    def __init__(self, store: Any, tenant: str, stream: str, started_at: datetime):
        self.store, self.tenant, self.stream = store, tenant, stream
        self.worker, self.started_at = worker_name(), started_at
        self._last: tuple[float, int] | None = None

    def report(self, watermarks: dict[str, datetime], lag: int | None, messages: int, events: int,
               now: datetime) -> None:
        clock = time.monotonic()
        rate = None
        if self._last is not None and clock > self._last[0]:
            rate = (events - self._last[1]) / (clock - self._last[0])
        self._last = (clock, events)
        parts = json.dumps({p or "0": (t if t.tzinfo else t.replace(tzinfo=UTC)).isoformat()
                            for p, t in sorted(watermarks.items())})
        try:
            with self.store.tx() as tx:
                tx.execute(
                    "INSERT INTO worker_status (tenant_id, worker, stream, partitions, lag, messages, "
                    "events, rate, started_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?) "
                    "ON CONFLICT (tenant_id, worker) DO UPDATE SET stream = excluded.stream, "
                    "partitions = excluded.partitions, lag = excluded.lag, messages = excluded.messages, "
                    "events = excluded.events, rate = excluded.rate, updated_at = excluded.updated_at",
                    (self.tenant, self.worker, self.stream, parts, lag, messages, events, rate,
                     tx.ts(self.started_at), tx.ts(now)))
        except Exception as exc:
            log.warning("worker status not recorded: %s", type(exc).__name__)


def worker_reports(store: Any, tenant: str, limit: int = 100) -> list[WorkerReport]:
    """The workers' last reports, newest first."""
    with store.tx() as tx:
        rows = tx.execute(
            "SELECT worker, stream, partitions, lag, messages, events, rate, started_at, updated_at "
            "FROM worker_status WHERE tenant_id = ? ORDER BY updated_at DESC, worker LIMIT ?",
            (tenant, limit)).fetchall()
    return [WorkerReport(w, s, json.loads(p) if isinstance(p, str) else dict(p or {}),
                         None if lag is None else int(lag), int(m), int(e),
                         None if r is None else float(r), from_iso(st), from_iso(up))
            for w, s, p, lag, m, e, r, st, up in rows]
