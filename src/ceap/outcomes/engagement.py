"""Engagement records: what a delivery led to (delivered, opened, clicked, read...).

Every record has a ``dedup_key`` unique per tenant, so recording the same
thing twice (a provider retrying its callback, a replayed event, a second
pixel load) stores it once: the first one is kept. Keys are
``<type>:<delivery id>`` (clicks add the link's hash), so a report counts
each kind of engagement once per delivery.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ceap.delivery.model import Delivery
from ceap.model import utcnow
from ceap.store.schema import from_iso
from ceap.store.tx import Tx

TYPES = frozenset({"delivered", "bounced", "failed", "opened", "clicked", "read", "replied",
                   "unsubscribed", "complained", "converted"})
SOURCES = frozenset({"receipt", "pixel", "link", "inapp", "event", "api", "unsubscribe"})
#: types a receipt (``Outbox.receipt``) records
RECEIPT_TYPES = frozenset({"delivered", "bounced", "failed", "complained"})
COLUMNS = ("tenant_id", "delivery_id", "candidate_id", "program", "customer_id", "channel", "type", "ts",
           "source", "url", "dedup_key", "recorded_at")
_DELIVERY = "SELECT id, program, customer_id, channel, candidate_id, sent_at FROM deliveries"
_CHUNK = 500


@dataclass(frozen=True)
class Engagement:
    tenant_id: str
    customer_id: str
    type: str
    ts: datetime
    source: str
    dedup_key: str
    delivery_id: int | None = None
    candidate_id: int | None = None
    program: str | None = None
    channel: str | None = None
    url: str | None = None

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"unknown engagement type {self.type!r} (known: {', '.join(sorted(TYPES))})")
        if self.source not in SOURCES:
            raise ValueError(f"unknown engagement source {self.source!r}")


@dataclass(frozen=True)
class DeliveryRef:
    """What an engagement needs to know of its delivery."""

    id: int
    tenant_id: str
    program: str
    customer_id: str
    channel: str
    candidate_id: int
    sent_at: datetime | None = None

    @classmethod
    def of(cls, d: Delivery) -> DeliveryRef:
        return cls(d.id, d.tenant_id, d.program, d.customer_id, d.channel, d.candidate_id, d.sent_at)

    def engagement(self, type: str, ts: datetime, source: str, suffix: str | None = None,
                   url: str | None = None) -> Engagement:
        key = f"{type}:{self.id}" + (f":{suffix}" if suffix else "")
        return Engagement(self.tenant_id, self.customer_id, type, ts, source, key, self.id,
                          self.candidate_id, self.program, self.channel, url)


def _ref(tenant: str, row: Sequence[Any]) -> DeliveryRef:
    return DeliveryRef(int(row[0]), tenant, row[1], row[2], row[3], int(row[4]), from_iso(row[5]))


def insert_returning(tx: Tx, table: str, columns: Sequence[str], conflict: str,
                     rows: Sequence[Sequence[Any]], chunk: int = 200) -> int:
    """``INSERT ... ON CONFLICT (conflict) DO NOTHING`` of ``rows``, many per statement;
    returns how many rows were new."""
    one = f"({', '.join('?' * len(columns))})"
    new = 0
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        sql = (f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([one] * len(part))} "
               f"ON CONFLICT ({conflict}) DO NOTHING RETURNING 1")
        new += len(tx.execute(sql, [v for row in part for v in row]).fetchall())
    return new


def record_in(tx: Tx, items: Iterable[Engagement], now: datetime) -> int:
    """Insert ``items`` in ``tx`` (the caller's transaction); returns how many were new."""
    rows = [(e.tenant_id, e.delivery_id, e.candidate_id, e.program, e.customer_id, e.channel, e.type,
             tx.ts(e.ts), e.source, e.url, e.dedup_key, tx.ts(now)) for e in items]
    return insert_returning(tx, "engagements", COLUMNS, "tenant_id, dedup_key", rows)


def record(store: Any, items: Iterable[Engagement], now: datetime | None = None) -> int:
    """Record engagements in one transaction; returns how many were new."""
    items = list(items)
    if not items:
        return 0
    with store.tx() as tx:
        return record_in(tx, items, now or utcnow())


def delivery_for_candidate(tx: Tx, tenant: str, candidate_id: int, channel: str) -> DeliveryRef | None:
    """The delivery of a candidate on a channel (the one a tracking token names)."""
    row = tx.execute(f"{_DELIVERY} WHERE tenant_id = ? AND candidate_id = ? AND channel = ? "
                     "ORDER BY id LIMIT 1", (tenant, candidate_id, channel)).fetchone()
    return _ref(tenant, row) if row else None


def deliveries_by(tx: Tx, tenant: str, column: str, values: Iterable[Any]) -> dict[Any, DeliveryRef]:
    """Deliveries of ``tenant`` by ``id`` or ``idempotency_key``, batched."""
    if column not in ("id", "idempotency_key"):
        raise ValueError(column)
    wanted = sorted(set(values), key=str)
    found: dict[Any, DeliveryRef] = {}
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start:start + _CHUNK]
        rows = tx.execute(f"SELECT {column}, id, program, customer_id, channel, candidate_id, sent_at "
                          f"FROM deliveries WHERE tenant_id = ? AND {column} IN "
                          f"({tx.placeholders(len(chunk))})", (tenant, *chunk)).fetchall()
        for row in rows:
            found[row[0]] = _ref(tenant, row[1:])
    return found


