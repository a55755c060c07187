"""Keyed state in memory (``ceap.realtime.keyed``): the rows a program gets are those the
event log's history gave (an oracle run with the keyed state off, on random streams in
any order within the lateness, split anyhow, with redeliveries), and a partition that
moves to another worker and back has its state restored from the log."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ceap.realtime.engine import ProgramRunner
from ceap.realtime.keyed import KeyedState
from ceap.realtime.source import Received
from ceap.realtime.worker import Worker
from ceap.store import Store, open_store
from tests.test_realtime_eventtime import (
    PROGRAMS,
    T0,
    ListStream,
    _bucket,
    _event,
    _found,
    _message,
    _project,
)

LATENESS = 60
FEATURES: dict[str, dict[str, Any]] = {
    "features": {
        "source": {"type": "events", "on": ["app_crash", "purchase", "phone_changed"],
                   "lateness": f"{LATENESS}m", "columns": {"device": "string"}},
        "state": {
            "flagged_crashes": {"count": "app_crash", "window": "30m", "where": "attributes->>'flag' = 'y'"},
            "spent": {"sum": "purchase.amount", "window": "45m"},
            "devices": {"distinct": "login.device", "window": "2h"},
            "last_device": {"last": "login.device"},
            "since_purchase": {"time_since": "purchase"},
            "pw_then_phone": {"sequence": {"first": "password_changed", "then": "phone_changed"},
                              "within": "10m", "capture": ["device"]},
        },
        "action": {"type": "alert", "channels": ["email"]},
    },
}
TYPES = ["app_crash", "purchase", "login", "password_changed", "phone_changed", "page_view"]


def _attrs(draw: st.DrawFn) -> dict[str, Any]:
    return {"flag": draw(st.sampled_from(["y", "n"])), "amount": draw(st.integers(1, 50)),
            "device": draw(st.sampled_from(["d1", "d2", "d3"]))}


@st.composite
def streams(draw: st.DrawFn) -> list[list[Received]]:
    """Events of a few customers on two partitions, each partition in an arrival order within
    the lateness, interleaved anyhow, split into micro-batches anyhow, some sent twice."""
    customers = [f"C{i}" for i in range(draw(st.integers(1, 3)))]
    partition_of = {c: draw(st.sampled_from(["p0", "p1"])) for c in customers}
    n = draw(st.integers(1, 30))
    events = [{**_event(f"e{i}", draw(st.sampled_from(customers)), draw(st.sampled_from(TYPES)),
                        draw(st.integers(0, 200))), "attributes": _attrs(draw)} for i in range(n)]
    jitter = [draw(st.integers(0, LATENESS - 1)) for _ in events]
    order = sorted(range(n), key=lambda i: (_minute(events[i]) + jitter[i], i))
    queues = {p: [i for i in order if partition_of[events[i]["customer_id"]] == p] for p in ("p0", "p1")}
    arrival: list[int] = []
    while queues["p0"] or queues["p1"]:
        p = draw(st.sampled_from([p for p in ("p0", "p1") if queues[p]]))
        arrival.append(queues[p].pop(0))
    again = draw(st.lists(st.sampled_from(range(len(arrival))), max_size=4))
    for k in again:  # redelivered right after
        arrival.insert(k + 1, arrival[k])
    rest = [_message(events[i], partition_of[events[i]["customer_id"]]) for i in arrival]
    batches: list[list[Received]] = []
    while rest:
        size = draw(st.integers(1, 8))
        batches.append(rest[:size])
        rest = rest[size:]
    return batches


def _minute(event: dict[str, Any]) -> int:
    return int((datetime.fromisoformat(event["ts"]) - T0).total_seconds() // 60)


def _rows_per_batch(root: Path, batches: list[list[Received]], keyed: bool,
                    monkeypatch: pytest.MonkeyPatch) -> list[list[dict[str, Any]]]:
    """The rows the program got in each micro-batch, with the keyed state on or off."""
    store = open_store(f"sqlite:///{root}.db")
    seen: list[list[dict[str, Any]]] = []
    real = ProgramRunner._select_and_write

    def record(self: ProgramRunner, rows: pa.Table, stage: str, now: datetime) -> int:
        plain = rows.drop_columns([c for c in ("run_ts", "run_date") if c in rows.column_names])
        seen.append(sorted(plain.to_pylist(), key=lambda r: (r["event_ts"], r["event_id"])))
        return real(self, rows, stage, now)

    monkeypatch.setattr(ProgramRunner, "_select_and_write", record)
    monkeypatch.setattr("ceap.realtime.keyed.COMPACT_EVERY", 3)  # the sorted table and the chunks, both
    monkeypatch.setattr("ceap.realtime.keyed.SCAN_BELOW", 0)     # the sorted table by binary search
    context = _project(root, store, FEATURES)
    worker = Worker(store, ListStream(batches), root / "programs", context)
    if not keyed:
        worker.claims = None  # the event log's history, as before keyed state
    try:
        worker.run(until_idle=True)
    finally:
        worker.close()
        store.close()
        monkeypatch.setattr(ProgramRunner, "_select_and_write", real)
    assert (worker.keyed is not None) == keyed
    return seen


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=streams())
def test_keyed_state_gives_the_rows_the_event_log_history_gave(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batches: list[list[Received]]) -> None:
    run = tmp_path / uuid.uuid4().hex[:8]
    with_state = _rows_per_batch(run / "keyed", batches, True, monkeypatch)
    from_log = _rows_per_batch(run / "log", batches, False, monkeypatch)
    assert with_state == from_log


# -- a partition that moves -------------------------------------------------------------


def _worker(root: Path, store: Store, batches: list[list[Received]]) -> Worker:
    context = _project(root, store, {"crashes": PROGRAMS["crashes"]})
    worker = Worker(store, ListStream(batches), root / "programs", context)
    worker.reload(force=True)
    return worker


def _state(worker: Worker, partition: str) -> list[str]:
    assert worker.keyed is not None
    return sorted(worker.keyed.event_ids(partition).to_pylist())


def test_a_partition_moved_away_and_back_has_its_state_restored(store: Store, tmp_path: Path) -> None:
    """Worker A reads p0, worker B takes p0 over (a rebalance), then A gets it back: each
    restores p0's state from the log on taking it, so A counts B's crash and the
    candidates and the state equal one worker's that read it all."""
    crash = [_message(_event(f"x{i}", "A", "app_crash", i), "t[0]") for i in range(3)]
    other = [_message(_event(f"y{i}", "B", "app_crash", 40 + i), "t[1]") for i in range(2)]
    first, moved, back = [crash[0], other[0]], [crash[1]], [crash[2], other[1]]
    a = _worker(tmp_path / "a", store, [first, back])
    b = _worker(tmp_path / "b", store, [moved])
    try:
        a.step()
        b.step()          # p0 taken over by B: restored from the log (A's crash x0)
        assert _state(b, "t[0]") == ["x0", "x1"]
        a.step()          # p0 back to A: restored again, with B's crash x1
        assert _state(a, "t[0]") == ["x0", "x1", "x2"]
        assert a.claims is not None and a.claims.epochs["t[0]"] == 3
    finally:
        a.close()
        b.close()
    clean_store = open_store(f"sqlite:///{tmp_path}/clean.db")
    clean = _worker(tmp_path / "clean", clean_store, [first, moved, back])
    try:
        for _ in range(3):
            clean.step()
        assert _state(a, "t[0]") == _state(clean, "t[0]")
        assert _state(a, "t[1]") == _state(clean, "t[1]") == ["y0", "y1"]
        assert _found(store) == _found(clean_store) == [("crashes", "A", _bucket(2))]
    finally:
        clean.close()
        clean_store.close()


