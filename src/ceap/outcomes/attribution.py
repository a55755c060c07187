"""Attribution: which goal events count as conversions of which candidates.

The rule (last touch within the window), per program with a ``goal``:

- a candidate's **touch** is when it reached the customer: for a treated
  candidate the first successful send of any of its deliveries (``sent_at``),
  or its ``not_before`` if it was never sent (intention to treat: suppressed,
  expired or failed candidates stay in the comparison); for a control
  candidate (held out, or in the global control group) its ``not_before``,
  when it would have been sent;
- a goal event of one of the program's ``goal.event`` types converts the
  customer's candidate of that program whose touch is the latest at or
  before the event, and no more than ``goal.within`` before it
  (``touch <= event.ts <= touch + within``; ties: the higher candidate id);
- one event counts at most once per program; it may count for several programs.

It runs columnar: the candidates, first sends, goal events and already
attributed events are read as Arrow, joined in DuckDB, and the new
conversions written back in bulk. ``conversions`` is keyed by
``(tenant_id, program, event_id)``: running it again, or replaying events,
attributes nothing twice, and a conversion once written is final.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ceap.model import utcnow
from ceap.outcomes.arrow_io import UTC_TS, bulk_insert, literal, reader

CONVERSION_COLUMNS = ("tenant_id", "program", "candidate_id", "customer_id", "event_id", "event_type",
                      "value", "event_ts", "touch_ts", "attributed_at")
_KEY = ("tenant_id", "program", "event_id")

#: the rule, over Arrow tables: cands, firsts, goals, rules, done (see ``attribute_tables``)
RULE_SQL = """
WITH touches AS (
  SELECT c.id AS candidate_id, c.tenant_id, c.program, c.customer_id,
         CASE WHEN c.holdout THEN c.not_before ELSE coalesce(f.first_sent, c.not_before) END AS touch_ts
  FROM cands c LEFT JOIN firsts f ON f.candidate_id = c.id
),
matched AS (
  SELECT g.tenant_id, t.program, t.candidate_id, g.customer_id, g.event_id, g.type AS event_type,
         CASE WHEN r.valued THEN g.value END AS value, g.ts AS event_ts, t.touch_ts,
         row_number() OVER (PARTITION BY g.tenant_id, t.program, g.event_id
                            ORDER BY t.touch_ts DESC, t.candidate_id DESC) AS pick
  FROM goals g
  JOIN rules r ON r.type = g.type
  JOIN touches t ON t.tenant_id = g.tenant_id AND t.customer_id = g.customer_id AND t.program = r.program
  WHERE t.touch_ts <= g.ts AND g.ts <= t.touch_ts + to_microseconds(r.within_us)
)
SELECT tenant_id, program, candidate_id, customer_id, event_id, event_type, value, event_ts, touch_ts
FROM matched m
WHERE pick = 1 AND NOT EXISTS (SELECT 1 FROM done d WHERE d.tenant_id = m.tenant_id
                               AND d.program = m.program AND d.event_id = m.event_id)
