"""What the dashboard reads from the store, always for one tenant: SQL written once
for SQLite and PostgreSQL (``?`` placeholders, through ``Store.tx``), lists paged
with ``LIMIT``/``OFFSET``. Aggregations run in the database; no page reads a table whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from ceap.delivery.model import Delivery
from ceap.delivery.outbox import SELECT_DELIVERY, delivery_from_row
from ceap.model import Candidate
from ceap.store.base import Store
from ceap.store.delivery_schema import HELD, HELD_STATUSES, SETTLED
from ceap.store.schema import from_iso
from ceap.store.sql_common import SELECT_CANDIDATE, candidate_from_row
from ceap.store.tx import Tx

PAGE_SIZE = 50
T = TypeVar("T")


@dataclass
class Page(Generic[T]):
    """One page of a list: its rows, its number (from 1) and whether more follow."""

    rows: list[T]
    number: int
    more: bool

    @property
    def offset(self) -> int:
        return (self.number - 1) * PAGE_SIZE


def _paged(tx: Tx, sql: str, params: Sequence[Any], page: int) -> tuple[list[Any], bool]:
    rows = tx.execute(f"{sql} LIMIT ? OFFSET ?",
                      (*params, PAGE_SIZE + 1, (page - 1) * PAGE_SIZE)).fetchall()
    return rows[:PAGE_SIZE], len(rows) > PAGE_SIZE


def _day(tx: Tx, column: str) -> str:
    """SQL for the UTC day (``YYYY-MM-DD``) of a timestamp column."""
    if tx.dialect == "postgres":
        return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
    return f"substr({column}, 1, 10)"


def _minute(tx: Tx, column: str) -> str:
    if tx.dialect == "postgres":
        return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI')"
    return f"substr({column}, 1, 16)"


def _event_log(tx: Tx) -> str:
    """The event log for a scan of a tenant's events: on SQLite not through an index by
    tenant (the primary key's; the customer index until migration 0011), which would fetch
    every row by itself (14x slower than reading the table through, at 200,000 events)."""
    return "event_log NOT INDEXED" if tx.dialect == "sqlite" else "event_log"


# --- programs --------------------------------------------------------------------------------

def run_programs(store: Store, tenant: str) -> dict[str, tuple[int, datetime | None]]:
    """``program -> (runs, last start)`` of every program with runs."""
    with store.tx() as tx:
        rows = tx.execute("SELECT program, count(*), max(started_at) FROM runs WHERE tenant_id = ? "
                          "GROUP BY program", (tenant,)).fetchall()
    return {p: (int(n), from_iso(last)) for p, n, last in rows}


def candidate_counts(store: Store, tenant: str) -> dict[str, dict[str, int]]:
    """``program -> {status: candidates}``."""
    out: dict[str, dict[str, int]] = {}
    with store.tx() as tx:
        for program, status, n in tx.execute(
                "SELECT program, status, count(*) FROM candidates WHERE tenant_id = ? "
                "GROUP BY program, status", (tenant,)).fetchall():
            out.setdefault(program, {})[status] = int(n)
    return out


# --- customers -------------------------------------------------------------------------------

def find_customers(store: Store, tenant: str, prefix: str, page: int) -> Page[tuple[str, int]]:
    """Customers with candidates whose id starts with ``prefix``: ``(customer, candidates)``."""
    with store.tx() as tx:
        rows, more = _paged(tx, "SELECT customer_id, count(*) FROM candidates WHERE tenant_id = ? "
                                "AND substr(customer_id, 1, ?) = ? GROUP BY customer_id "
                                "ORDER BY customer_id", (tenant, len(prefix), prefix), page)
    return Page([(c, int(n)) for c, n in rows], page, more)


def customer_candidates(store: Store, tenant: str, customer: str, page: int) -> Page[Candidate]:
    """Every candidate of the customer (any status, expired too), newest first."""
    with store.tx() as tx:
        rows, more = _paged(tx, f"{SELECT_CANDIDATE} WHERE tenant_id = ? AND customer_id = ? "
                                "ORDER BY created_at DESC, id DESC", (tenant, customer), page)
    return Page([candidate_from_row(r) for r in rows], page, more)


@dataclass
class DeliveryEvent:
    delivery_id: int
    status: str
    detail: str | None
    at: datetime | None


def customer_deliveries(store: Store, tenant: str, customer: str,
                        page: int) -> tuple[Page[Delivery], dict[int, list[DeliveryEvent]]]:
    """The customer's deliveries, newest first, and the events of those on the page."""
    with store.tx() as tx:
        rows, more = _paged(tx, f"{SELECT_DELIVERY} WHERE tenant_id = ? AND customer_id = ? "
                                "ORDER BY id DESC", (tenant, customer), page)
        found = [delivery_from_row(r) for r in rows]
        events: dict[int, list[DeliveryEvent]] = {}
        if found:
            ids = [d.id for d in found]
            for did, status, detail, at in tx.execute(
                    "SELECT delivery_id, status, detail, created_at FROM delivery_events "
                    f"WHERE tenant_id = ? AND delivery_id IN ({tx.placeholders(len(ids))}) "
                    "ORDER BY id", (tenant, *ids)).fetchall():
                events.setdefault(int(did), []).append(DeliveryEvent(int(did), status, detail,
                                                                     from_iso(at)))
    return Page(found, page, more), events


def customer_engagements(store: Store, tenant: str, customer: str) -> list[dict[str, Any]]:
    """The customer's last 200 engagements (opens, clicks, reads, unsubscribes), newest first."""
    with store.tx() as tx:
        rows = tx.execute("SELECT type, channel, program, candidate_id, delivery_id, ts, source, url "
                          "FROM engagements WHERE tenant_id = ? AND customer_id = ? "
                          "ORDER BY ts DESC LIMIT 200", (tenant, customer)).fetchall()
    names = ("type", "channel", "program", "candidate_id", "delivery_id", "ts", "source", "url")
    return [{**dict(zip(names, r, strict=True)), "ts": from_iso(r[5])} for r in rows]


def customer_conversions(store: Store, tenant: str, customer: str) -> list[dict[str, Any]]:
    """Goal events attributed to the customer's candidates, newest first."""
    with store.tx() as tx:
        rows = tx.execute("SELECT program, candidate_id, event_type, value, event_ts, touch_ts "
                          "FROM conversions WHERE tenant_id = ? AND customer_id = ? "
                          "ORDER BY event_ts DESC LIMIT 200", (tenant, customer)).fetchall()
    return [{"program": p, "candidate_id": c, "event_type": t, "value": v,
             "event_ts": from_iso(e), "touch_ts": from_iso(tt)} for p, c, t, v, e, tt in rows]


def customer_consent(store: Store, tenant: str, customer: str) -> list[dict[str, Any]]:
    """The customer's consent per channel and topic, with where and when it was last set."""
    with store.tx() as tx:
        rows = tx.execute("SELECT channel, topic, granted, source, updated_at FROM consent "
                          "WHERE tenant_id = ? AND customer_id = ? ORDER BY channel, topic",
                          (tenant, customer)).fetchall()
    return [{"channel": ch, "topic": t, "granted": bool(g), "source": s, "updated_at": from_iso(u)}
            for ch, t, g, s, u in rows]


# --- deliveries ------------------------------------------------------------------------------

def delivery_days(store: Store, tenant: str) -> list[tuple[str, str, str, int]]:
    """``(day, channel, status, deliveries)`` by the day each delivery was planned (UTC).
    Settled deliveries are counted from ``deliveries_by_day`` alone, the queued and sending
    ones (not in it: their status still changes) by the due and held indexes."""
    counts: dict[tuple[str, str, str], int] = {}
    with store.tx() as tx:
        day = _day(tx, "created_at")
        plus = "+" if tx.dialect == "sqlite" else ""  # the open ones: off the tenant indexes
        for where in (f"tenant_id = ? AND {SETTLED}", f"{plus}tenant_id = ? AND status = 'queued'",
                      f"{plus}tenant_id = ? AND status = 'sending' AND {HELD}"):
            for d, ch, s, n in tx.execute(f"SELECT {day} AS day, channel, status, count(*) FROM deliveries "
                                          f"WHERE {where} GROUP BY 1, channel, status", (tenant,)):
                counts[(d, ch, s)] = int(n)
    return [(d, ch, s, n) for (d, ch, s), n in sorted(counts.items())]


def deliveries_by(store: Store, tenant: str, statuses: Sequence[str], page: int) -> Page[Delivery]:
    """Deliveries in any of ``statuses``, newest first."""
    with store.tx() as tx:
        # SQLite (no planner statistics): ``+`` keeps it off the tenant index, so it finds the
        # few rows by status (the status index) and orders them, rather than walking all of
        # the tenant's deliveries
        plus = "+" if tx.dialect == "sqlite" else ""
        held = f" AND {HELD}" if set(statuses) <= set(HELD_STATUSES) else ""  # the held index
        rows, more = _paged(tx, f"{SELECT_DELIVERY} WHERE {plus}tenant_id = ? AND status IN "
                                f"({tx.placeholders(len(statuses))}){held} ORDER BY {plus}id DESC",
                            (tenant, *statuses), page)
    return Page([delivery_from_row(r) for r in rows], page, more)


# --- experiments -----------------------------------------------------------------------------

def experiment_programs(store: Store, tenant: str) -> list[tuple[str, int, int, int]]:
    """Programs with candidates: ``(program, treated, control, with a variant)``."""
    with store.tx() as tx:
        rows = tx.execute(
            "SELECT program, sum(CASE WHEN arm = 'treatment' THEN 1 ELSE 0 END), "
            "sum(CASE WHEN arm <> 'treatment' THEN 1 ELSE 0 END), "
            "sum(CASE WHEN variant IS NOT NULL THEN 1 ELSE 0 END) "
            "FROM candidates WHERE tenant_id = ? GROUP BY program ORDER BY program",
            (tenant,)).fetchall()
    return [(p, int(t or 0), int(c or 0), int(v or 0)) for p, t, c, v in rows]


def bandit_programs(store: Store, tenant: str) -> set[str]:
    with store.tx() as tx:
        return {p for (p,) in tx.execute("SELECT DISTINCT program FROM bandit_arms WHERE tenant_id = ?",
                                         (tenant,)).fetchall()}


# --- real time -------------------------------------------------------------------------------

@dataclass
class StreamBacklog:
    stream: str
    waiting: int
    leased: int
    oldest: datetime | None


@dataclass
class WorkerLease:
    stream: str
    worker: str
    messages: int
    lease_until: datetime | None


def stream_backlog(store: Store) -> tuple[list[StreamBacklog], list[WorkerLease]]:
    """The embedded stream's queue (shared by every tenant of the store: the queue's rows
    carry no tenant until they are parsed): messages waiting, leased and by which worker."""
    with store.tx() as tx:
        streams = tx.execute(
            "SELECT stream, count(*), sum(CASE WHEN lease_until IS NOT NULL THEN 1 ELSE 0 END), "
            "min(enqueued_at) FROM stream_queue GROUP BY stream ORDER BY stream").fetchall()
        workers = tx.execute(
            "SELECT stream, worker, count(*), max(lease_until) FROM stream_queue "
            "WHERE worker IS NOT NULL GROUP BY stream, worker ORDER BY stream, worker").fetchall()
    return ([StreamBacklog(s, int(n), int(leased or 0), from_iso(oldest))
             for s, n, leased, oldest in streams],
            [WorkerLease(s, w, int(n), from_iso(until)) for s, w, n, until in workers])


def event_rate(store: Store, tenant: str, since: datetime) -> list[tuple[str, int]]:
    """Events per minute (by event time, UTC) since ``since``, from the event log."""
    with store.tx() as tx:
        minute = _minute(tx, "ts")
        rows = tx.execute(f"SELECT {minute}, count(*) FROM {_event_log(tx)} WHERE tenant_id = ? AND ts >= ? "
                          "GROUP BY 1 ORDER BY 1", (tenant, tx.ts(since))).fetchall()
    return [(m, int(n)) for m, n in rows]


def event_totals(store: Store, tenant: str) -> tuple[int, datetime | None, int]:
    """Events in the log, the latest event time, and pending absence timers."""
    with store.tx() as tx:
        n, last = tx.execute(f"SELECT count(*), max(ts) FROM {_event_log(tx)} WHERE tenant_id = ?",
                             (tenant,)).fetchone()
        timers = tx.execute("SELECT count(*) FROM timers WHERE tenant_id = ?", (tenant,)).fetchone()[0]
    return int(n), from_iso(last), int(timers)


def dead_letters(store: Store, tenant: str, page: int) -> Page[dict[str, Any]]:
    """Stream messages the worker could not parse as events (quarantined with the reason)."""
    with store.tx() as tx:
        rows, more = _paged(tx, "SELECT id, row, reason FROM quarantine WHERE tenant_id = ? AND "
                                "program = '__events' ORDER BY id DESC", (tenant,), page)
    return Page([{"id": i, "row": r, "reason": why} for i, r, why in rows], page, more)


def quarantined(store: Store, tenant: str, run_id: str, limit: int = 20) -> list[dict[str, Any]]:
    """The first rows a run set aside, with the reason."""
    with store.tx() as tx:
        rows = tx.execute("SELECT row, reason FROM quarantine WHERE tenant_id = ? AND run_id = ? "
                          "ORDER BY id LIMIT ?", (tenant, run_id, limit)).fetchall()
    return [{"row": r, "reason": why} for r, why in rows]
