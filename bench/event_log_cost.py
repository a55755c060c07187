"""CPU per event of the event log's dedup look-up (``seen``) and ``append``, in one run,
the store's code against variants: the same bench events (``bench/realtime_events.py``)
parsed as the worker parses them, appended in micro-batches to a fresh SQLite store with
the store's pragmas (the migrations' schema), each variant in its own file, in turns.

Usage::

    PYTHONPATH=src .venv/bin/python bench/event_log_cost.py [--events 96000] [--batch 8000]
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realtime_events import historic_events

from ceap.realtime.events import parse_bodies
from ceap.realtime.state import EventLog, _iso_column, _values
from ceap.store import open_store


def batches(n: int, size: int) -> list[pa.Table]:
    events, _ = parse_bodies(historic_events(n, 10_000, 7))
    return [events.slice(i, size) for i in range(0, events.num_rows, size)]


def cpu() -> float:
    return time.process_time()


def run(label: str, root: Path, tables: list[pa.Table], append: Callable[[EventLog, pa.Table, pa.Array], Any],
        seen: Callable[[EventLog, pa.Table], Any], setup: Callable[[Any], None] | None = None) -> None:
    store = open_store(f"sqlite:///{root / (label + '.db')}")
    if setup is not None:
        setup(store)
    log = EventLog(store)
    n = sum(t.num_rows for t in tables)
    spent_seen = spent_append = 0.0
    for t in tables:
        part = pa.array(["p0"] * t.num_rows)
        a = cpu()
        seen(log, t)
        b = cpu()
        append(log, t, part)
        spent_seen += b - a
        spent_append += cpu() - b
    with store.tx() as tx:
        rows = tx.execute("SELECT count(*) FROM event_log").fetchone()[0]
    store.close()
    print(f"{label:28s} seen {spent_seen / n * 1e6:6.2f}  append {spent_append / n * 1e6:6.2f} µs/event"
          f"  rows {rows}", flush=True)


def store_seen(log: EventLog, t: pa.Table) -> Any:
    return log.seen(t.column("tenant_id").to_pylist(), t.column("event_id").to_pylist())


def no_seen(log: EventLog, t: pa.Table) -> Any:
    return None


def json_append(log: EventLog, events: pa.Table, parts: pa.Array) -> None:
    """One ``INSERT ... SELECT ... FROM json_each(?)`` with the batch as one JSON text."""
    cols = [events.column(n) for n in ("tenant_id", "event_id", "customer_id", "type", "ts", "attributes")]
    cols[2] = pc.fill_null(cols[2], "")
    stamps = _iso_column(cols[4])
    text = orjson.dumps(list(zip(_values(cols[0]), *(c.to_pylist() for c in cols[1:4]), stamps,
                                 cols[5].to_pylist(), _values(parts), strict=True)))
    with log.store.tx() as tx:
        tx.execute("INSERT INTO event_log (tenant_id, event_id, customer_id, type, ts, attributes, "
                   "partition_key) SELECT value->>0, value->>1, value->>2, value->>3, value->>4, "
                   "value->>5, value->>6 FROM json_each(?) WHERE true "
                   "ON CONFLICT (tenant_id, event_id) DO NOTHING", (text,))


def by(events: pa.Table, parts: pa.Array, column: str) -> tuple[pa.Table, pa.Array]:
    order = pc.sort_indices(events.column(column))
    return events.take(order), parts.take(order)


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def literal_append(log: EventLog, events: pa.Table, parts: pa.Array) -> None:
    """executemany binding five values a row: the batch's one tenant and one partition as
    SQL literals."""
    cols = [events.column(n) for n in ("event_id", "customer_id", "type", "ts", "attributes")]
    cols[1] = pc.fill_null(cols[1], "")
    tenant, part = events.column("tenant_id")[0].as_py(), parts[0].as_py()
    stamps = _iso_column(cols[3])
    with log.store.tx() as tx:
        tx.executemany("INSERT INTO event_log (tenant_id, event_id, customer_id, type, ts, attributes, "
                       f"partition_key) VALUES ({_sql_text(tenant)}, ?, ?, ?, ?, ?, {_sql_text(part)}) "
                       "ON CONFLICT (tenant_id, event_id) DO NOTHING",
                       list(zip(*(c.to_pylist() for c in cols[:3]), stamps, cols[4].to_pylist(),
                                strict=True)))


def values_append(log: EventLog, events: pa.Table, parts: pa.Array, rows_per: int = 256) -> None:
    """Multi-row ``VALUES`` statements of ``rows_per`` rows (seven values each)."""
    cols = [events.column(n) for n in ("tenant_id", "event_id", "customer_id", "type", "ts", "attributes")]
    cols[2] = pc.fill_null(cols[2], "")
    stamps = _iso_column(cols[4])
    rows = zip(_values(cols[0]), *(c.to_pylist() for c in cols[1:4]), stamps, cols[5].to_pylist(),
               _values(parts), strict=True)
    flat = list(itertools.chain.from_iterable(rows))
    head = ("INSERT INTO event_log (tenant_id, event_id, customer_id, type, ts, attributes, partition_key) "
            "VALUES ")
    tail = " ON CONFLICT (tenant_id, event_id) DO NOTHING"
    n = events.num_rows
    with log.store.tx() as tx:
        for start in range(0, n, rows_per):
            k = min(rows_per, n - start)
            tx.execute(head + ",".join(["(?,?,?,?,?,?,?)"] * k) + tail, flat[start * 7:(start + k) * 7])


def customer_index(store: Any) -> None:
    """The store's layout before migration 0011 (the customer index, SQLite's since 0009)."""
    with store.tx() as tx:
        tx.execute("CREATE INDEX IF NOT EXISTS event_log_by_customer ON event_log (tenant_id, customer_id)")


def customer_only_index(store: Any) -> None:
    with store.tx() as tx:
        tx.execute("CREATE INDEX event_log_by_customer ON event_log (customer_id)")


def without_rowid(store: Any) -> None:
    with store.tx() as tx:
        tx.execute("DROP TABLE event_log")
        tx.execute("CREATE TABLE event_log (tenant_id TEXT NOT NULL, event_id TEXT NOT NULL, "
                   "customer_id TEXT NOT NULL, type TEXT NOT NULL, ts TEXT NOT NULL, "
                   "attributes TEXT NOT NULL, partition_key TEXT, stream TEXT, "
                   "PRIMARY KEY (tenant_id, event_id)) WITHOUT ROWID")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=96_000)
    ap.add_argument("--batch", type=int, default=8_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    tables = batches(args.events, args.batch)
    store_append = lambda log, t, p: log.append(t, p)  # noqa: E731
    variants: dict[str, tuple[Any, Any, Any]] = {
        "store": (store_append, store_seen, None),
        "literal tenant and partition": (literal_append, no_seen, None),
        "customer-only index": (store_append, no_seen, customer_only_index),
        "multi-row values": (values_append, no_seen, None),
        "json_each append": (json_append, no_seen, None),
        "sorted by customer": (lambda log, t, p: log.append(*by(t, p, "customer_id")), no_seen, None),
        "sorted by event id": (lambda log, t, p: log.append(*by(t, p, "event_id")), no_seen, None),
        "customer index (before 0011)": (store_append, no_seen, customer_index),
        "without rowid": (store_append, no_seen, without_rowid),
        "json_each, without rowid": (json_append, no_seen, without_rowid),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            root = Path(tmp) / str(r)
            root.mkdir()
            for label, (append, seen, setup) in variants.items():
                name = label.replace(" ", "_").replace(",", "").replace(".", "")
                run(name, root, tables, append, seen, setup)
            print(f"round {r}: load {os.getloadavg()[0]:.2f}, {time.strftime('%H:%M:%S', time.gmtime())} UTC",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