def test_a_restarted_worker_restores_state_and_watermark(tmp_path: Path) -> None:
    """A new worker on the same store (a restart) restores each partition's events and its
    watermark from the log: an event later than the lateness stays late after the restart."""
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    crashes = [_message(_event(f"x{i}", "A", "app_crash", 100 + i), "t[0]") for i in range(2)]
    first = _worker(tmp_path / "one", store, [crashes])
    first.step()
    first.close()
    late = _message(_event("old", "A", "app_crash", 100 - LATENESS - 5), "t[0]")
    again = _worker(tmp_path / "two", store, [[late, _message(_event("x2", "A", "app_crash", 102), "t[0]")]])
    try:
        again.step()
        assert again.stats.late == 1
        assert _state(again, "t[0]") == ["x0", "x1", "x2"]
        assert _found(store) == [("crashes", "A", _bucket(102))]
    finally:
        again.close()
        store.close()


def test_state_keeps_only_its_types_and_prunes_behind_the_watermark() -> None:
    from ceap.realtime.events import EVENT_SCHEMA
    from ceap.realtime.keyed import COMPACT_EVERY

    state = KeyedState({"app_crash"}, timedelta(minutes=30))
    start = T0.replace(tzinfo=None)
    for k in range(COMPACT_EVERY):
        events = pa.table({"event_id": [f"c{k}", f"v{k}"], "tenant_id": ["t", "t"], "customer_id": ["A", "A"],
                           "type": ["app_crash", "page_view"],
                           "ts": [start + timedelta(minutes=k * 5)] * 2, "attributes": ["{}", "{}"]},
                          schema=EVENT_SCHEMA)
        state.add(events, pa.array(["p", "p"]), {"p": start + timedelta(minutes=k * 5)})
    before = (COMPACT_EVERY - 2) * 5  # pruned behind the watermark of the micro-batch before the last
    kept = sorted(state.event_ids("p").to_pylist(), key=lambda e: int(e[1:]))
    assert kept == [f"c{k}" for k in range(COMPACT_EVERY) if k * 5 >= before - 30]
    assert state.horizon == {}  # never loaded: no partition it holds whole
    got = state.history(pa.array(["A"]), pa.array(["t"]))
    assert got.num_rows == len(kept) and set(got.column("type").to_pylist()) == {"app_crash"}
    assert state.history(pa.array(["A"]), pa.array(["other tenant"])).num_rows == 0