def latest_delivery(tx: Tx, tenant: str, customer: str, channels: Sequence[str], since: datetime
                    ) -> DeliveryRef | None:
    """The customer's latest delivery sent on one of ``channels`` since ``since``."""
    row = tx.execute(f"{_DELIVERY} WHERE tenant_id = ? AND customer_id = ? AND sent_at >= ? "
                     f"AND channel IN ({tx.placeholders(len(channels))}) ORDER BY sent_at DESC, id DESC "
                     "LIMIT 1", (tenant, customer, tx.ts(since), *channels)).fetchone()
    return _ref(tenant, row) if row else None


def mark_inbox_read(store: Any, tenant: str, customer: str, ids: list[int],
                    now: datetime | None = None) -> int:
    """Mark in-app messages read (``Store.inbox_mark_read``) and record a ``read``
    engagement for each (source ``inapp``). Returns how many were marked.

    The engagements are recorded first: a crash in between leaves them recorded and
    the messages unread, and the client's retry marks them without recording twice."""
    now = now or utcnow()
    if ids:
        with store.tx() as tx:
            rows = tx.execute(f"SELECT idempotency_key FROM inbox WHERE tenant_id = ? AND customer_id = ? "
                              f"AND read_at IS NULL AND id IN ({tx.placeholders(len(ids))})",
                              (tenant, customer, *ids)).fetchall()
            refs = deliveries_by(tx, tenant, "idempotency_key", [r[0] for r in rows])
            record_in(tx, [r.engagement("read", now, "inapp") for r in refs.values()], now)
    return int(store.inbox_mark_read(tenant, customer, ids))


def record_unsubscribe(store: Any, claims: Any, now: datetime) -> int:
    """An unsubscribe link was used (``claims``: ``UnsubscribeClaims``): ``unsubscribed``
    on the delivery of the message that held it, or on the customer when the link
    names no candidate."""
    with store.tx() as tx:
        ref = (delivery_for_candidate(tx, claims.tenant_id, claims.candidate_id, claims.channel)
               if claims.candidate_id is not None else None)
        if ref is not None:
            item = ref.engagement("unsubscribed", now, "unsubscribe")
        else:
            key = (f"unsubscribed:{claims.channel}:{claims.topic}:{claims.customer_id}:"
                   f"{int(claims.issued_at.timestamp())}")
            item = Engagement(claims.tenant_id, claims.customer_id, "unsubscribed", now, "unsubscribe", key,
                              channel=claims.channel)
        return record_in(tx, [item], now)


def record_inbound_sms(store: Any, tenant: str, customers: Iterable[str], stop: bool,
                       now: datetime | None = None, channels: Sequence[str] = ("sms",),
                       window: timedelta = timedelta(days=7)) -> int:
    """A reply to an SMS: ``replied`` (and ``unsubscribed`` for a STOP) on each
    customer's latest SMS delivery sent within ``window`` (last touch)."""
    now = now or utcnow()
    with store.tx() as tx:
        items: list[Engagement] = []
        for customer in customers:
            ref = latest_delivery(tx, tenant, customer, channels, now - window)
            if ref is None:
                continue
            items.append(ref.engagement("replied", now, "event"))
            if stop:
                items.append(ref.engagement("unsubscribed", now, "event"))
        return record_in(tx, items, now)


__all__ = ["COLUMNS", "RECEIPT_TYPES", "SOURCES", "TYPES", "DeliveryRef", "Engagement", "deliveries_by",
           "delivery_for_candidate", "insert_returning", "latest_delivery", "mark_inbox_read", "record",
           "record_in", "record_inbound_sms", "record_unsubscribe"]
