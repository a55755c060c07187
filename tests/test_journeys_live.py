"""Journeys moved by the real-time worker between ticks: an event on the stream moves the
waiting entries of its customer in the pass that stored it, a wait's deadline is a timer the
worker fires (once across workers), and a worker and a ticker over the same entries write
each step once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

import ceap.journeys.engine as engine_module
import ceap.journeys.live as live_module
from ceap.journeys import deadlines
from ceap.journeys.engine import tick
from ceap.journeys.live import LiveJourneys
from ceap.journeys.state import customer_entries
from ceap.journeys.ticker import JourneyPrograms
from ceap.realtime.events import EVENT_SCHEMA
from ceap.realtime.worker import Worker
from ceap.spec import load_program
from ceap.store import Store, open_store
from tests.journey_helpers import T0, StreamProject, events_program

JOURNEY = {"exit_on": ["purchase"], "steps": [
    {"id": "email", "send": {"channels": ["email"]}},
    {"id": "wait", "wait_for": {"events": {"activated": "thanks"}, "within": "1h", "timeout": "sms"}},
    {"id": "sms", "send": {"channels": ["sms"]}, "next": "end"},
    {"id": "thanks", "send": {"channels": ["email"], "template": "thanks"}},
]}


class Project(StreamProject):
    def __init__(self, root: Path, store: Store):
        super().__init__(root, store, JOURNEY)
        # ticks once (the first pass: entering), then not for a day: what moves is the worker's
        self.journeys = self.ticker("worker", every=timedelta(days=1).total_seconds())

    def one_pass(self, *events: tuple[str, str]) -> Worker:
        worker = self.worker(*events)
        worker.reload(force=True)
        worker.step()
        worker.close()
        return worker

    def messages(self) -> list[tuple[str, str, str]]:
        return sorted((c.customer_id, c.channels[0], c.template or "nudge") for c in self.journey_messages())

    def entry(self, customer: str) -> Any:
        with self.store.tx() as tx:
            return customer_entries(tx, "default", customer, "nudge")[0]

    def enter(self, *customers: str) -> None:
        """Signups: the worker's first pass writes the tickets and ticks (entry, e-mail)."""
        worker = self.one_pass(*[(c, "signup") for c in customers])
        assert worker.stats.journey_ticks == 1 and worker.stats.journey_messages == len(customers)


def counts(worker: Worker) -> tuple[int, int, int]:
    """The worker's journey ticks, entries it moved between ticks, journey messages."""
    return worker.stats.journey_ticks, worker.stats.journey_moved, worker.stats.journey_messages


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
    yield opened
    opened.close()


@pytest.fixture
def project(tmp_path: Path, sqlite_store: Store) -> Project:
    return Project(tmp_path, sqlite_store)


def test_an_event_on_the_stream_moves_a_waiting_entry_in_the_same_pass(project: Project) -> None:
    p = project
    p.enter("c1", "c2")
    p.clock.advance(minutes=10)
    worker = p.one_pass(("c1", "activated"), ("c2", "page_view"))
    assert worker.stats.journey_ticks == 0  # no tick: the batch's event moved c1
    assert (worker.stats.journey_moved, worker.stats.journey_messages) == (1, 1)
    assert p.messages() == [("c1", "email", "nudge"), ("c1", "email", "thanks"), ("c2", "email", "nudge")]
    c1, c2 = p.entry("c1"), p.entry("c2")
    assert (c1.status, c1.step) == ("completed", "thanks")
    assert [row["what"] for row in c1.log] == ["entered", "sent", "event activated", "sent", "completed"]
    assert (c2.status, c2.step) == ("active", "wait")
    # c1's deadline timer went with its move; c2's is due an hour after its e-mail
    assert deadlines.pending(p.store, "nudge") == [(c2.id, c2.seq, T0 + timedelta(hours=1))]


def test_exit_on_through_the_stream(project: Project) -> None:
    p = project
    p.enter("c1")
    p.clock.advance(minutes=5)
    worker = p.one_pass(("c1", "purchase"))
    assert counts(worker) == (0, 1, 0)
    c1 = p.entry("c1")
    assert (c1.status, c1.reason) == ("exited", "exit_on purchase")
    assert deadlines.pending(p.store, "nudge") == []
    p.clock.advance(hours=2)  # past the wait's deadline: nothing more
    assert p.one_pass().stats.journey_messages == 0
    assert p.messages() == [("c1", "email", "nudge")]


def test_a_wait_timeout_fires_as_a_timer_without_a_tick(tmp_path: Path, store: Store) -> None:
    """On SQLite and PostgreSQL."""
    p = Project(tmp_path, store)
    p.enter("c1", "c2")
    p.clock.advance(minutes=59)  # not due yet
    assert p.one_pass().stats.journey_moved == 0
    p.clock.advance(minutes=1)  # due: the deadline is at the end of the window
    worker = p.one_pass()
    assert counts(worker) == (0, 2, 2)
    assert p.messages() == [("c1", "email", "nudge"), ("c1", "sms", "nudge"),
                            ("c2", "email", "nudge"), ("c2", "sms", "nudge")]
    assert [row["what"] for row in p.entry("c1").log][-3:] == ["timeout", "sent", "completed"]
    assert deadlines.pending(p.store, "nudge") == []


