"""Outcome rows for the experiment tests, written straight into the ``conversions``
and ``engagements`` tables (as attribution and the tracking endpoints write them),
so a report's inputs are exactly known."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ceap.store.base import Store


def add_conversions(store: Store, rows: Sequence[tuple[str, str, int, str, float | None]],
                    at: datetime) -> None:
    """``(tenant, program, candidate_id, customer_id, value)`` rows, one goal event each."""
    with store.tx() as tx:
        tx.executemany(
            "INSERT INTO conversions (tenant_id, program, candidate_id, customer_id, event_id, "
            "event_type, value, event_ts, touch_ts, attributed_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            [(t, p, c, cust, f"e-{p}-{c}-{n}", "purchase", v, tx.ts(at), tx.ts(at), tx.ts(at))
             for n, (t, p, c, cust, v) in enumerate(rows)])


def add_engagements(store: Store, rows: Sequence[tuple[str, int | None, str | None, str, str]],
                    at: datetime) -> None:
    """``(tenant, candidate_id, program, customer_id, type)`` rows."""
    with store.tx() as tx:
        tx.executemany(
            "INSERT INTO engagements (tenant_id, candidate_id, program, customer_id, type, ts, "
            "source, dedup_key, recorded_at) VALUES (?,?,?,?,?,?,?,?,?)",
            [(t, c, p, cust, kind, tx.ts(at), "api", f"{kind}:{c}:{cust}:{n}", tx.ts(at))
             for n, (t, c, p, cust, kind) in enumerate(rows)])


def candidate_ids(store: Store, program: str, tenant: str = "default") -> dict[str, Any]:
    """``dedup_key -> Candidate`` of the program."""
    from ceap.model import CandidateQuery

    found = store.candidates(CandidateQuery(tenant_id=tenant, program=program, limit=1_000_000,
                                            include_expired=True))
    return {c.dedup_key: c for c in found}