"""


@dataclass
class AttributionResult:
    """What one pass did: conversions found per program, how many were new, what was read."""

    programs: dict[str, int] = field(default_factory=dict)
    inserted: int = 0
    candidates: int = 0
    goal_events: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def rules_table(specs: Iterable[Any]) -> pa.Table:
    """One row per (program, goal event type): the window and whether a value is read."""
    programs, types, within, valued = [], [], [], []
    for spec in specs:
        goal = getattr(spec, "goal", None)
        if goal is None:
            continue
        for kind in goal.event:
            programs.append(spec.name)
            types.append(kind)
            within.append(int(goal.within.total_seconds() * 1_000_000))
            valued.append(goal.value is not None)
    return pa.table({"program": pa.array(programs, pa.string()), "type": pa.array(types, pa.string()),
                     "within_us": pa.array(within, pa.int64()), "valued": pa.array(valued, pa.bool_())})


def attribute_tables(cands: pa.Table, firsts: pa.Table, goals: pa.Table, rules: pa.Table,
                     done: pa.Table, con: duckdb.DuckDBPyConnection | None = None) -> pa.Table:
    """The rule over Arrow tables (times as UTC timestamps):
    ``cands`` (id, tenant_id, program, customer_id, holdout, not_before),
    ``firsts`` (candidate_id, first_sent), ``goals`` (tenant_id, event_id, customer_id,
    type, ts, value), ``rules`` (``rules_table``), ``done`` (tenant_id, program, event_id)
    -> new conversions (``CONVERSION_COLUMNS`` but ``attributed_at``)."""
    con = con or duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for name, table in (("cands", cands), ("firsts", firsts), ("goals", goals), ("rules", rules),
                        ("done", done)):
        con.register(name, table)
    try:
        return con.sql(RULE_SQL).to_arrow_table()
    finally:
        for name in ("cands", "firsts", "goals", "rules", "done"):
            con.unregister(name)


def _in(column: str, values: Iterable[str]) -> str:
    return f"{column} IN ({', '.join(literal(v) for v in sorted(set(values)))})"


CANDS = pa.schema([("id", pa.int64()), ("tenant_id", pa.string()), ("program", pa.string()),
                   ("customer_id", pa.string()), ("holdout", pa.bool_()), ("not_before", UTC_TS)])
FIRSTS = pa.schema([("candidate_id", pa.int64()), ("first_sent", UTC_TS)])
GOALS = pa.schema([("tenant_id", pa.string()), ("event_id", pa.string()), ("customer_id", pa.string()),
                   ("type", pa.string()), ("ts", UTC_TS), ("value", pa.float64())])
DONE = pa.schema([("tenant_id", pa.string()), ("program", pa.string()), ("event_id", pa.string())])


def read_inputs(store: Any, rules: pa.Table) -> dict[str, pa.Table]:
    """What the rule reads from the store (one snapshot), for the programs and event
    types in ``rules``."""
    programs = _in("program", rules["program"].to_pylist())
    types = _in("type", rules["type"].to_pylist())
    with reader(store) as read:
        return {
            "cands": read("SELECT id, tenant_id, program, customer_id, holdout, not_before FROM candidates "
                          f"WHERE {programs}", CANDS),
            "firsts": read("SELECT candidate_id, min(sent_at) FROM deliveries "
                           f"WHERE sent_at IS NOT NULL AND {programs} GROUP BY candidate_id", FIRSTS),
            "goals": read(f"SELECT tenant_id, event_id, customer_id, type, ts, value FROM goal_events "
                          f"WHERE {types}", GOALS),
            "done": read(f"SELECT tenant_id, program, event_id FROM conversions WHERE {programs}", DONE),
        }


def attribute(store: Any, specs: Iterable[Any], now: datetime | None = None) -> AttributionResult:
    """Attribute every goal event not yet attributed, for every program in ``specs``
    with a goal (see the module doc). Safe to run at any time and as often as wanted."""
    now = now or utcnow()
    result = AttributionResult()
    rules = rules_table(specs)
    if not rules.num_rows:
        return result
    start = time.perf_counter()
    inputs = read_inputs(store, rules)
    result.candidates, result.goal_events = inputs["cands"].num_rows, inputs["goals"].num_rows
    result.seconds["read"] = time.perf_counter() - start
    start = time.perf_counter()
    found = attribute_tables(inputs["cands"], inputs["firsts"], inputs["goals"], rules, inputs["done"])
    result.seconds["join"] = time.perf_counter() - start
    for program, n in zip(*pc.value_counts(found["program"]).flatten(), strict=True):
        result.programs[program.as_py()] = n.as_py()
    start = time.perf_counter()
    stamp = pa.array([now] * found.num_rows, UTC_TS)
    rows = pa.table([*(found[c] for c in CONVERSION_COLUMNS[:-1]), stamp], names=list(CONVERSION_COLUMNS))
    result.inserted = bulk_insert(store, "conversions", rows, _KEY)
    result.seconds["write"] = time.perf_counter() - start
    return result


__all__ = ["CONVERSION_COLUMNS", "RULE_SQL", "AttributionResult", "attribute", "attribute_tables",
           "read_inputs", "rules_table"]
