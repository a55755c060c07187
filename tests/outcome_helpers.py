"""Builders shared by the outcome tests: candidates, deliveries and goal events
written straight to a store."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ceap.model import RunRecord
from ceap.realtime.events import validate_events
from ceap.store import Store
from ceap.testing.doubles import make_candidates

SECRET = "a-signing-secret-for-tests-only"


def seed(store: Store, now: datetime, n: int = 1, *, program: str = "offer", run: str = "r1",
         **overrides: Any) -> list[int]:
    """Write ``n`` candidates of ``program``; returns their ids in row order."""
    overrides.setdefault("customer_id", lambda i: f"c{i}")
    overrides.setdefault("dedup_key", lambda i: f"{program}-{run}-{i}")
    table = make_candidates(n, now=now, program=program, **overrides)
    store.write_run(RunRecord(run, table["tenant_id"][0].as_py(), program, "succeeded", now), table)
    keys = table["dedup_key"].to_pylist()
    with store.tx() as tx:
        rows = dict(tx.execute(f"SELECT dedup_key, id FROM candidates WHERE dedup_key IN "
                               f"({tx.placeholders(len(keys))})", keys).fetchall())
    return [int(rows[k]) for k in keys]


def add_delivery(store: Store, candidate_id: int, *, channel: str = "email", sent_at: datetime | None,
                 status: str = "sent", key: str | None = None, created_at: datetime | None = None,
                 policy: str | None = None) -> int:
    """A delivery row for a candidate (as the dispatcher would have written it)."""
    with store.tx() as tx:
        tenant, program, customer, category = tx.execute(
            "SELECT tenant_id, program, customer_id, category FROM candidates WHERE id = ?",
            (candidate_id,)).fetchone()
        stamp = tx.ts(created_at or sent_at)
        tx.execute("INSERT INTO deliveries (tenant_id, candidate_id, program, customer_id, channel, step, "
                   "idempotency_key, status, next_attempt_at, category, created_at, updated_at, sent_at, "
                   "policy) VALUES (?,?,?,?,?,0,?,?,?,?,?,?,?,?)",
                   (tenant, candidate_id, program, customer, channel,
                    key or f"{tenant}:{candidate_id}:{channel}", status, stamp, category, stamp, stamp,
                    tx.ts(sent_at), policy))
        return int(tx.execute("SELECT id FROM deliveries WHERE tenant_id = ? AND idempotency_key = ?",
                              (tenant, key or f"{tenant}:{candidate_id}:{channel}")).fetchone()[0])


def events(*items: dict[str, Any]) -> Any:
    """Validated events (``EVENT_SCHEMA``) from dicts; fails on a rejected one."""
    table, rejected = validate_events(list(items))
    assert not rejected, rejected
    return table


def rows(store: Store, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with store.tx() as tx:
        return [tuple(r) for r in tx.execute(sql, params).fetchall()]
