"""Attribution benchmark: CEAP's attribution against a plain DuckDB join of the
same data under the same rule (last touch within 7 days), side by side.

Data: ``--candidates`` candidates of one program (``--customers`` customers, a
tenth held out, about 70% of the treated ones sent, at a random time after
``not_before``) and ``--events`` purchase events over 30 days. Two comparisons,
each alternating the two sides for ``--repeat`` rounds:

1. **join**: ``ceap.outcomes.attribution.attribute_tables`` (the rule over
   Arrow tables, as ``attribute`` runs it: rules table, anti-join with what is
   already attributed) against one hand-written DuckDB query for this program
   over the same Arrow tables;
2. **end to end** on a SQLite store (and PostgreSQL with ``--pg URL``):
   ``attribute(store, ...)`` (read the inputs, join, write the conversions)
   against a plain script doing the same: ``fetchall`` into Arrow, the plain
   query, ``executemany`` of the result into a table with the same key.

Both sides must find the same conversions (checked every round). Ratios are
CEAP / plain time (goal: at most 1.5), best over best and the median of the
per-round ratios. The load average is printed before and after.

Usage (from the repository root)::

    .venv/bin/python bench/attribution.py                     # 1M x 1M, SQLite
    .venv/bin/python bench/attribution.py --pg postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/attribution.py --candidates 100000 --events 100000   # quicker
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from ceap.model import RunRecord
from ceap.outcomes.arrow_io import UTC_TS, bulk_insert
from ceap.outcomes.attribution import (
    CANDS,
    DONE,
    FIRSTS,
    GOALS,
    attribute,
    attribute_tables,
    rules_table,
)
from ceap.spec.program import Goal
from ceap.store import open_store
from ceap.store.outcome_schema import outcome_ddl
from ceap.store.schema import CANDIDATE_SCHEMA

T0 = datetime(2026, 3, 1, tzinfo=UTC)
PROGRAM = SimpleNamespace(name="offer", goal=Goal(event="purchase", within="7d", value="amount"))

PLAIN_SQL = """
SELECT g.tenant_id, c.program, c.id AS candidate_id, g.customer_id, g.event_id, g.type AS event_type,
       g.value, g.ts AS event_ts, t.touch_ts
FROM goals g
JOIN cands c ON c.tenant_id = g.tenant_id AND c.customer_id = g.customer_id
LEFT JOIN firsts f ON f.candidate_id = c.id
CROSS JOIN LATERAL (SELECT CASE WHEN c.holdout THEN c.not_before
                                ELSE coalesce(f.first_sent, c.not_before) END AS touch_ts) t
WHERE c.program = 'offer' AND g.type = 'purchase'
  AND t.touch_ts <= g.ts AND g.ts <= t.touch_ts + INTERVAL 7 DAY
QUALIFY row_number() OVER (PARTITION BY g.tenant_id, c.program, g.event_id
                           ORDER BY t.touch_ts DESC, c.id DESC) = 1
