"""Absence timers in the CEAP store (SQLite or PostgreSQL): one per (program's
feature, customer, triggering event), on the partition of that event, of its stream
(two streams may both have partition ``""``: column ``stream``, migration 0010).

A timer fires once its partition's watermark minus the program's allowed lateness
has passed its fire time (strictly): by then no event of that partition that could
still change the answer (a ``missing`` event up to the fire time) can arrive
without being late. Firing claims the due timers for a lease (``UPDATE ...
RETURNING`` in one transaction), so two workers never take one together; ``done``
deletes them once the program's candidates are stored, and a worker killed in
between leaves them to be taken again when the lease runs out, or when another
worker takes their partition over (``ceap.realtime.claims``; the candidate's
dedup key makes the second firing change nothing).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from ceap.json_input import loads
from ceap.model import utcnow
from ceap.realtime.events import EVENT_SCHEMA
from ceap.realtime.state import _in_list, _iso_column, _naive, by_customer, of_stream
from ceap.store.base import Store

if TYPE_CHECKING:
    from ceap.realtime.keyed import KeyedState

#: how long a worker holds the timers it took before another may take them again
LEASE = timedelta(seconds=60)

#: ``(tenant, customer, event id, after ts, fire at, partition)``; naive UTC times
TimerRow = tuple[str, str, str, datetime, datetime, str]


def arrived(fresh: pa.Table | None, missing: str) -> dict[tuple[str, str], list[datetime]]:
    """``(tenant, customer)`` -> times of the ``missing`` events in ``fresh`` (not logged yet)."""
    if fresh is None or not fresh.num_rows:
        return {}
    picked = fresh.filter(pc.equal(fresh.column("type"), missing))
    out: dict[tuple[str, str], list[datetime]] = {}
    for t, c, ts in zip(*(picked.column(n).to_pylist() for n in ("tenant_id", "customer_id", "ts")),
                        strict=True):
        out.setdefault((t, c), []).append(ts)
    return out


def fresh_attributes(fresh: pa.Table | None, event_ids: set[str]) -> dict[str, str]:
    """Event id -> attributes of the events of ``fresh`` (not logged yet) among ``event_ids``."""
    if fresh is None or not fresh.num_rows or not event_ids:
        return {}
    picked = fresh.filter(pc.is_in(fresh.column("event_id"), pa.array(sorted(event_ids), pa.string())))
    return dict(zip(picked.column("event_id").to_pylist(), picked.column("attributes").to_pylist(),
                    strict=True))


def _iso_texts(times: Sequence[datetime]) -> list[str]:
    """Naive UTC times as the store's text (``to_iso``), converted column-wise."""
    return _iso_column(pa.chunked_array([pa.array(times, pa.timestamp("us"))]))


def _naive_many(values: Sequence[datetime | str]) -> list[datetime]:
    """``_naive`` of each stored time, the store's text (SQLite) converted column-wise."""
    if values and all(type(v) is str for v in values):
        try:
            utc = pc.cast(pa.array(values, pa.string()), pa.timestamp("us", "UTC"))
            return pc.cast(utc, pa.timestamp("us")).to_pylist()  # type: ignore[no-any-return]
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
    return [_naive(v) for v in values]


def timer_events(fired: Sequence[tuple[str, str, str, datetime, str]], feature: str) -> pa.Table:
    """Fired timers ``(tenant, customer, event id, fire at, attributes JSON)`` as the rows
    a program gets: type ``__timer``, ``ts`` the fire time, the feature true."""
    out: dict[str, list[object]] = {n: [] for n in EVENT_SCHEMA.names}
    for tenant, customer, event_id, fire_at, attributes in fired:
        # ``json.loads``; the stored text is ASCII (``ensure_ascii``): ``loads`` reads its bytes
        # with orjson when that gives the same values
        attrs = (loads(attributes.encode()) if attributes.isascii() else json.loads(attributes)) \
            if attributes else {}
        out["event_id"].append(f"timer:{event_id}")
        out["tenant_id"].append(tenant)
        out["customer_id"].append(customer)
        out["type"].append("__timer")
        out["ts"].append(fire_at)
        out["attributes"].append(json.dumps(attrs | {"__timer": True, f"__absence_{feature}": True}))
    return pa.table(out, schema=EVENT_SCHEMA)


