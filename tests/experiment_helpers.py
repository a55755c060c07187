"""Outcome rows for the experiment tests, written as the outcomes part writes them.

The ``conversions`` and ``engagements`` tables belong to the outcomes part
(docs: the shared contract of issue 9); until its migration is in this branch the
tests create them here with the contract's columns (``IF NOT EXISTS``: a store that
already has them keeps its own)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ceap.store.base import Store
from ceap.store.sql_common import TYPES


def ensure_outcome_tables(store: Store) -> None:
    with store.tx() as tx:
        t = TYPES[tx.dialect]
        text, ts, i, real = t["text"], t["ts"], t["int"], t["real"]
        tx.execute(f"""CREATE TABLE IF NOT EXISTS conversions (
  tenant_id {text} NOT NULL, program {text} NOT NULL, candidate_id {i} NOT NULL,
  customer_id {text} NOT NULL, event_id {text} NOT NULL, event_type {text} NOT NULL,
  value {real}, event_ts {ts} NOT NULL, touch_ts {ts} NOT NULL, attributed_at {ts} NOT NULL,
  PRIMARY KEY (tenant_id, program, event_id))""")
        tx.execute(f"""CREATE TABLE IF NOT EXISTS engagements (
  id {t['id']}, tenant_id {text} NOT NULL, delivery_id {i}, candidate_id {i}, program {text},
  customer_id {text} NOT NULL, channel {text}, type {text} NOT NULL, ts {ts} NOT NULL,
  source {text} NOT NULL, url {text}, dedup_key {text} NOT NULL,
  UNIQUE (tenant_id, dedup_key))""")


def add_conversions(store: Store, rows: Sequence[tuple[str, str, int, str, float | None]],
                    at: datetime) -> None:
    """``(tenant, program, candidate_id, customer_id, value)`` rows, one goal event each."""
    ensure_outcome_tables(store)
    with store.tx() as tx:
        tx.executemany(
            "INSERT INTO conversions (tenant_id, program, candidate_id, customer_id, event_id, "
            "event_type, value, event_ts, touch_ts, attributed_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            [(t, p, c, cust, f"e-{p}-{c}-{n}", "purchase", v, tx.ts(at), tx.ts(at), tx.ts(at))
             for n, (t, p, c, cust, v) in enumerate(rows)])


def add_engagements(store: Store, rows: Sequence[tuple[str, int | None, str | None, str, str]],
                    at: datetime) -> None:
    """``(tenant, candidate_id, program, customer_id, type)`` rows."""
    ensure_outcome_tables(store)
    with store.tx() as tx:
        tx.executemany(
            "INSERT INTO engagements (tenant_id, candidate_id, program, customer_id, type, ts, "
            "source, dedup_key) VALUES (?,?,?,?,?,?,?,?)",
            [(t, c, p, cust, kind, tx.ts(at), "api", f"{kind}:{c}:{cust}:{n}")
             for n, (t, c, p, cust, kind) in enumerate(rows)])


def candidate_ids(store: Store, program: str, tenant: str = "default") -> dict[str, Any]:
    """``dedup_key -> Candidate`` of the program."""
    from ceap.model import CandidateQuery

    found = store.candidates(CandidateQuery(tenant_id=tenant, program=program, limit=1_000_000,
                                            include_expired=True))
    return {c.dedup_key: c for c in found}
