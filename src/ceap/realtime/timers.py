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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ceap.json_input import loads
from ceap.model import utcnow
from ceap.realtime.events import EVENT_SCHEMA
from ceap.realtime.state import _in_list, _iso_column, _naive, by_customer, of_stream
from ceap.store.base import Store
from ceap.store.tx import Tx

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
    marks = {"__timer": True, f"__absence_{feature}": True}
    tail = "," + json.dumps(marks, separators=(",", ":"))[1:]
    for tenant, customer, event_id, fire_at, attributes in fired:
        out["event_id"].append(f"timer:{event_id}")
        out["tenant_id"].append(tenant)
        out["customer_id"].append(customer)
        out["type"].append("__timer")
        out["ts"].append(fire_at)
        out["attributes"].append(_marked(attributes, marks, tail))
    return pa.table(out, schema=EVENT_SCHEMA)


def _marked(attributes: str, marks: dict[str, bool], tail: str) -> str:
    """The arming event's attributes (its stored JSON object) with the timer's ``marks``
    added (they replace keys of the same name). The stored text with ``tail`` spliced in
    before its closing brace when it is an object holding neither mark's name, nor an escape
    that may spell one (no decoding and encoding again); else decoded, merged, encoded."""
    if attributes and attributes[0] == "{" and attributes[-1] == "}" and "\\" not in attributes \
            and not any(f'"{k}"' in attributes for k in marks):
        body = attributes[1:-1].strip()
        return "{" + body + tail if body else "{" + tail[1:]
    # ``json.loads``; the stored text is ASCII (``ensure_ascii``): ``loads`` reads its bytes
    # with orjson when that gives the same values
    attrs = (loads(attributes.encode()) if attributes.isascii() else json.loads(attributes)) \
        if attributes else {}
    return json.dumps(attrs | marks)


_EPOCH = datetime(1970, 1, 1)


def _micros_of(values: Sequence[datetime | str]) -> np.ndarray:
    """Stored times (``_naive_many``) as microseconds since 1970 (int64)."""
    if not values:
        return np.zeros(0, dtype=np.int64)
    if all(type(v) is str for v in values):
        try:
            utc = pc.cast(pa.array(values, pa.string()), pa.timestamp("us", "UTC"))
            return pc.cast(utc, pa.int64()).to_numpy(zero_copy_only=False)  # type: ignore[no-any-return]
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
    naive = pa.array(_naive_many(values), pa.timestamp("us"))
    return pc.cast(naive, pa.int64()).to_numpy(zero_copy_only=False)  # type: ignore[no-any-return]


