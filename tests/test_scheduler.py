"""The scheduler's tick, driven by a fake clock on both stores: windows on time, DST,
catch-up after downtime, overruns, one active scheduler, no overlapping runs, resumes."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ceap.model import RunRecord
from ceap.plugin import PluginContext
from ceap.runtime.schedule_book import ScheduleBook
from ceap.runtime.scheduler import Decision, Scheduler
from ceap.spec import parse_program
from ceap.spec.program import ProgramSpec
from ceap.spec.schedule import SchedulerConfig
from ceap.store import Store, open_store
from ceap.testing import FakeClock
from tests.helpers import ORDERS, ORDERS_HEADER, base_program, write_csv

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday, noon
CONFIG = SchedulerConfig(poll=timedelta(seconds=30), lease=timedelta(seconds=60))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_csv(tmp_path / "orders.csv", ORDERS_HEADER, ORDERS)
    return tmp_path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


def program(schedule: Any, name: str = "big_carts", **more: Any) -> ProgramSpec:
    return parse_program(base_program(name=name, schedule=schedule, **more), f"{name}.yaml")


class Rig:
    """Schedulers sharing one store URL and one clock, each on its own connection."""

    def __init__(self, url: str, project: Path, clock: FakeClock):
        self.url, self.project, self.clock = url, project, clock
        self.stores: list[Store] = []

    def scheduler(self, specs: list[ProgramSpec] | Callable[[], list[ProgramSpec]], holder: str = "A",
                  config: SchedulerConfig = CONFIG, **kw: Any) -> Scheduler:
        store = open_store(self.url)
        self.stores.append(store)
        load = specs if callable(specs) else (lambda: specs)
        return Scheduler(store, PluginContext(base_dir=self.project), load, config=config,
                         clock=self.clock, holder=holder, **kw)

    def runs(self, program: str = "big_carts") -> list[RunRecord]:
        return sorted(self.stores[0].runs("default", program, 1000), key=lambda r: r.started_at)

    @property
    def book(self) -> ScheduleBook:
        return ScheduleBook(self.stores[0], "default")


@pytest.fixture
def rig(store_url: str, project: Path, clock: FakeClock) -> Iterator[Rig]:
    r = Rig(store_url, project, clock)
    yield r
    for s in r.stores:
        s.close()


def at(clock: FakeClock, when: datetime) -> None:
    clock.now = when


def shown(decisions: list[Decision]) -> list[tuple[datetime, str, int]]:
    return [(d.fire_at, d.status, d.windows) for d in decisions]


# -- on time -----------------------------------------------------------------------
def test_a_program_runs_at_each_window_from_its_first_sight(rig: Rig, clock: FakeClock) -> None:
    s = rig.scheduler([program("hourly")])
    first = s.tick()
    assert first.leader and first.decisions == []  # 12:00 itself is not caught up
    at(clock, T0 + timedelta(minutes=59))
    assert s.tick().decisions == []
    at(clock, T0 + timedelta(hours=1, seconds=20))
    [d] = s.tick().decisions
    assert (d.fire_at, d.status) == (T0 + timedelta(hours=1), "succeeded")
    [run] = rig.runs()
    assert run.run_id == d.run_id and run.started_at == T0 + timedelta(hours=1)  # as of the window
    assert s.tick().decisions == []  # the same window never runs twice
    state = rig.book.state("big_carts")
    assert state is not None
    assert (state.last_fire, state.last_status, state.last_run_id, state.running_by) == (
        T0 + timedelta(hours=1), "succeeded", run.run_id, None)


@pytest.mark.parametrize(("start", "days", "fires"), [
    # spring forward (03-29): 02:30 does not exist and runs once, at 03:00 CEST
    (utc(2026, 3, 27, 12), 4, [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 0),
                               utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)]),
    # fall back (10-25): 02:30 happens twice and runs once, at the first (CEST)
    (utc(2026, 10, 23, 12), 4, [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30),
                                utc(2026, 10, 26, 1, 30), utc(2026, 10, 27, 1, 30)]),
], ids=["spring-forward", "fall-back"])
def test_a_daily_run_happens_once_a_day_across_dst(rig: Rig, clock: FakeClock, start: datetime,
                                                   days: int, fires: list[datetime]) -> None:
    """Ticking every 30 minutes through the change: one run per day, on time (catch_up skip
    would show a late window as missed)."""
    at(clock, start + timedelta(seconds=10))
    config = SchedulerConfig(poll=timedelta(minutes=30), lease=timedelta(hours=1))
    s = rig.scheduler([program({"cron": "30 2 * * *", "timezone": "Europe/Paris",
                                "catch_up": "skip"})], config=config)
    decisions = []
    while clock.now < start + timedelta(days=days):
        decisions += s.tick().decisions
        clock.advance(minutes=30)
    assert shown(decisions) == [(f, "succeeded", 1) for f in fires]
    assert [r.started_at for r in rig.runs()] == fires


# -- catch-up after downtime ------------------------------------------------------------
@pytest.mark.parametrize(("policy", "missed", "ran"), [
    ("skip", [(14, 5)], []),
    ("once", [(14, 4)], [18]),
    ("each", [(14, 2)], [16, 17, 18]),  # max_catch_up: 3
])
def test_windows_missed_while_no_scheduler_ran_follow_catch_up(
        rig: Rig, clock: FakeClock, policy: str, missed: list[tuple[int, int]], ran: list[int]) -> None:
    spec = program({"cron": "0 * * * *", "catch_up": policy, "max_catch_up": 3})
    a = rig.scheduler([spec], "A")
    a.tick()
    at(clock, utc(2026, 3, 2, 13, 0, 10))
    assert shown(a.tick().decisions) == [(utc(2026, 3, 2, 13), "succeeded", 1)]
    # A dies without a word; B starts 5 hours later: 14:00 ... 18:00 passed unseen
    at(clock, utc(2026, 3, 2, 18, 10))
    b = rig.scheduler([spec], "B")
    report = b.tick()
    assert report.leader
    hour = lambda h: utc(2026, 3, 2, h)  # noqa: E731
    assert shown([d for d in report.decisions if d.status == "missed"]) == [
        (hour(h), "missed", n) for h, n in missed]
    assert [d.fire_at for d in report.decisions if d.status == "succeeded"] == [hour(h) for h in ran]
    assert [r.started_at for r in rig.runs()] == [hour(13), *(hour(h) for h in ran)]
    [logged] = [e for e in rig.book.history("big_carts") if e.status == "missed"]
    assert logged.windows == missed[0][1] and f"catch_up: {policy}" in (logged.detail or "")
    assert logged.scheduler == "B"
    state = rig.book.state("big_carts")
    assert state is not None and state.skipped == missed[0][1] and state.last_fire == hour(18)
    # from then on, on time again
    at(clock, utc(2026, 3, 2, 19, 0, 5))
    assert shown(b.tick().decisions) == [(hour(19), "succeeded", 1)]


def test_a_window_just_before_a_restart_is_on_time_and_stands_for_the_missed_ones(
        rig: Rig, clock: FakeClock) -> None:
    spec = program({"cron": "0 * * * *", "catch_up": "once"})
    rig.scheduler([spec], "A").tick()  # first sight at 12:00
    at(clock, utc(2026, 3, 2, 16, 0, 40))  # 40 s after 16:00: within lease + poll
    decisions = rig.scheduler([spec], "B").tick().decisions
    assert shown(decisions) == [(utc(2026, 3, 2, 13), "missed", 3), (utc(2026, 3, 2, 16), "succeeded", 1)]


def test_runs_that_outlast_the_interval_coalesce_into_one(rig: Rig, clock: FakeClock) -> None:
    """A scheduler kept alive by its heartbeat (a long run elsewhere) finds three windows
    passed: the latest runs, the others are overruns, not missed (even with catch_up skip)."""
    s = rig.scheduler([program({"cron": "*/10 * * * *", "catch_up": "skip"})])
    at(clock, utc(2026, 3, 2, 12, 0, 5))
    s.tick()
    for _ in range(105):  # 35 minutes of heartbeats, every 20 s
        clock.advance(seconds=20)
        s.heartbeat()
    assert shown(s.tick().decisions) == [(utc(2026, 3, 2, 12, 10), "overrun", 2),
                                         (utc(2026, 3, 2, 12, 30), "succeeded", 1)]
    assert [r.started_at for r in rig.runs()] == [utc(2026, 3, 2, 12, 30)]


# -- one at a time -------------------------------------------------------------------
def test_a_run_never_overlaps_itself(rig: Rig, clock: FakeClock) -> None:
    config = SchedulerConfig(poll=timedelta(seconds=30), lease=timedelta(hours=2))
    s = rig.scheduler([program("hourly")], config=config)
    s.tick()
    at(clock, utc(2026, 3, 2, 13, 0, 10))
    # another process is running this program (its mark is valid for 60 s more)
    assert rig.book.claim("big_carts", "elsewhere", clock.now, timedelta(seconds=60))
    assert not rig.book.claim("big_carts", "A", clock.now, timedelta(seconds=60))
    assert shown(s.tick().decisions) == [(utc(2026, 3, 2, 13), "busy", 1)]
    assert rig.runs() == []
    at(clock, utc(2026, 3, 2, 13, 1, 30))  # its mark lapsed: the window runs now, once
    assert shown(s.tick().decisions) == [(utc(2026, 3, 2, 13), "succeeded", 1)]
    assert len(rig.runs()) == 1


def test_one_scheduler_is_active_and_another_takes_over_when_its_lease_lapses(
        rig: Rig, clock: FakeClock) -> None:
    spec = program({"cron": "0 * * * *", "catch_up": "skip"})
    a, b = rig.scheduler([spec], "A"), rig.scheduler([spec], "B")
    assert a.tick().leader
    standby = b.tick()
    assert not standby.leader and standby.holder == "A"
    at(clock, utc(2026, 3, 2, 13, 0, 5))
    assert shown(a.tick().decisions) == [(utc(2026, 3, 2, 13), "succeeded", 1)]
    assert b.tick().decisions == []
    # A stops answering after 13:00:05: its lease runs until 13:01:05
    at(clock, utc(2026, 3, 2, 13, 1, 0))
    assert not b.tick().leader
    at(clock, utc(2026, 3, 2, 14, 0, 50))
    took = b.tick()
    assert took.leader and took.holder == "B"
    # 14:00 fell due 50 s before B took over (within lease + poll): on time, not missed
    assert shown(took.decisions) == [(utc(2026, 3, 2, 14), "succeeded", 1)]
    at(clock, utc(2026, 3, 2, 14, 1, 0))
    back = a.tick()  # A comes back: B holds the lease now
    assert not back.leader and back.holder == "B" and back.decisions == []
    assert [r.started_at for r in rig.runs()] == [utc(2026, 3, 2, 13), utc(2026, 3, 2, 14)]


def test_schedulers_ticking_at_once_run_each_window_once(rig: Rig, clock: FakeClock) -> None:
    specs = [program("hourly")]
    schedulers = [rig.scheduler(specs, f"S{i}") for i in range(3)]
    decisions: list[Decision] = []
    leaders: list[int] = []
    lock = threading.Lock()
    for hour in range(12, 17):
        at(clock, utc(2026, 3, 2, hour, 0, 10))
        barrier = threading.Barrier(len(schedulers))

        def tick(s: Scheduler, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            report = s.tick()
            with lock:
                decisions.extend(report.decisions)
                leaders.append(report.leader)

        threads = [threading.Thread(target=tick, args=(s,)) for s in schedulers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sum(leaders) == 5  # one leader per tick
    assert sorted(d.fire_at for d in decisions) == [utc(2026, 3, 2, h) for h in range(13, 17)]
    assert [r.started_at for r in rig.runs()] == [utc(2026, 3, 2, h) for h in range(13, 17)]


def test_a_run_a_crash_interrupted_runs_again_whatever_the_policy(rig: Rig, clock: FakeClock) -> None:
    spec = program({"cron": "0 * * * *", "catch_up": "skip"})
    rig.scheduler([spec], "A").tick()
    at(clock, utc(2026, 3, 2, 13, 0, 5))
    book = rig.book
    assert book.claim("big_carts", "A", clock.now, CONFIG.lease)
    book.starting("big_carts", "A", utc(2026, 3, 2, 13))  # ... and A dies mid-run
    at(clock, utc(2026, 3, 2, 15, 30))
    decisions = rig.scheduler([spec], "B").tick().decisions
    assert shown(decisions) == [(utc(2026, 3, 2, 13), "succeeded", 1), (utc(2026, 3, 2, 14), "missed", 2)]
    assert decisions[0].detail == "resumed: its run was interrupted"
    state = book.state("big_carts")
    assert state is not None and state.running_fire is None and state.last_fire == utc(2026, 3, 2, 15)
    assert [r.started_at for r in rig.runs()] == [utc(2026, 3, 2, 13)]


# -- outcomes -------------------------------------------------------------------------
def test_a_failed_run_is_recorded_and_the_others_still_run(rig: Rig, clock: FakeClock) -> None:
    broken = program("hourly", name="broken",
                     source={"type": "csv", "path": "missing.csv", "max_bad_share": 0.5})
    s = rig.scheduler([broken, program("hourly")])
    s.tick()
    at(clock, utc(2026, 3, 2, 13, 0, 10))
    fail, ok = s.tick().decisions
    assert (fail.program, fail.status, ok.program, ok.status) == ("broken", "failed", "big_carts",
                                                                  "succeeded")
    assert "missing.csv" in (fail.detail or "")
    [run] = rig.runs("broken")
    assert run.status == "failed" and run.run_id == fail.run_id
    state = rig.book.state("broken")
    assert state is not None and (state.last_status, state.last_fire) == ("failed", utc(2026, 3, 2, 13))


def test_a_paused_program_lets_its_windows_pass(rig: Rig, clock: FakeClock) -> None:
    specs = [program("hourly", mode="paused")]
    s = rig.scheduler(lambda: specs)
    s.tick()
    at(clock, utc(2026, 3, 2, 13, 0, 10))
    assert shown(s.tick().decisions) == [(utc(2026, 3, 2, 13), "paused", 1)]
    assert rig.runs() == []
    specs[0] = program("hourly")  # live again: the next window runs, 13:00 is not made up
    at(clock, utc(2026, 3, 2, 14, 0, 10))
    assert shown(s.tick().decisions) == [(utc(2026, 3, 2, 14), "succeeded", 1)]


def test_each_tick_dispatches_and_a_stop_ends_the_loop(rig: Rig, clock: FakeClock) -> None:
    calls: list[datetime] = []

    def dispatch() -> Any:
        calls.append(clock.now)
        from ceap.delivery.dispatcher import DispatchStats
        return DispatchStats()

    s = rig.scheduler([program("hourly")], dispatch=dispatch)
    ticks: list[datetime] = []

    def wait(seconds: float) -> None:
        clock.advance(seconds=seconds)
        if len(ticks) == 3:
            s.stop.set()

    s.run(on_tick=lambda r: ticks.append(r.at), wait=wait, heartbeat=False)
    assert ticks == [T0, T0 + timedelta(seconds=30), T0 + timedelta(seconds=60)]
    assert calls == ticks  # one dispatcher pass per tick
    lease = rig.book.lease("scheduler:default")
    assert lease is not None and lease.until < clock.now  # given up at the stop: no wait to take over
    assert rig.scheduler([], "B").tick().leader


def test_a_scheduler_that_loses_its_lease_stops_after_the_current_step(rig: Rig, clock: FakeClock) -> None:
    """A holder that stalled past its lease (another took over) learns it at its next renewal
    and runs no further program, nor the dispatch pass, in that tick."""
    first, second = program("hourly", name="first"), program("hourly", name="second")
    dispatched: list[datetime] = []
    stall = threading.Event()

    def programs() -> Iterator[ProgramSpec]:
        yield first
        if stall.is_set():  # the run of `first` stalled past A's lease; B took over
            clock.advance(minutes=5)
            assert b.tick().leader
            a.heartbeat()  # A's renewal fails
        yield second

    def dispatch() -> Any:
        dispatched.append(clock.now)

    a = rig.scheduler(programs, "A", dispatch=dispatch)  # type: ignore[arg-type]
    b = rig.scheduler([], "B")  # it only takes the lease over here
    a.tick()
    assert dispatched == [T0]
    at(clock, utc(2026, 3, 2, 13, 0, 10))
    stall.set()
    report = a.tick()
    assert [d.program for d in report.decisions] == ["first"] and dispatched == [T0]
    assert [r.program for r in rig.stores[0].runs("default", None, 10)] == ["first"]


def test_a_failing_tick_ends_the_loop_and_gives_the_lease_up(rig: Rig, clock: FakeClock) -> None:
    calls = []

    def programs() -> list[ProgramSpec]:
        calls.append(clock.now)
        if len(calls) == 2:
            raise RuntimeError("store unreachable")
        return []

    s = rig.scheduler(programs)
    with pytest.raises(RuntimeError, match="store unreachable"):
        s.run(wait=lambda seconds: clock.advance(seconds=seconds), heartbeat=False)
    lease = rig.book.lease("scheduler:default")
    assert lease is not None and lease.until < clock.now


def test_a_stop_between_two_catch_up_runs_leaves_the_rest_due(rig: Rig, clock: FakeClock) -> None:
    spec = program({"cron": "0 * * * *", "catch_up": "each"})
    rig.scheduler([spec], "A").tick()
    at(clock, utc(2026, 3, 2, 15, 30))  # 13:00, 14:00 and 15:00 were missed
    b = rig.scheduler([spec], "B")
    run_one = b._run

    def run_then_stop(*args: Any, **kw: Any) -> Decision:
        decision = run_one(*args, **kw)
        b.stop.set()  # SIGTERM during the first run
        return decision

    b._run = run_then_stop  # type: ignore[method-assign]
    assert shown(b.tick().decisions) == [(utc(2026, 3, 2, 13), "succeeded", 1)]
    c = rig.scheduler([spec], "C")
    at(clock, utc(2026, 3, 2, 15, 32))
    assert shown(c.tick().decisions) == [(utc(2026, 3, 2, 14), "succeeded", 1),
                                         (utc(2026, 3, 2, 15), "succeeded", 1)]