def test_a_worker_logging_a_partition_it_lost_makes_the_holder_restore(store: Store) -> None:
    """A rebalance while worker A works: B claims the partition and restores it, then A logs
    its last batch of it; A moves the claim on, so B restores again before its next batch."""
    from ceap.realtime.claims import Claims

    a, b = Claims(store, "default", "events", "a"), Claims(store, "default", "events", "b")
    assert a.take(["t[0]", "t[1]"]) == ["t[0]", "t[1]"]
    assert a.take(["t[0]"]) == []                  # still held: nothing to restore
    assert b.take(["t[0]"]) == ["t[0]"]            # taken over
    a.written(["t[0]", "t[1]"])                    # A logged a batch of both
    assert b.take(["t[0]"]) == ["t[0]"]            # B restores again, with A's batch
    assert b.take(["t[0]"]) == []
    assert a.take(["t[1]"]) == []                  # A kept t[1]
    assert a.take(["t[0]"]) == ["t[0]"]


def test_taking_a_partition_over_releases_its_timers_leases(store: Store) -> None:
    """Timers taken by a worker killed before storing their rows are due again as soon as
    another worker takes their partition over, not when the 60-second lease runs out."""
    from ceap.realtime.claims import Claims
    from ceap.realtime.timers import Timers

    start = T0.replace(tzinfo=None)
    rows = [("default", f"C{i}", f"e{i}", start, start + timedelta(minutes=1), p)
            for i, p in enumerate(["t[0]", "t[0]", "t[1]"])]
    with store.tx() as tx:
        tx.executemany("INSERT INTO event_log (tenant_id, event_id, customer_id, type, ts, attributes) "
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       [("default", e, c, "cart_updated", tx.ts(T0), "{}") for _, c, e, *_ in rows])
    Timers(store).add("p#f", rows)
    cut = start + timedelta(minutes=2)
    dead = Timers(store)
    assert sorted(dead.fire("p#f", "f", "order_placed", "t[0]", cut).column("customer_id").to_pylist()) == [
        "C0", "C1"]
    dead.fire("p#f", "f", "order_placed", "t[1]", cut)  # then killed: no done()
    heir = Timers(store)
    assert heir.fire("p#f", "f", "order_placed", "t[0]", cut).num_rows == 0   # leased
    Claims(store, "default", "events", "heir").take(["t[0]"])
    again = heir.fire("p#f", "f", "order_placed", "t[0]", cut)
    assert sorted(again.column("customer_id").to_pylist()) == ["C0", "C1"]
    assert heir.fire("p#f", "f", "order_placed", "t[1]", cut).num_rows == 0   # not taken over