def test_a_deadline_is_taken_by_one_worker_at_a_time(project: Project) -> None:
    p = project
    p.enter("c1")
    due = T0 + timedelta(hours=1)
    first = deadlines.claim(p.store, ["nudge"], due, timedelta(seconds=60))
    assert [(program, customer) for _, program, customer, _, _ in first] == [("nudge", "c1")]
    assert deadlines.claim(p.store, ["nudge"], due + timedelta(seconds=30), timedelta(seconds=60)) == []
    # the first worker died before moving the entry: once its lease lapses another takes it
    live = LiveJourneys(p.store, lambda: [load_program(p.programs / "nudge.yaml")],
                        clock=lambda: due + timedelta(seconds=61))
    done = live.fire_deadlines()
    assert (done.moved, done.messages) == (1, 1)
    assert p.messages() == [("c1", "email", "nudge"), ("c1", "sms", "nudge")]


def test_a_longer_wait_moves_its_deadline(project: Project) -> None:
    p = project
    p.enter("c1")
    longer = json.loads(json.dumps(JOURNEY))
    longer["steps"][1]["wait_for"]["within"] = "3h"
    (p.programs / "nudge.yaml").write_text(yaml.safe_dump(events_program("nudge", "signup", longer)))
    p.clock.advance(hours=1)
    live = LiveJourneys(p.store, JourneyPrograms(p.programs), clock=p.clock)
    assert live.fire_deadlines().moved == 0  # not due under the new window: moved to its end
    entry = p.entry("c1")
    assert deadlines.pending(p.store, "nudge") == [(entry.id, entry.seq, T0 + timedelta(hours=3))]
    p.clock.advance(hours=2)
    assert live.fire_deadlines().messages == 1


def events_table(*rows: tuple[str, str]) -> Any:
    import pyarrow as pa

    ts = datetime(2026, 11, 20, 10, 10)
    return pa.table({"event_id": [f"x{i}" for i in range(len(rows))], "tenant_id": ["default"] * len(rows),
                     "customer_id": [c for c, _ in rows], "type": [k for _, k in rows],
                     "ts": [ts] * len(rows), "attributes": ["{}"] * len(rows)}, schema=EVENT_SCHEMA)


@pytest.mark.parametrize("first", ["ticker", "worker"])
def test_a_worker_and_a_ticker_on_the_same_entries_send_each_step_once(
        tmp_path: Path, store: Store, first: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each reads the waiting entries, then the other moves them before it writes: the one
    that writes second finds every entry moved (conflicts) and writes nothing. On SQLite and
    PostgreSQL."""
    p = Project(tmp_path, store)
    customers = [f"c{i}" for i in range(250)]  # more than one chunk of writes
    p.enter(*customers)
    p.clock.advance(minutes=10)
    specs = [load_program(p.programs / "nudge.yaml")]
    live = LiveJourneys(store, lambda: specs, clock=p.clock)
    # the events are stored (as the worker stores them before it moves the entries)
    worker = p.worker(*[(c, "activated") for c in customers])
    worker.live_journeys = None
    worker.journeys = None
    worker.reload(force=True)
    worker.step()
    worker.close()
    events = events_table(*[(c, "activated") for c in customers])
    other: list[Any] = []
    if first == "ticker":  # the worker read its entries; the ticker moves them first
        real = live_module.move

        def ticker_first(*args: Any, **kw: Any) -> Any:
            if not other:
                other.append(tick(store, specs, now=p.clock()))
            return real(*args, **kw)

        monkeypatch.setattr(live_module, "move", ticker_first)
        late = live.on_events(events)
    else:  # the tick read its entries; the worker moves them first
        real = engine_module.move

        def worker_first(*args: Any, **kw: Any) -> Any:
            if not other:
                other.append(live.on_events(events))
            return real(*args, **kw)

        monkeypatch.setattr(engine_module, "move", worker_first)
        late = tick(store, specs, now=p.clock())
    assert other[0].moved == len(customers) and other[0].messages == len(customers)
    assert (late.moved, late.messages, late.conflicts) == (0, 0, len(customers))
    sent = p.messages()
    assert len(sent) == 2 * len(customers) == len(set(sent))
    assert {t for _, _, t in sent} == {"nudge", "thanks"}
    assert deadlines.pending(store, "nudge") == []


def test_a_worker_and_a_ticker_at_the_same_time_send_each_step_once(
        tmp_path: Path, store: Store, store_url: str) -> None:
    """Really at once: the worker's moves and a tick in two threads, each on its own
    connection, over the same 250 entries (on PostgreSQL, rows locked in id order: no
    deadlock)."""
    import threading

    p = Project(tmp_path, store)
    customers = [f"c{i}" for i in range(250)]
    p.enter(*customers)
    p.clock.advance(minutes=10)
    specs = [load_program(p.programs / "nudge.yaml")]
    worker = p.worker(*[(c, "activated") for c in customers])
    worker.live_journeys = None
    worker.journeys = None
    worker.reload(force=True)
    worker.step()  # the events are stored
    worker.close()
    other = open_store(store_url)
    results: dict[str, Any] = {}
    try:
        live = LiveJourneys(other, lambda: specs, clock=p.clock)
        start = threading.Barrier(2)

        def by_worker() -> None:
            start.wait()
            results["worker"] = live.on_events(events_table(*[(c, "activated") for c in customers]))

        def by_ticker() -> None:
            start.wait()
            results["ticker"] = tick(store, specs, now=p.clock())

        threads = [threading.Thread(target=by_worker), threading.Thread(target=by_ticker)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        other.close()
    done = results["worker"], results["ticker"]
    assert sum(d.moved for d in done) == len(customers)  # each entry moved by exactly one
    assert sum(d.messages for d in done) == len(customers)
    sent = p.messages()
    assert len(sent) == 2 * len(customers) == len(set(sent))
    assert deadlines.pending(store, "nudge") == []