class Timers:
    """Absence timers in the store's ``timers`` table, of one stream: armed with its name,
    fired only by its worker (timers without a stream, armed before migration 0010, by the
    worker of any stream; ``stream`` None: every timer of the partition, armed without)."""

    def __init__(self, store: Store, stream: str | None = None):
        self.store = store
        self.stream = stream
        self.claimed: dict[str, list[tuple[str, str, str]]] = {}
        #: the worker's keyed state (None: it reads history from the log): the ``missing``
        #: events are looked up there, not in the event log, when it holds them
        self.keyed: KeyedState | None = None

    def add(self, program: str, rows: Sequence[TimerRow]) -> None:
        if not rows:
            return
        with self.store.tx() as tx:
            tenants, customers, events, afters, fires, partitions = zip(*rows, strict=True)
            if tx.dialect == "sqlite":  # the store's text, converted column-wise
                after_ts, fire_at = _iso_texts(afters), _iso_texts(fires)
            else:
                after_ts, fire_at = ([tx.ts(v.replace(tzinfo=UTC)) for v in times]
                                     for times in (afters, fires))
            tx.executemany(
                "INSERT INTO timers (tenant_id, program, customer_id, event_id, after_ts, fire_at, "
                "partition_key, stream) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, program, "
                "customer_id, event_id) DO NOTHING",
                list(zip(tenants, [program] * len(rows), customers, events, after_ts, fire_at, partitions,
                         [self.stream] * len(rows), strict=True)))

    def fire(self, program: str, feature: str, missing: str, partition: str, before: datetime,
             fresh: pa.Table | None = None) -> pa.Table:
        """Claim the timers of ``program`` on ``partition`` due strictly before ``before``;
        return, as events, those with no ``missing`` event in ``(after ts, fire at]``,
        logged or in ``fresh`` (this micro-batch). ``done`` deletes the claimed ones."""
        now = utcnow()
        own, args = ("", ()) if self.stream is None else (f"AND {of_stream()} ", (self.stream,))
        with self.store.tx() as tx:
            claimed = tx.execute(
                "UPDATE timers SET claimed_until = ? WHERE program = ? AND COALESCE(partition_key, '') = ? "
                f"{own}AND fire_at < ? AND (claimed_until IS NULL OR claimed_until < ?) "
                "RETURNING tenant_id, customer_id, event_id, after_ts, fire_at",
                (tx.ts(now + LEASE), program, partition, *args, tx.ts(before.replace(tzinfo=UTC)),
                 tx.ts(now))).fetchall()
            if not claimed:
                return EVENT_SCHEMA.empty_table()
            self.claimed.setdefault(program, []).extend((t, c, e) for t, c, e, *_ in claimed)
            batch = arrived(fresh, missing)
            by_tenant: dict[str, list[tuple[str, str, datetime, datetime]]] = {}
            afters, fires = _naive_many([r[3] for r in claimed]), _naive_many([r[4] for r in claimed])
            for (tenant, customer, event_id, *_), after, fire_at in zip(claimed, afters, fires,
                                                                        strict=True):
                by_tenant.setdefault(tenant, []).append((customer, event_id, after, fire_at))
            fired: list[tuple[str, str, str, datetime, str]] = []
            for tenant, timers in by_tenant.items():
                where, params = _in_list(tx, "event_id", [e for _, e, _, _ in timers])
                attributes = fresh_attributes(fresh, {e for _, e, _, _ in timers})
                attributes.update(tx.execute(f"SELECT event_id, attributes FROM event_log WHERE "
                                             f"tenant_id = ? AND {where}", (tenant, *params)).fetchall())
                customers = sorted({c for c, _, _, _ in timers})
                start = min(a for _, _, a, _ in timers)
                came: dict[str, list[datetime]] = {c: list(v) for (t, c), v in batch.items() if t == tenant}
                kept = self._kept(tenant, customers, missing, partition, start)
                if kept is None:
                    where, params = _in_list(tx, "customer_id", customers)
                    sql = (f"SELECT customer_id, ts FROM {by_customer(tx)} WHERE tenant_id = ? AND type = ? "
                           f"AND {where} AND ts > ?")
                    logged = tx.execute(sql, (tenant, missing, *params,
                                              tx.ts(start.replace(tzinfo=UTC)))).fetchall()
                    kept = list(zip([r[0] for r in logged], _naive_many([r[1] for r in logged]),
                                    strict=True))
                for customer, ts in kept:
                    came.setdefault(customer, []).append(ts)
                for customer, event_id, after, fire_at in timers:
                    if event_id not in attributes:  # the event that armed it is gone (pruned)
                        continue
                    if any(after < ts <= fire_at for ts in came.get(customer, ())):
                        continue
                    text = attributes[event_id]
                    fired.append((tenant, customer, event_id, fire_at,
                                  text if isinstance(text, str) else json.dumps(text)))
        return timer_events(fired, feature)

    def _kept(self, tenant: str, customers: list[str], missing: str, partition: str,
              start: datetime) -> list[tuple[str, datetime]] | None:
        """``(customer, ts)`` of the ``missing`` events after ``start`` from the keyed state,
        when it holds them: the partition restored into it, the type kept, and ``start`` at
        or after the time from which it holds every event of the partition (``horizon``;
        the log holds them too, until pruned behind the lowest watermark); None: read the log."""
        keyed = self.keyed
        since = keyed.horizon.get(partition) if keyed is not None else None
        if keyed is None or since is None or missing not in keyed.types or start < since:
            return None
        found = keyed.history(pa.array(customers, pa.string()),
                              pa.array([tenant] * len(customers), pa.string()))
        found = found.filter(pc.and_(pc.equal(found.column("type"), missing),
                                     pc.greater(found.column("ts"), pa.scalar(start, pa.timestamp("us")))))
        return list(zip(found.column("customer_id").to_pylist(), found.column("ts").to_pylist(), strict=True))

    def done(self, program: str) -> None:
        """Delete the timers of ``program`` claimed since the last call: their rows are stored."""
        taken = self.claimed.pop(program, [])
        if not taken:
            return
        with self.store.tx() as tx:
            tx.executemany("DELETE FROM timers WHERE tenant_id = ? AND program = ? AND customer_id = ? "
                           "AND event_id = ?", [(t, program, c, e) for t, c, e in taken])
