"""Which index each event-log read takes on SQLite: a customer's history read from the log
(a worker without keyed state) reads the table through, as there is no customer index
(migration 0011), the dedup lookup goes through the primary key, and the dashboard's
tenant-wide counts read the table through, never row by row through an index."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from ceap.realtime.events import validate_events
from ceap.realtime.state import EventLog, index_by_customer
from ceap.store import open_store
from ceap.ui.queries import event_rate, event_totals

T0 = datetime(2026, 11, 25, 10, tzinfo=UTC)


def plans(store: Any, call: Any) -> list[str]:
    """The query plan of each statement on ``event_log`` that ``call`` runs."""
    seen: list[str] = []
    store._conn.set_trace_callback(seen.append)
    try:
        call()
    finally:
        store._conn.set_trace_callback(None)
    return [" ".join(r[3] for r in store._conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall())
            for sql in seen if "FROM event_log" in sql and sql.lstrip().upper().startswith("SELECT")]


def test_each_event_log_read_takes_the_index_it_needs(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
    log = EventLog(store)
    items = [{"id": f"e{i}", "type": "app_crash" if i % 2 else "login", "customer_id": f"C{i % 7}",
              "ts": (T0 + timedelta(minutes=i)).isoformat()} for i in range(40)]
    events, rejected = validate_events(items)
    assert not rejected
    log.append(events, pa.array(["p0"] * events.num_rows))
    since = T0.replace(tzinfo=None)
    keys = [("default", "C1"), ("default", "C2")]
    history = plans(store, lambda: log.history(keys, since, types=["app_crash"]))
    # no customer index on SQLite (migration 0011): read through, not row by row by tenant
    assert history and all("SCAN event_log" in p and "INDEX" not in p.split("LIST SUBQUERY")[0]
                           for p in history), history
    assert not store._conn.execute(
        "SELECT name FROM sqlite_master WHERE name = 'event_log_by_customer'").fetchall()
    seen = plans(store, lambda: log.seen(["default"], ["e1", "e2"]))
    assert seen and all("sqlite_autoindex_event_log_1" in p for p in seen), seen
    for call in (lambda: event_totals(store, "default"), lambda: event_rate(store, "default", T0)):
        dashboard = plans(store, call)
        assert dashboard and all("event_log_by_customer" not in p and "SCAN event_log" in p
                                 for p in dashboard), dashboard
    assert event_totals(store, "default")[0] == 40
    index_by_customer(store)  # a worker that reads history from the log at every batch
    indexed = plans(store, lambda: log.history(keys, since, types=["app_crash"]))
    assert indexed and all("event_log_by_customer" in p for p in indexed), indexed
    assert sorted(log.history(keys, since, types=["app_crash"]).column("event_id").to_pylist()) == [
        "e1", "e15", "e23", "e29", "e37", "e9"]
    assert sum(n for _, n in event_rate(store, "default", T0)) == 40
    store.close()


def test_the_logged_time_text_is_the_stores_iso_text(tmp_path: Path) -> None:
    """The append formats a batch's times column-wise: the text is ``to_iso``'s, to the
    microsecond, whole seconds included (a history read compares these texts)."""
    from ceap.realtime.state import _iso_column
    from ceap.store.schema import to_iso

    naive = [datetime(2026, 11, 25, 10), datetime(2026, 11, 25, 10, 0, 5, 120000),
             datetime(1999, 12, 31, 23, 59, 59, 999999), datetime(1000, 1, 1, 0, 0, 0, 1),
             datetime(9999, 12, 31, 23, 59, 59)]
    us = pa.timestamp("us")
    column = pa.chunked_array([pa.array(naive[:2], us), pa.array(naive[2:], us)])
    assert _iso_column(column) == [to_iso(v.replace(tzinfo=UTC)) for v in naive]
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    items = [{"id": f"e{i}", "type": "t", "ts": (T0 + timedelta(microseconds=i * 250_001)).isoformat(),
              "customer_id": "C1"} for i in range(6)]
    table, _ = validate_events(items)
    EventLog(store).append(table)
    got = EventLog(store).history([("default", "C1")], datetime(2026, 11, 25, 10, 0, 0, 500_002))
    assert sorted(got.column("event_id").to_pylist()) == ["e2", "e3", "e4", "e5"]
    with store.tx() as tx:
        stored = [r[0] for r in tx.execute("SELECT ts FROM event_log ORDER BY event_id").fetchall()]
    assert stored == [to_iso(T0 + timedelta(microseconds=i * 250_001)) for i in range(6)]
    store.close()


def test_the_append_of_many_rows_a_statement_keeps_each_event_once(tmp_path: Path) -> None:
    """The SQLite append writes ``ROWS_A_STATEMENT`` rows a statement: a batch of several
    statements and a partial one, with an event twice in it and one logged before, leaves
    each event once, with its own values."""
    from ceap.realtime.state import ROWS_A_STATEMENT

    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
    log = EventLog(store, "events")
    n = 2 * ROWS_A_STATEMENT + 7
    items = [{"id": f"e{i}", "type": "login", "customer_id": f"C{i}",
              "ts": (T0 + timedelta(seconds=i)).isoformat(), "attributes": {"i": i}} for i in range(n)]
    first, _ = validate_events(items[:3])
    log.append(first, pa.array(["p0"] * 3))
    events, rejected = validate_events([*items, items[5]])
    assert not rejected
    log.append(events, pa.array(["p1"] * events.num_rows))
    rows = [(e, c, json.loads(a), p, s) for e, c, a, p, s in store._conn.execute(
        "SELECT event_id, customer_id, attributes, partition_key, stream FROM event_log "
        "ORDER BY CAST(substr(event_id, 2) AS INTEGER)").fetchall()]
    assert [r[0] for r in rows] == [f"e{i}" for i in range(n)]
    assert rows[2] == ("e2", "C2", {"i": 2}, "p0", "events")  # logged before: kept as it was
    assert rows[-1] == (f"e{n - 1}", f"C{n - 1}", {"i": n - 1}, "p1", "events")
    store.close()
