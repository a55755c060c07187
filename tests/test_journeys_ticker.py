"""Journeys move without a process of their own: ``ceap worker`` ticks them each poll loop
(at most every ``tick_every`` by its clock), ``ceap scheduler`` in its tick before
dispatching, and of several tickers on one store one ticks at a time (the store's lease)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import ceap.journeys.ticker as ticker_module
from ceap.journeys.engine import TickStats
from ceap.journeys.ticker import DEFAULT_LEASE, LEASE, JourneyPrograms, JourneyTicker
from ceap.runtime.schedule_book import ScheduleBook
from ceap.runtime.scheduler import Scheduler
from ceap.spec.schedule import SchedulerConfig
from ceap.store import Store, open_store
from ceap.testing import FakeClock
from tests.journey_helpers import T0, StreamProject

JOURNEY = {"steps": [
    {"id": "email", "send": {"channels": ["email"]}},
    {"id": "pause", "wait_for": {"events": ["opened"], "within": "1h"}},
    {"id": "sms", "send": {"channels": ["sms"]}},
]}


class Project(StreamProject):
    def __init__(self, root: Path, store: Store):
        super().__init__(root, store, JOURNEY)

    def messages(self) -> list[tuple[str, list[str]]]:
        return sorted((c.customer_id, c.channels) for c in self.journey_messages())


@pytest.fixture
def project(tmp_path: Path, store: Store) -> Project:
    return Project(tmp_path, store)


def test_the_worker_ticks_journeys_enters_and_takes_a_wait_timeout(project: Project) -> None:
    p = project
    worker = p.signups("c1", "c2", journeys=p.ticker("worker-1"))
    try:
        stats = worker.run(until_idle=True)
        # the poll that stored the tickets ticked: both entered and got the e-mail; the later
        # polls of this run came before tick_every passed on the worker's clock: no more ticks
        assert (stats.journey_ticks, stats.journey_entered, stats.journey_messages) == (1, 2, 2)
        assert p.messages() == [("c1", ["email"]), ("c2", ["email"])]
        p.clock.advance(minutes=30)  # inside the 1h wait: a tick moves nobody
        worker.run(until_idle=True)
        assert (stats.journey_ticks, stats.journey_messages) == (2, 2)
        p.clock.advance(minutes=31)  # the wait's window has passed: the timeout sends the SMS
        worker.run(until_idle=True)
        assert (stats.journey_ticks, stats.journey_messages) == (3, 4)
        assert p.messages() == [("c1", ["email"]), ("c1", ["sms"]), ("c2", ["email"]), ("c2", ["sms"])]
    finally:
        worker.close()


def test_a_worker_without_a_ticker_leaves_the_tickets(project: Project) -> None:
    worker = project.signups("c1")
    try:
        assert worker.run(until_idle=True).journey_ticks == 0
    finally:
        worker.close()
    assert project.messages() == []


def test_two_tickers_at_once_one_ticks(project: Project, store_url: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    p = project
    worker = p.signups("c1", "c2", "c3")  # tickets only
    worker.run(until_idle=True)
    worker.close()
    other_store = open_store(store_url)
    try:
        a, b = p.ticker("A"), p.ticker("B", other_store)
        real_tick = ticker_module.tick
        during: list[Any] = []

        def tick_while_b_tries(*args: Any, **kw: Any) -> Any:
            during.append(b.run())  # B, on its own connection, tries while A is ticking
            return real_tick(*args, **kw)

        monkeypatch.setattr(ticker_module, "tick", tick_while_b_tries)
        done = a.run()
        monkeypatch.setattr(ticker_module, "tick", real_tick)
        assert during == [None] and b.holder_seen == "A"
        assert done is not None and (done.entered, done.messages) == (3, 3)
        # A gave the lease up at the end of its tick: B ticks now, and has nothing to do
        again = b.run()
        assert again is not None and (again.entered, again.messages, again.moved) == (0, 0, 0)
        assert len(p.messages()) == 3
    finally:
        other_store.close()


def test_a_crashed_tickers_lease_lapses(project: Project) -> None:
    p = project
    worker = p.signups("c1")
    worker.run(until_idle=True)
    worker.close()
    book = ScheduleBook(p.store, "")
    # what a ticker killed mid-tick leaves: the lease as its last renewal set it
    assert book.acquire(LEASE, "crashed", p.clock(), DEFAULT_LEASE) is not None
    b = p.ticker("B")
    assert b.lease == DEFAULT_LEASE == timedelta(seconds=6)
    p.clock.advance(seconds=DEFAULT_LEASE.total_seconds() - 1)
    assert b.run() is None and b.holder_seen == "crashed"
    assert p.messages() == []
    p.clock.advance(seconds=2)  # past the lease: B takes over
    done = b.run()
    assert done is not None and done.messages == 1


def test_the_scheduler_ticks_journeys_before_dispatching(project: Project) -> None:
    p = project
    worker = p.signups("c1")
    worker.run(until_idle=True)
    worker.close()
    seen_by_dispatch: list[list[tuple[str, list[str]]]] = []

    def dispatch() -> Any:
        seen_by_dispatch.append(p.messages())
        return None

    ticker = p.ticker("scheduler-A")
    from ceap.spec import load_program

    specs = [load_program(p.programs / "nudge.yaml")]
    sched = Scheduler(p.store, p.context, lambda: specs, config=SchedulerConfig(), clock=p.clock,
                      holder="scheduler-A", dispatch=dispatch, journeys=ticker.maybe_tick)
    report = sched.tick()
    assert report.leader and report.journeys is not None
    assert (report.journeys.entered, report.journeys.messages) == (1, 1)
    assert seen_by_dispatch == [[("c1", ["email"])]]  # the tick's message, dispatched in the same tick
    # a standby scheduler neither ticks journeys nor dispatches
    other = Scheduler(p.store, p.context, lambda: specs, config=SchedulerConfig(), clock=p.clock,
                      holder="scheduler-B", dispatch=dispatch, journeys=p.ticker("scheduler-B").maybe_tick)
    assert other.tick().journeys is None and len(seen_by_dispatch) == 1
    p.clock.advance(hours=2)
    later = sched.tick()
    assert later.journeys is not None and later.journeys.messages == 1
    assert p.messages() == [("c1", ["email"]), ("c1", ["sms"])]


def test_journeys_tick_command_stands_by_while_another_ticker_holds_the_lease(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ceap.cli import app

    store_url = f"sqlite:///{tmp_path / 'cli.db'}"
    store = open_store(store_url)
    p = Project(tmp_path, store)
    worker = p.signups("c1")
    worker.run(until_idle=True)
    worker.close()
    far = datetime.now(UTC) + timedelta(hours=1)  # a live holder, whatever the real clock says
    ScheduleBook(store, "").acquire(LEASE, "worker-elsewhere", far, timedelta(seconds=60))
    store.close()
    base = ["--project", str(tmp_path), "--store", store_url]
    held = CliRunner().invoke(app, [*base, "journeys", "tick", "--json"])
    assert held.exit_code == 0, held.output
    assert json.loads(held.stdout)["entered"] == 0
    assert "another ticker (worker-elsewhere) is ticking this store: not ticking now" in held.stderr
    store = open_store(store_url)
    ScheduleBook(store, "").release(LEASE, "worker-elsewhere", datetime.now(UTC))
    store.close()
    free = CliRunner().invoke(app, [*base, "journeys", "tick", "--json"])
    assert json.loads(free.stdout)["entered"] == 1


def test_a_tick_with_a_clock_ahead_does_not_hold_the_others_back(project: Project) -> None:
    """``ceap scheduler --once --now`` in the future: its lease, given up, lets the others tick."""
    p = project
    worker = p.signups("c1")
    worker.run(until_idle=True)
    worker.close()
    ahead = JourneyTicker(p.store, JourneyPrograms(p.programs), clock=lambda: T0 + timedelta(days=3),
                          holder="ahead")
    assert ahead.run() is not None
    assert p.ticker("now").run() is not None


def _until(condition: Any, what: str, bound: float = 120) -> None:
    """Wait for another thread's or process's doing; ``bound`` (seconds) only stops a hang,
    it is not a timing."""
    stop = time.monotonic() + bound
    while not condition():
        if time.monotonic() > stop:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.005)


def test_the_lease_by_the_clock_renewed_lapsed_and_released(project: Project) -> None:
    """By the tickers' (fake) clock: renewed every third of it, A's lease holds through two
    leases' time; unrenewed, it holds to its end and B takes over just after; given up, it is
    free at once."""
    p = project
    book = ScheduleBook(p.store, "")
    a, b, c = p.ticker("A"), p.ticker("B"), p.ticker("C")
    assert timedelta(seconds=a.beat_every) == a.lease / 3 == timedelta(seconds=2)
    assert book.acquire(LEASE, "A", p.clock(), a.lease) is not None  # A's tick took it
    for _ in range(6):  # A's heartbeat, every third of the lease, for two leases' time
        p.clock.advance(seconds=a.beat_every)
        assert a.heartbeat()
        renewed = book.lease(LEASE)
        assert renewed is not None and renewed.until == p.clock() + a.lease and renewed.since == T0
        assert b.run() is None and b.holder_seen == "A"
    end = p.clock() + a.lease  # A renews no more (killed, or stalled)
    p.clock.now = end
    assert b.run() is None and b.holder_seen == "A"  # held to its end
    p.clock.now = end + timedelta(milliseconds=1)
    taken = b.run()  # B takes the lapsed lease over, ticks (and gives it up at the end)
    assert taken is not None and b.holder_seen == "B"
    assert c.run() is not None and c.holder_seen == "C"  # given up: free at once, same clock
    assert book.acquire(LEASE, "C", p.clock(), c.lease) is not None  # C holds it...
    c.release()  # ...and gives it up: B may take it at that very time
    assert book.acquire(LEASE, "B", p.clock(), b.lease) is not None


def test_the_heartbeat_keeps_the_lease_through_a_long_tick(project: Project,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A tick longer than the lease keeps it (renewed every beat), and gives it up at the end."""
    p = project
    a, b = p.ticker("A", beat_every=0.001), p.ticker("B")
    seen: list[Any] = []

    def long_tick(*args: Any, **kw: Any) -> TickStats:
        for _ in range(4):  # 4 x 0.8 leases by the clock: without renewals it would lapse
            beats = a.beats
            p.clock.advance(seconds=DEFAULT_LEASE.total_seconds() * 0.8)
            _until(lambda beats=beats: a.beats > beats + 1, "a renewal as of the new time")
            seen.append((b.run(), b.holder_seen))
        return TickStats()

    monkeypatch.setattr(ticker_module, "tick", long_tick)
    assert a.run() is not None
    assert seen == [(None, "A")] * 4
    lease = ScheduleBook(p.store, "").lease(LEASE)
    assert lease is not None and lease.holder == "A" and lease.until < p.clock()  # given up
    monkeypatch.undo()
    assert b.run() is not None and b.holder_seen == "B"  # at once, by the same clock