"""


def make_data(candidates: int, customers: int, events: int, seed: int) -> dict[str, pa.Table]:
    rng = np.random.default_rng(seed)
    us = 1_000_000
    start = int(T0.timestamp() * us)
    ids = np.arange(1, candidates + 1, dtype=np.int64)
    customer = rng.integers(0, customers, candidates)
    not_before = start + rng.integers(0, 30 * 86400, candidates) * us
    holdout = rng.random(candidates) < 0.1
    sent = ~holdout & (rng.random(candidates) < 0.7)
    first_sent = not_before[sent] + rng.integers(0, 6 * 3600, int(sent.sum())) * us
    names = np.char.add("C", customer.astype(str))
    goal_customer = np.char.add("C", rng.integers(0, customers, events).astype(str))
    amount = np.round(rng.gamma(2.0, 30.0, events), 2)
    return {
        "cands": pa.table({"id": ids, "tenant_id": pa.array(["default"] * candidates),
                           "program": pa.array(["offer"] * candidates), "customer_id": names,
                           "holdout": holdout, "not_before": pa.array(not_before, UTC_TS)}, schema=CANDS),
        "firsts": pa.table({"candidate_id": ids[sent], "first_sent": pa.array(first_sent, UTC_TS)},
                           schema=FIRSTS),
        "goals": pa.table({"tenant_id": pa.array(["default"] * events),
                           "event_id": np.char.add("E", np.arange(events).astype(str)),
                           "customer_id": goal_customer, "type": pa.array(["purchase"] * events),
                           "ts": pa.array(start + rng.integers(0, 37 * 86400, events) * us, UTC_TS),
                           "value": pa.array(np.where(rng.random(events) < 0.05, np.nan, amount),
                                             from_pandas=True)}, schema=GOALS),
    }


def fingerprint(found: pa.Table) -> tuple[int, int]:
    ids = found.column("candidate_id").to_numpy()
    return len(ids), int(ids.sum())


def paired(name: str, ceap: Callable[[], Any], plain: Callable[[], Any], repeat: int,
           check: Callable[[Any, Any], None]) -> dict[str, Any]:
    ceap_times, plain_times = [], []
    for _ in range(repeat):
        for side, fn, times in (("ceap", ceap, ceap_times), ("plain", plain, plain_times)):
            gc.collect()
            begin = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - begin)
            if side == "ceap":
                mine = result
            else:
                check(mine, result)
    ratios = [c / p for c, p in zip(ceap_times, plain_times, strict=True)]
    out = {"bench": name, "ceap_s": [round(t, 3) for t in ceap_times],
           "plain_s": [round(t, 3) for t in plain_times],
           "ratio_best": round(min(ceap_times) / min(plain_times), 3),
           "ratio_median_paired": round(statistics.median(ratios), 3)}
    print(json.dumps(out), flush=True)
    return out


def seed_store(url: str, data: dict[str, pa.Table]) -> Any:
    store = open_store(url)
    cands = data["cands"]
    n = cands.num_rows
    columns = {
        "tenant_id": cands["tenant_id"], "program": cands["program"], "run_id": pa.array(["bench"] * n),
        "customer_id": cands["customer_id"], "subject_id": pa.nulls(n, pa.string()),
        "context": pa.array(["{}"] * n), "action_type": pa.array(["offer"] * n),
        "channels": pa.array(['["email"]'] * n), "template": pa.nulls(n, pa.string()),
        "category": pa.array(["marketing"] * n), "score": pa.array(np.full(n, 0.5)),
        "model": pa.array(["bench"] * n), "reasons": pa.nulls(n, pa.string()),
        "payload": pa.array(["{}"] * n), "status": pa.array(["sent"] * n),
        "priority": pa.array(np.zeros(n, dtype=np.int64)), "created_at": cands["not_before"],
        "not_before": cands["not_before"],
        "expires_at": pa.array([T0 + timedelta(days=60)] * n, UTC_TS),
        "dedup_key": pa.array(np.char.add("d", cands["id"].to_numpy().astype(str))),
        "holdout": cands["holdout"], "version": pa.array(np.ones(n, dtype=np.int64)),
    }
    started = time.perf_counter()
    store.write_run(RunRecord("bench", "default", "offer", "succeeded", T0),
                    pa.table(columns, schema=CANDIDATE_SCHEMA))
    firsts = data["firsts"]
    k = firsts.num_rows
    # candidate ids in a fresh store are 1..n in row order, as in the generated data
    deliveries = pa.table({
        "tenant_id": pa.array(["default"] * k), "candidate_id": firsts["candidate_id"],
        "program": pa.array(["offer"] * k),
        "customer_id": cands["customer_id"].take(pa.compute.subtract(firsts["candidate_id"], 1)),
        "channel": pa.array(["email"] * k), "step": pa.array(np.zeros(k, dtype=np.int64)),
        "idempotency_key": pa.array(np.char.add("k", firsts["candidate_id"].to_numpy().astype(str))),
        "status": pa.array(["sent"] * k), "next_attempt_at": firsts["first_sent"],
        "category": pa.array(["marketing"] * k), "created_at": firsts["first_sent"],
        "updated_at": firsts["first_sent"], "sent_at": firsts["first_sent"]})
    bulk_insert(store, "deliveries", deliveries, ("tenant_id", "idempotency_key"))
    goals = data["goals"]
    bulk_insert(store, "goal_events", goals.append_column(
        "recorded_at", pa.array([T0] * goals.num_rows, UTC_TS)), ("tenant_id", "event_id"))
    dialect = "sqlite" if url.startswith("sqlite") else "postgres"
    plain_ddl = next(s for s in outcome_ddl(dialect) if "TABLE IF NOT EXISTS conversions" in s)
    with store.tx() as tx:
        tx.execute(plain_ddl.replace("conversions (", "conversions_plain (", 1))
    print(f"seeded {url.split('?')[0]} in {time.perf_counter() - started:.1f} s", flush=True)
    return store


def plain_end_to_end(store: Any, dialect: str) -> pa.Table:
    """The same work written plainly: fetch, the plain query, executemany."""
    queries = {"cands": ("SELECT id, tenant_id, program, customer_id, holdout, not_before FROM candidates "
                         "WHERE program IN ('offer')", CANDS),
               "firsts": ("SELECT candidate_id, min(sent_at) FROM deliveries WHERE sent_at IS NOT NULL "
                          "AND program IN ('offer') GROUP BY candidate_id", FIRSTS),
               "goals": ("SELECT tenant_id, event_id, customer_id, type, ts, value FROM goal_events "
                         "WHERE type IN ('purchase')", GOALS)}
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    with store.tx() as tx:
        for name, (sql, schema) in queries.items():
            rows = tx.execute(sql).fetchall()
            columns = list(zip(*rows, strict=True)) if rows else [[] for _ in schema]
            arrays = []
            for values, field in zip(columns, schema, strict=True):
                if pa.types.is_timestamp(field.type) and dialect == "sqlite":
                    arrays.append(pa.compute.cast(pa.array(values, pa.string()), UTC_TS))
                elif pa.types.is_boolean(field.type) and dialect == "sqlite":
                    arrays.append(pa.array([bool(v) for v in values]))
                else:
                    arrays.append(pa.array(values, field.type))
            con.register(name, pa.table(arrays, schema=schema))
    found = con.sql(PLAIN_SQL).to_arrow_table()
    now = datetime.now(UTC)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if dialect == "sqlite" else now
    out = []
    for r in found.to_pylist():
        if dialect == "sqlite":
            r["event_ts"] = r["event_ts"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            r["touch_ts"] = r["touch_ts"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        out.append((*r.values(), stamp))
    with store.tx() as tx:
        tx.executemany("INSERT INTO conversions_plain (tenant_id, program, candidate_id, customer_id, "
                       "event_id, event_type, value, event_ts, touch_ts, attributed_at) "
                       "VALUES (?,?,?,?,?,?,?,?,?,?)", out)
    return found


def end_to_end(url: str, data: dict[str, pa.Table], repeat: int) -> dict[str, Any]:
    store = seed_store(url, data)
    dialect = "sqlite" if url.startswith("sqlite") else "postgres"
    try:
        def ceap() -> Any:
            with store.tx() as tx:
                tx.execute("DELETE FROM conversions")
            result = attribute(store, [PROGRAM])
            print(f"  ceap phases: {json.dumps({k: round(v, 2) for k, v in result.seconds.items()})}",
                  flush=True)
            return result

        def plain() -> Any:
            with store.tx() as tx:
                tx.execute("DELETE FROM conversions_plain")
            return plain_end_to_end(store, dialect)

        def check(mine: Any, theirs: pa.Table) -> None:
            with store.tx() as tx:
                a = tx.execute("SELECT count(*), sum(candidate_id) FROM conversions").fetchone()
                b = tx.execute("SELECT count(*), sum(candidate_id) FROM conversions_plain").fetchone()
            assert tuple(map(int, a)) == tuple(map(int, b)) == fingerprint(theirs), (a, b)

        return paired(f"end to end, {dialect}", ceap, plain, repeat, check)
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=500_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--pg", help="also run end to end on this PostgreSQL database (a fresh schema)")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}; python {sys.version.split()[0]}, "
          f"duckdb {duckdb.__version__}, pyarrow {pa.__version__}", flush=True)
    data = make_data(args.candidates, args.customers, args.events, args.seed)
    rules = rules_table([PROGRAM])
    done = DONE.empty_table()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for name in ("cands", "firsts", "goals"):
        con.register(name, data[name])

    def check(mine: pa.Table, theirs: pa.Table) -> None:
        assert fingerprint(mine) == fingerprint(theirs), (fingerprint(mine), fingerprint(theirs))

    results = [paired("join (Arrow in memory)",
                      lambda: attribute_tables(data["cands"], data["firsts"], data["goals"], rules, done),
                      lambda: con.sql(PLAIN_SQL).to_arrow_table(), args.repeat, check)]
    print(f"conversions found: {fingerprint(con.sql(PLAIN_SQL).to_arrow_table())[0]:,}", flush=True)
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            results.append(end_to_end(f"sqlite:///{Path(tmp) / 'bench.db'}", data, args.repeat))
    if args.pg:
        import psycopg

        schema = f"bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        try:
            sep = "&" if "?" in args.pg else "?"
            results.append(end_to_end(f"{args.pg}{sep}options=-csearch_path%3D{schema}", data, args.repeat))
        finally:
            with psycopg.connect(args.pg, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")
    print(f"load average after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
