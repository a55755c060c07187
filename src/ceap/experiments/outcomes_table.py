"""One row per customer of a program: arm, variant, score decile, channel, outcome.

The unit of analysis is the customer (the assignment hash is per customer, so
customers are independent; one customer's candidates are not). A customer counts
once, in the arm, variant, score and channel of their first candidate in the
period; they converted if a conversion (``conversions``, written by the outcomes
attribution) is attributed to any of their candidates of the program in the
period; their value is the sum of those conversions' values; they unsubscribed or
complained if an engagement of that type names one of those candidates (or the
program, for the customer); they opened or clicked if such an engagement names one of
their candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb
import pyarrow as pa

from ceap.experiments.reading import fetch_table, first_channel, table_exists
from ceap.store.base import Store
from ceap.store.schema import TS

_CANDIDATES = pa.schema([("id", pa.int64()), ("customer_id", pa.string()), ("arm", pa.string()),
                         ("variant", pa.string()), ("score", pa.float64()),
                         ("channel", pa.string()), ("created_at", TS), ("status", pa.string())])
_CONVERSIONS = pa.schema([("candidate_id", pa.int64()), ("value", pa.float64())])
_ENGAGEMENTS = pa.schema([("candidate_id", pa.int64()), ("customer_id", pa.string()),
                          ("type", pa.string())])
GUARDRAIL_TYPES = ("unsubscribed", "complained")
#: the engagements read per customer: the guardrails, then opens and clicks
ENGAGEMENT_TYPES = (*GUARDRAIL_TYPES, "opened", "clicked")


@dataclass
class ProgramOutcomes:
    """The per-customer table (``customers``) and what the store had to offer."""

    customers: pa.Table
    candidates: int
    #: whether the store has the outcome tables (the outcomes part writes them)
    has_conversions: bool
    has_engagements: bool
    #: treated candidates of a shadow program: nothing was sent to them
    shadow: int


def read_outcomes(store: Store, tenant: str, program: str,
                  since: datetime | None = None) -> ProgramOutcomes:
    """Read the program's candidates (created at or after ``since``) with their conversions
    and engagements (guardrails, opens, clicks), and join them per customer in DuckDB."""
    with store.tx() as tx:
        where, params = "tenant_id = ? AND program = ?", [tenant, program]
        if since is not None:
            where += " AND created_at >= ?"
            params.append(tx.ts(since))
        candidates = fetch_table(
            tx, f"SELECT id, customer_id, arm, variant, score, {first_channel(tx)}, created_at, "
                f"status FROM candidates WHERE {where}", params, _CANDIDATES)
        has_conversions = table_exists(tx, "conversions")
        has_engagements = table_exists(tx, "engagements")
        conversions = (fetch_table(tx, "SELECT candidate_id, value FROM conversions "
                                       "WHERE tenant_id = ? AND program = ?", [tenant, program],
                                   _CONVERSIONS)
                       if has_conversions else _CONVERSIONS.empty_table())
        engagements = (fetch_table(
            tx, "SELECT candidate_id, customer_id, type FROM engagements WHERE tenant_id = ? "
                f"AND type IN ({tx.placeholders(len(ENGAGEMENT_TYPES))}) AND (program = ? OR "
                "candidate_id IN (SELECT id FROM candidates WHERE tenant_id = ? AND program = ?))",
            [tenant, *ENGAGEMENT_TYPES, program, tenant, program], _ENGAGEMENTS)
            if has_engagements else _ENGAGEMENTS.empty_table())
    customers = per_customer(candidates, conversions, engagements)
    shadow = sum(1 for s in candidates.column("status").to_pylist() if s in ("shadow", "shadowed"))
    return ProgramOutcomes(customers, candidates.num_rows, has_conversions, has_engagements, shadow)


def per_customer(candidates: pa.Table, conversions: pa.Table, engagements: pa.Table) -> pa.Table:
    """The join, in DuckDB: one row per customer (see the module's docstring)."""
    con = duckdb.connect()
    try:
        con.register("cands", candidates)
        con.register("convs", conversions)
        con.register("engs", engagements)
        return con.sql("""
            WITH firsts AS (
                SELECT customer_id, arm, variant, score, channel FROM cands
                QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY created_at, id) = 1),
            conv AS (
                SELECT c.customer_id, count(*) AS conversions, sum(coalesce(v.value, 0)) AS value
                FROM convs v JOIN cands c ON v.candidate_id = c.id GROUP BY c.customer_id),
            eng AS (
                SELECT e.customer_id, bool_or(e.type = 'unsubscribed') AS unsubscribed,
                       bool_or(e.type = 'complained') AS complained,
                       bool_or(e.type = 'opened' AND e.candidate_id IS NOT NULL) AS opened,
                       bool_or(e.type = 'clicked' AND e.candidate_id IS NOT NULL) AS clicked
                FROM engs e
                WHERE e.candidate_id IS NULL OR e.candidate_id IN (SELECT id FROM cands)
                GROUP BY e.customer_id)
            SELECT f.customer_id, f.arm, f.variant, f.score, f.channel,
                   ntile(10) OVER (ORDER BY f.score NULLS FIRST, f.customer_id) AS score_decile,
                   coalesce(conv.conversions, 0) > 0 AS converted,
                   coalesce(conv.conversions, 0) AS conversions,
                   coalesce(conv.value, 0.0) AS value,
                   coalesce(eng.unsubscribed, false) AS unsubscribed,
                   coalesce(eng.complained, false) AS complained,
                   coalesce(eng.opened, false) AS opened,
                   coalesce(eng.clicked, false) AS clicked
            FROM firsts f LEFT JOIN conv USING (customer_id) LEFT JOIN eng USING (customer_id)
            ORDER BY f.customer_id
        """).to_arrow_table()
    finally:
        con.close()