def test_a_failed_tick_gives_the_lease_up(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    p = project

    def broken(*args: Any, **kw: Any) -> TickStats:
        raise RuntimeError("store unreachable")

    monkeypatch.setattr(ticker_module, "tick", broken)
    with pytest.raises(RuntimeError):
        p.ticker("A").run()
    monkeypatch.undo()
    assert p.ticker("B").run() is not None


def test_a_stalled_ticker_that_lost_its_lease_stops_before_its_next_program(project: Project) -> None:
    p = project
    a = p.ticker("A", beat_every=3600)  # no beat comes: a frozen ticker
    assert ScheduleBook(p.store, "").acquire(LEASE, "A", p.clock(), a.lease) is not None
    p.clock.advance(seconds=a.lease.total_seconds() + 1)
    assert p.ticker("B").run() is not None  # B took the lapsed lease over (and gave it up)
    ScheduleBook(p.store, "").acquire(LEASE, "B", p.clock(), a.lease)  # B ticks again
    assert a.heartbeat() is False and a._keep() is False  # A's tick stops before its next program
    assert ScheduleBook(p.store, "").lease(LEASE).holder == "B"  # type: ignore[union-attr]


def test_the_lease_default_and_its_config(tmp_path: Path) -> None:
    from ceap.spec.journey import JourneysConfig

    assert JourneysConfig().lease == DEFAULT_LEASE
    assert JourneysConfig(lease="20s").lease == timedelta(seconds=20)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 3s"):
        JourneysConfig(lease="2s")  # type: ignore[arg-type]
    ticker = JourneyTicker(None, list, lease=timedelta(seconds=9))  # type: ignore[arg-type]
    assert ticker.beat_every == 3.0  # a third of the lease


HOLD = """
import sys, time
from datetime import timedelta
from types import SimpleNamespace
import ceap.journeys.ticker as t
from ceap.store import open_store

def hold(*args, **kw):
    print("ticking", flush=True)
    time.sleep(3600)

t.tick = hold
t.JourneyTicker(open_store(sys.argv[1]), lambda: [SimpleNamespace(journey=object())],
                holder="victim").run()
"""


def test_a_sigkilled_ticker_is_taken_over_once_its_lease_lapsed(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A real process ticks and its heartbeat renews its lease; SIGKILLed, it renews nothing
    more: another ticker is held back to the end of the last lease it wrote and takes over
    just after. That ticker's clock is set to those times: nothing here depends on how long
    anything takes (the waits only bound a hang)."""
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    store = open_store(url)
    monkeypatch.setattr(ticker_module, "tick", lambda *a, **kw: TickStats())
    book = ScheduleBook(store, "")
    proc = subprocess.Popen([sys.executable, "-c", HOLD, url], stdout=subprocess.PIPE, env=os.environ)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ticking\n"
        first = book.lease(LEASE)
        assert first is not None and first.holder == "victim"

        def renewed() -> bool:
            now = book.lease(LEASE)
            return now is not None and now.holder == "victim" and now.until > first.until

        _until(renewed, "a renewal by the victim's heartbeat")
        proc.kill()
        proc.wait()
        last = book.lease(LEASE)  # as the victim's last renewal left it: nobody writes it now
        assert last is not None and last.holder == "victim" and last.until > first.until
        clock = FakeClock(last.until)
        other = JourneyTicker(store, lambda: [SimpleNamespace(journey=object())], holder="other",
                              clock=clock)
        assert other.run() is None and other.holder_seen == "victim"
        clock.advance(milliseconds=1)
        assert other.run() is not None and other.holder_seen == "other"
    finally:
        proc.kill()
        proc.wait()
        store.close()