def _datetime_of(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _arrived_columns(fresh: pa.Table | None, missing: str) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """Tenants, customers and times (µs) of the ``missing`` events in ``fresh`` (not logged
    yet): ``arrived`` as columns."""
    if fresh is None or not fresh.num_rows:
        return pa.array([], pa.string()), pa.array([], pa.string()), np.zeros(0, dtype=np.int64)
    picked = fresh.filter(pc.equal(fresh.column("type"), missing))
    return (picked.column("tenant_id").combine_chunks(), picked.column("customer_id").combine_chunks(),
            pc.cast(picked.column("ts"), pa.int64()).to_numpy(zero_copy_only=False))


def _missing_came(customers: pa.Array, afters: np.ndarray, fires: np.ndarray,
                  came_customers: pa.Array, came_ts: np.ndarray) -> np.ndarray:
    """Per timer (its customer, ``after`` and ``fire`` in µs): whether some ``missing`` event of
    its customer (``came_customers``, ``came_ts``) lies in ``(after, fire]``. Column-wise: the
    events sorted by (customer, time); a timer's first event after ``after`` found by one
    binary search over (customer, rank of the time) keys."""
    n = len(customers)
    if not n or not len(came_customers):
        return np.zeros(n, dtype=bool)
    codes = pc.dictionary_encode(pa.concat_arrays([customers, came_customers])).indices
    codes = pc.fill_null(codes, -1).to_numpy(zero_copy_only=False).astype(np.int64) + 1
    t_codes, m_codes = codes[:n], codes[n:]
    times, ranks = np.unique(np.concatenate([came_ts, afters]), return_inverse=True)
    width = len(times) + 1
    m_keys = m_codes * width + ranks[:len(came_ts)]
    order = np.argsort(m_keys, kind="stable")
    m_keys, m_codes, m_ts = m_keys[order], m_codes[order], came_ts[order]
    at = np.searchsorted(m_keys, t_codes * width + ranks[len(came_ts):], "right")
    inside = at < len(m_keys)
    at = np.minimum(at, len(m_keys) - 1)
    return inside & (m_codes[at] == t_codes) & (m_ts[at] <= fires)  # type: ignore[no-any-return]


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
            self._insert(tx, program, [tenants, customers, events, after_ts, fire_at, partitions])

    def add_columns(self, program: str, columns: Sequence[pa.Array]) -> None:
        """``add`` of the timers as columns (tenant, customer, event id, after ts, fire at,
        partition; naive UTC times): no Python value a time on SQLite."""
        if not len(columns[0]):
            return
        with self.store.tx() as tx:
            if tx.dialect == "sqlite":
                texts = [c.to_pylist() for c in (columns[0], columns[1], columns[2], columns[5])]
                stamps = [_iso_column(pa.chunked_array([c])) for c in (columns[3], columns[4])]
                self._insert(tx, program, [*texts[:3], *stamps, texts[3]])
            else:
                self._insert(tx, program, [*(c.to_pylist() for c in columns[:3]),
                                           *([tx.ts(v.replace(tzinfo=UTC)) for v in c.to_pylist()]
                                             for c in columns[3:5]), columns[5].to_pylist()])

    def _insert(self, tx: Tx, program: str, columns: Sequence[Sequence[object]]) -> None:
        n = len(columns[0])
        tenants, customers, events, after_ts, fire_at, partitions = columns
        tx.executemany(
            "INSERT INTO timers (tenant_id, program, customer_id, event_id, after_ts, fire_at, "
            "partition_key, stream) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, program, "
            "customer_id, event_id) DO NOTHING",
            list(zip(tenants, [program] * n, customers, events, after_ts, fire_at, partitions,
                     [self.stream] * n, strict=True)))

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
            fired: list[tuple[str, str, str, datetime, str]] = []
            self.claimed.setdefault(program, []).extend((t, c, e) for t, c, e, *_ in claimed)
            tenants, customers, event_ids = ([r[i] for r in claimed] for i in range(3))
            afters, fires = _micros_of([r[3] for r in claimed]), _micros_of([r[4] for r in claimed])
            in_fresh = fresh_attributes(fresh, set(event_ids))
            came_tenants, came_customers, came_ts = _arrived_columns(fresh, missing)
            for tenant in sorted(set(tenants)):
                mine = [e for t, e in zip(tenants, event_ids, strict=True) if t == tenant]
                where, params = _in_list(tx, "event_id", mine)
                armed = dict(in_fresh)  # the arming events' attributes: not logged yet, or logged
                armed.update(tx.execute(f"SELECT event_id, attributes FROM event_log WHERE "
                                        f"tenant_id = ? AND {where}", (tenant, *params)).fetchall())
                of_tenant = [i for i, t in enumerate(tenants) if t == tenant]
                who = sorted({customers[i] for i in of_tenant})
                start = _datetime_of(int(afters[of_tenant].min()))
                kept = self._kept(tenant, who, missing, partition, start)
                if kept is None:
                    where, params = _in_list(tx, "customer_id", who)
                    sql = (f"SELECT customer_id, ts FROM {by_customer(tx)} WHERE tenant_id = ? AND type = ? "
                           f"AND {where} AND ts > ?")
                    logged = tx.execute(sql, (tenant, missing, *params,
                                              tx.ts(start.replace(tzinfo=UTC)))).fetchall()
                    kept = (pa.array([r[0] for r in logged], pa.string()),
                            _micros_of([r[1] for r in logged]))
                came_here = pc.equal(came_tenants, tenant).to_numpy(zero_copy_only=False) \
                    if len(came_tenants) else np.zeros(0, dtype=bool)
                met = _missing_came(
                    pa.array([customers[i] for i in of_tenant], pa.string()), afters[of_tenant],
                    fires[of_tenant], pa.concat_arrays([came_customers.filter(pa.array(came_here)), kept[0]]),
                    np.concatenate([came_ts[came_here], kept[1]]))
                for i, came in zip(of_tenant, met.tolist(), strict=True):
                    if came or event_ids[i] not in armed:  # a missing event came; or the event that
                        continue                            # armed it is gone (pruned)
                    text = armed[event_ids[i]]
                    fired.append((tenant, customers[i], event_ids[i], _datetime_of(int(fires[i])),
                                  text if isinstance(text, str) else json.dumps(text)))
        return timer_events(fired, feature)

    def _kept(self, tenant: str, customers: list[str], missing: str, partition: str,
              start: datetime) -> tuple[pa.Array, np.ndarray] | None:
        """The customers and times (µs) of the ``missing`` events after ``start`` from the keyed state,
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
        return (found.column("customer_id").combine_chunks(),
                pc.cast(found.column("ts"), pa.int64()).to_numpy(zero_copy_only=False))

    def done(self, program: str) -> None:
        """Delete the timers of ``program`` claimed since the last call: their rows are stored."""
        taken = self.claimed.pop(program, [])
        if not taken:
            return
        with self.store.tx() as tx:
            tx.executemany("DELETE FROM timers WHERE tenant_id = ? AND program = ? AND customer_id = ? "
                           "AND event_id = ?", [(t, program, c, e) for t, c, e in taken])