class SharedListStream(ListStream):
    """A stream whose group members share its partitions (as Redis Streams, NATS, RabbitMQ
    and the embedded queue do)."""

    owns_partitions = False


def test_one_worker_on_a_stream_whose_workers_share_partitions_keeps_keyed_state(tmp_path: Path) -> None:
    """Alone on a stream whose group members share its partition (Redis Streams...), a
    worker keeps the partition's state in memory, as with Kafka: the same candidates."""
    batches = [[_message(_event(f"e{i}", "C1", "app_crash", i), "p0")] for i in range(3)]
    found = {}
    for name, stream in (("owned", ListStream(batches)), ("shared", SharedListStream(batches))):
        store = open_store(f"sqlite:///{tmp_path / name}.db")
        context = _project(tmp_path / name, store, {"crashes": PROGRAMS["crashes"]})
        worker = Worker(store, stream, tmp_path / name / "programs", context)
        try:
            worker.run(until_idle=True)
            assert worker.keyed is not None and not worker.shared
            assert _state(worker, "p0") == ["e0", "e1", "e2"]
            found[name] = _found(store)
        finally:
            worker.close()
            store.close()
    assert found["shared"] == found["owned"]
    assert found["owned"]


def test_two_workers_sharing_a_partition_read_history_from_the_log(tmp_path: Path) -> None:
    """A second worker on a shared partition takes its claim; at its next batch the first
    finds the claim gone, drops its state and reads history from the event log from then
    on, and so does the second once the first has taken the claim back: neither restores
    at every batch, and the count sees both workers' events (a restored copy would miss
    those the other logged since)."""
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    crash = [_message(_event(f"x{i}", "A", "app_crash", i), "p0") for i in range(4)]

    def worker(name: str, batches: list[list[Received]]) -> Worker:
        context = _project(tmp_path / name, store, {"crashes": PROGRAMS["crashes"]})
        return Worker(store, SharedListStream(batches), tmp_path / name / "programs", context)

    a, b = worker("a", [[crash[0]], [crash[2]]]), worker("b", [[crash[1]], [crash[3]]])
    try:
        a.step()
        b.step()          # B claims p0: restored from the log (A's x0)
        assert _state(b, "p0") == ["x0", "x1"] and not a.shared
        index = "SELECT name FROM sqlite_master WHERE name = 'event_log_by_customer'"
        assert not store._conn.execute(index).fetchall()  # revision 0011: none while one reads
        a.step()          # A finds p0 taken: its x2 counted with x0 and x1 from the log
        assert a.shared and a.keyed is None
        # from now on history is read by customer at every batch: through the index again
        assert store._conn.execute(index).fetchall()
        assert _found(store) == [("crashes", "A", _bucket(2))]
        b.step()          # B finds p0 taken back by A
        assert b.shared and b.keyed is None
        assert a.claims is not None and a.claims.epochs["p0"] == 3
    finally:
        a.close()
        b.close()
        store.close()
