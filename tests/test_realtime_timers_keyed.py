"""Absence timers in the store look their ``missing`` events up in the worker's keyed state
when it holds them (the partition restored into it, the type kept, the timer's arming time
at or after the time from which the state holds every event): no event-log read by
customer, which on SQLite has no index (migration 0011). Otherwise, from the log as before."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa

from ceap.realtime.events import EVENT_SCHEMA
from ceap.realtime.keyed import KeyedState
from ceap.realtime.state import EventLog
from ceap.realtime.timers import Timers
from ceap.store import open_store

T0 = datetime(2026, 11, 20, 10, 0)


def _events(*rows: tuple[str, str, str, datetime]) -> pa.Table:
    return pa.Table.from_pylist([{"event_id": e, "tenant_id": "default", "customer_id": c, "type": t,
                                  "ts": ts, "attributes": "{}"} for e, c, t, ts in rows], schema=EVENT_SCHEMA)


def _log_reads_by_customer(store: object) -> list[str]:
    seen: list[str] = []
    store._conn.set_trace_callback(seen.append)  # type: ignore[attr-defined]
    return seen


def test_missing_events_come_from_the_keyed_state_when_it_holds_them(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
    log, timers = EventLog(store), Timers(store)
    armed = _events(("a1", "C1", "cart_updated", T0), ("a2", "C2", "cart_updated", T0))
    log.append(armed, pa.array(["", ""]))
    fire = T0 + timedelta(minutes=20)
    timers.add("p#f", [("default", c, e, T0, fire, "") for e, c in (("a1", "C1"), ("a2", "C2"))])
    # C1's order is in the keyed state only (as if logged by this worker, the log is the same)
    keyed = KeyedState({"cart_updated", "order_placed"}, timedelta(minutes=80))
    keyed.load("", armed, since=T0 - timedelta(minutes=80))
    keyed.add(_events(("o1", "C1", "order_placed", T0 + timedelta(minutes=5))), pa.array([""]),
              {"": T0 + timedelta(minutes=5)})
    timers.keyed = keyed
    reads = _log_reads_by_customer(store)
    fired = timers.fire("p#f", "f", "order_placed", "", fire + timedelta(minutes=1))
    assert fired.column("customer_id").to_pylist() == ["C2"]
    assert not [s for s in reads if "FROM event_log" in s and "customer_id" in s.split("WHERE")[-1]]
    store.close()


def test_a_timer_older_than_what_the_state_holds_reads_the_log(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
    log, timers = EventLog(store), Timers(store)
    events = _events(("a1", "C1", "cart_updated", T0),
                     ("o1", "C1", "order_placed", T0 + timedelta(minutes=5)))
    log.append(events, pa.array(["", ""]))
    fire = T0 + timedelta(minutes=20)
    timers.add("p#f", [("default", "C1", "a1", T0, fire, "")])
    keyed = KeyedState({"cart_updated", "order_placed"}, timedelta(minutes=80))
    keyed.load("", events.slice(0, 0), since=T0 + timedelta(minutes=10))  # holds nothing from T0
    timers.keyed = keyed
    reads = _log_reads_by_customer(store)
    assert timers.fire("p#f", "f", "order_placed", "", fire + timedelta(minutes=1)).num_rows == 0
    assert [s for s in reads if "event_log NOT INDEXED" in s]  # the order found in the log
    store.close()


def test_the_state_holds_every_event_from_the_watermark_before_the_last_batch() -> None:
    keyed = KeyedState({"x"}, timedelta(minutes=30))
    keyed.load("p", _events(), since=T0.replace(tzinfo=None) - timedelta(minutes=30))
    assert keyed.horizon == {"p": T0 - timedelta(minutes=30)}
    for k in range(1, 4):
        mark = T0 + timedelta(hours=k)
        keyed.add(_events((f"e{k}", "C", "x", mark)), pa.array(["p"]), {"p": mark})
        # pruned behind the watermark of the batch before: a timer armed in the last batch
        # and due now still finds every event after its arming one
        assert keyed.horizon["p"] == T0 + timedelta(hours=k - 1) - timedelta(minutes=30)
