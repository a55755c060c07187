"""Engagements reported by client apps or servers: an event (or an API call)
saying a message was opened, clicked, read... and naming its delivery by
``delivery_id`` or ``idempotency_key``.

Reports go through the same dedup keys as the pixel and the click links, so
an open counted by the pixel and reported by the app is one open.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ceap.outcomes.engagement import TYPES, Engagement, deliveries_by, record_in
from ceap.outcomes.tokens import link_hash
from ceap.store.tx import Tx

#: types a client may report (conversions come from goal events, not from reports)
REPORTABLE = frozenset(TYPES - {"converted"})
_REPORTABLE_ARRAY = pa.array(sorted(REPORTABLE), pa.string())


@dataclass(frozen=True)
class Report:
    tenant_id: str
    type: str
    ts: datetime
    delivery_id: int | None = None
    idempotency_key: str | None = None
    url: str | None = None


def engagements_for(tx: Tx, reports: Iterable[Report], source: str) -> tuple[list[Engagement], list[int]]:
    """The engagements of ``reports``, and the indexes of reports naming no known delivery."""
    reports = list(reports)
    by_tenant: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(reports):
        by_tenant[r.tenant_id].append(i)
    out: list[Engagement] = []
    unknown: list[int] = []
    for tenant, indexes in by_tenant.items():
        ids = deliveries_by(tx, tenant, "id", [reports[i].delivery_id for i in indexes
                                               if reports[i].delivery_id is not None])
        keys = deliveries_by(tx, tenant, "idempotency_key", [reports[i].idempotency_key for i in indexes
                                                             if reports[i].idempotency_key is not None])
        for i in indexes:
            r = reports[i]
            ref = ids.get(r.delivery_id) if r.delivery_id is not None else keys.get(r.idempotency_key)
            if ref is None or r.type not in REPORTABLE:
                unknown.append(i)
                continue
            suffix = link_hash(r.url) if r.type == "clicked" and r.url else None
            out.append(ref.engagement(r.type, r.ts, source, suffix=suffix, url=r.url))
    return out, sorted(unknown)


def record_reports(tx: Tx, reports: Iterable[Report], source: str, now: datetime) -> tuple[int, list[int]]:
    """Record reports in ``tx``: (new engagements, indexes of reports naming no delivery)."""
    items, unknown = engagements_for(tx, reports, source)
    return record_in(tx, items, now), unknown


def reports_from_events(events: pa.Table) -> list[Report]:
    """Reports among a micro-batch of events (``EVENT_SCHEMA``): events whose type is an
    engagement type and whose attributes name a delivery (``delivery_id`` or
    ``idempotency_key``; ``url`` for clicks)."""
    if not events.num_rows:
        return []
    mask = pc.is_in(events.column("type"), value_set=_REPORTABLE_ARRAY)
    if not pc.any(mask).as_py():  # none (nearly every micro-batch)
        return []
    picked = events.filter(mask)
    out: list[Report] = []
    for row in picked.select(["tenant_id", "type", "ts", "attributes"]).to_pylist():
        try:
            attrs: Any = json.loads(row["attributes"] or "{}")
        except ValueError:
            continue
        if not isinstance(attrs, dict):
            continue
        delivery, key, url = attrs.get("delivery_id"), attrs.get("idempotency_key"), attrs.get("url")
        try:
            delivery = int(delivery) if delivery is not None and not isinstance(delivery, bool) else None
        except (TypeError, ValueError):
            delivery = None
        key = key if isinstance(key, str) and key else None
        if delivery is None and key is None:
            continue
        ts = row["ts"] if row["ts"].tzinfo else row["ts"].replace(tzinfo=UTC)
        out.append(Report(row["tenant_id"], row["type"], ts, delivery, key,
                          url if isinstance(url, str) and url else None))
    return out


__all__ = ["REPORTABLE", "Report", "engagements_for", "record_reports", "reports_from_events"]
