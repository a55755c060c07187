"""Per-customer state features over event time, computed by DuckDB window
functions over the customer's recent history plus the micro-batch.

Every event keeps its own window (``RANGE BETWEEN <window> PRECEDING AND
CURRENT ROW`` over event time), so late events are placed where they belong
and the result does not depend on arrival order.
"""

from __future__ import annotations

from datetime import timedelta

import duckdb
import pyarrow as pa

from ceap.realtime.spec import StateFeature
from ceap.sqlexpr import BATCH, quote

FRESH = "__ceap_fresh"
REDO = "__ceap_redo_from"
PARTITION = "PARTITION BY tenant_id, customer_id ORDER BY ts"


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _range(span: timedelta) -> str:
    return (f"OVER ({PARTITION} RANGE BETWEEN INTERVAL {int(span.total_seconds() * 1e6)} "
            "MICROSECONDS PRECEDING AND CURRENT ROW)")


def _split(ref: str) -> tuple[str, str]:
    kind, _, attribute = ref.partition(".")
    return kind, attribute


def feature_sql(name: str, f: StateFeature) -> list[str]:
    """SELECT items computing feature ``name`` for every row."""
    col = quote(name)
    where = f" AND ({f.where})" if f.where else ""
    kind = f.kind
    if kind == "count":
        return [f"count(*) FILTER (WHERE type = {_lit(str(f.count))}{where}) {_range(f.span())} AS {col}"]
    if kind in ("sum", "distinct"):
        etype, attr = _split(str(getattr(f, kind)))
        value = f"attributes->>{_lit(attr)}"
        agg = (f"sum(TRY_CAST({value} AS DOUBLE))" if kind == "sum"
               else f"count(DISTINCT {value})")
        return [f"{agg} FILTER (WHERE type = {_lit(etype)}{where}) {_range(f.span())} AS {col}"]
    if kind == "last":
        etype, attr = _split(str(f.last))
        return [f"arg_max(attributes->>{_lit(attr)}, ts) FILTER (WHERE type = {_lit(etype)}{where}) "
                f"OVER ({PARTITION} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS {col}"]
    if kind == "time_since":
        return [f"epoch(ts) - epoch(max(ts) FILTER (WHERE type = {_lit(str(f.time_since))}{where}) "
                f"OVER ({PARTITION} ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)) AS {col}"]
    if kind == "sequence" and f.sequence is not None:
        first, then = _lit(f.sequence.first), _lit(f.sequence.then)
        frame = _range(f.span())
        items = [f"(type = {then} AND max(ts) FILTER (WHERE type = {first}{where}) {frame} "
                 f"IS NOT NULL) AS {col}"]
        items += [f"arg_max(attributes->>{_lit(a)}, ts) FILTER (WHERE type = {first}{where}) {frame} "
                  f"AS {quote(f'{name}_{a}')}" for a in f.capture]
        return items
    if kind == "absence":  # true on the rows the timer makes (see ceap.realtime.timers)
        return [f"COALESCE(TRY_CAST(attributes->>{_lit('__absence_' + name)} AS BOOLEAN), false) "
                f"AS {col}"]
    raise ValueError(f"unknown state feature kind {kind!r}")


def attribute_sql(columns: dict[str, str]) -> list[str]:
    """Declared attributes (``source.columns``) as columns of text; conform casts them."""
    return [f"attributes->>{_lit(name)} AS {quote(name)}" for name in columns]


def rows_sql(state: dict[str, StateFeature], on: list[str], columns: dict[str, str]) -> str:
    """The query making a program's rows from the table ``batch`` (see ``rows_for``).

    The rows are the fresh events of the trigger types, timer rows, and, when the
    program has features over history, the logged trigger events of a customer at or
    after the customer's earliest fresh event: an event that arrives after a later one
    (within the lateness) changes that later one's features, so it is evaluated again
    (a candidate it already made is not made twice: the store keeps one per dedup key)."""
    select = ["event_id", "tenant_id", "customer_id", "type AS event_type", "ts AS event_ts",
              "attributes", FRESH]
    select += attribute_sql({c: t for c, t in columns.items() if c not in ("customer_id",)})
    for name, feature in state.items():
        select += feature_sql(name, feature)
    keep = FRESH
    if any(f.kind != "absence" for f in state.values()):
        select.append(f"min(ts) FILTER (WHERE {FRESH} AND type <> '__timer') OVER "
                      f"(PARTITION BY tenant_id, customer_id) AS {REDO}")
        keep = f"({FRESH} OR (customer_id IS NOT NULL AND event_ts >= {REDO}))"
    types = ", ".join(_lit(t) for t in on) or "NULL"
    return (f"SELECT * EXCLUDE ({FRESH}{', ' + REDO if keep != FRESH else ''}) FROM "
            f"(SELECT {', '.join(select)} FROM {BATCH}) "
            f"WHERE {keep} AND (event_type IN ({types}) OR attributes->>'__timer' IS NOT NULL) "
            "ORDER BY event_ts, event_id")


def rows_for(con: duckdb.DuckDBPyConnection, combined: pa.Table, state: dict[str, StateFeature],
             on: list[str], columns: dict[str, str]) -> pa.Table:
    """The program's rows: fresh events of the trigger types, with attributes and
    state features. ``combined`` holds history and the micro-batch (``FRESH`` marks it)."""
    sql = rows_sql(state, on, columns)
    con.register(BATCH, combined)
    try:
        return con.sql(sql).to_arrow_table()
    finally:
        con.unregister(BATCH)
