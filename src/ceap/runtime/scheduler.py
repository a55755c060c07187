"""The scheduler: runs each batch program on its cron schedule, then dispatches what is due.

One tick (``Scheduler.tick``):

1. take or renew the lease ``scheduler:<tenant>`` in the store: of several
   schedulers, only its holder goes on (the others try again each poll and
   take over once the holder's lease lapses);
2. for each program with a ``schedule``, decide what to do with the windows
   (cron fire times) that passed since the last one handled, mark the program
   as running (a run never overlaps itself) and run them through
   ``run_program``, the code path of ``ceap run``, with the window's time as
   the run's time;
3. with ``journeys``, the journey tick (under its own store-wide lease, at most every
   ``journeys.tick_every``: :mod:`ceap.journeys.ticker`);
4. with ``dispatch``, one dispatcher pass over what is due.

Which windows run: a window that fell due while this scheduler held the lease
(or less than ``lease + poll`` before it took it) is on time; of several on-time
windows of one program (a run that lasted longer than the interval), the latest
runs and the others are skipped as ``overrun``. Windows that fell due earlier,
while no scheduler ran, follow the program's ``catch_up``: ``skip`` runs none,
``once`` runs the latest unless an on-time window runs anyway, ``each`` runs
each (the latest ``max_catch_up``). Skipped windows are logged as ``missed``.
A window whose run started and never recorded an outcome (a crash) runs again.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ceap.delivery.dispatcher import DispatchStats, default_worker_id
from ceap.errors import CeapError
from ceap.model import utcnow
from ceap.observability import metrics
from ceap.plugin import PluginContext
from ceap.registry import Registry
from ceap.runtime.batch import RunResult, run_program
from ceap.runtime.cron import Cron
from ceap.runtime.schedule_book import ProgramState, ScheduleBook
from ceap.spec.program import ProgramSpec
from ceap.spec.schedule import SchedulerConfig, zone
from ceap.store.base import Store

log = logging.getLogger(__name__)
#: the time a lease given up is made to end at (long ago, whatever the clock says)
RELEASED = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Decision:
    """What a tick did with one program's windows (one run, or a group of skipped ones)."""

    program: str
    fire_at: datetime
    status: str  # succeeded, failed, skipped (a run's status), missed, overrun, paused, busy
    timezone: str
    run_id: str | None = None
    windows: int = 1
    detail: str | None = None
    result: RunResult | None = field(default=None, compare=False, repr=False)


@dataclass
class TickReport:
    at: datetime
    leader: bool
    holder: str | None  # the active scheduler (this one when leader)
    decisions: list[Decision] = field(default_factory=list)
    dispatched: DispatchStats | None = None
    dispatch_error: str | None = None
    journeys: Any = None  # the journey tick's TickStats, when one ran
    journeys_error: str | None = None


def is_scheduled(spec: ProgramSpec) -> bool:
    return spec.schedule is not None and getattr(spec.source, "type", None) != "events"


def next_runs(spec: ProgramSpec, state: ProgramState | None, default_tz: str, at: datetime,
              n: int) -> list[datetime]:
    """The next ``n`` windows of a scheduled program after ``at`` (or after its last window,
    when that is later), in the schedule's time zone; [] when it is not scheduled."""
    if spec.schedule is None or not is_scheduled(spec):
        return []
    tz = spec.schedule.timezone or default_tz
    after = max(at, state.last_fire) if state is not None and state.last_fire is not None else at
    return [t.astimezone(zone(tz)) for t in Cron(spec.schedule.cron, tz).next(after, n)]


class Scheduler:
    """Runs ``programs()`` (read again each tick) on their schedules, for ``context.tenant``."""

    def __init__(self, store: Store, context: PluginContext,
                 programs: Callable[[], Sequence[ProgramSpec]], *,
                 config: SchedulerConfig | None = None,
                 dispatch: Callable[[], DispatchStats] | None = None,
                 journeys: Callable[[Sequence[ProgramSpec]], Any] | None = None,
                 clock: Callable[[], datetime] = utcnow, holder: str | None = None,
                 registry: Registry | None = None, lease_store: Store | None = None,
                 say: Callable[[str], None] | None = None):
        self.store = store
        self.context = context
        self.programs = programs
        self.config = config or SchedulerConfig()
        self.dispatch = dispatch
        #: the journey tick, given the programs of this tick (``JourneyTicker.maybe_tick``)
        self.journeys = journeys
        self.clock = clock
        self.holder = holder or default_worker_id()
        self.registry = registry
        self.book = ScheduleBook(store, context.tenant)
        #: the heartbeat writes through its own connection when given one, so a long
        #: write of a run does not hold the lease back
        self.lease_book = ScheduleBook(lease_store or store, context.tenant)
        self.lease_name = f"scheduler:{context.tenant}"
        self.say = say or (lambda line: log.info("%s", line))
        self.stop = threading.Event()
        self._running: str | None = None  # the program whose run is going on
        self._lost = threading.Event()  # the heartbeat could not renew the lease
        self._leading = False  # held the lease at the last tick
        self._exported: set[str] = set()  # programs whose schedule gauges this scheduler set

    @property
    def grace(self) -> timedelta:
        """A window this much older than the lease's hold is still on time (a takeover's gap)."""
        return self.config.lease + self.config.poll

    # -- one tick ------------------------------------------------------------------
    def tick(self) -> TickReport:
        now = self.clock()
        metrics.SCHEDULER_LAST_TICK.labels(self.context.tenant).set(now.timestamp())
        lease = self.book.acquire(self.lease_name, self.holder, now, self.config.lease)
        if lease is None:
            current = self.book.lease(self.lease_name)
            if self._leading:  # a standby exports no schedule: the active scheduler's count
                self._unexport(set(self._exported))
            self._leading = False
            metrics.SCHEDULER_LEADER.labels(self.context.tenant).set(0)
            return TickReport(now, False, current.holder if current else None)
        self._leading = True
        metrics.SCHEDULER_LEADER.labels(self.context.tenant).set(1)
        self._lost.clear()
        report = TickReport(now, True, self.holder)
        scheduled: list[ProgramSpec] = []
        specs = self.programs()
        for spec in specs:
            if self.stop.is_set() or self._lost.is_set():
                break
            if is_scheduled(spec):
                scheduled.append(spec)
                report.decisions.extend(self._program(spec, lease.since))
        self._export(scheduled, report.decisions)
        # a program removed, unscheduled or made real-time: its gauges go (no false "late")
        self._unexport(self._exported - {s.name for s in specs if is_scheduled(s)})
        if self.journeys is not None and not self.stop.is_set() and not self._lost.is_set():
            try:  # before dispatching: the messages it writes go out in this tick
                report.journeys = self.journeys(specs)
            except Exception as exc:  # the next tick tries again
                log.exception("journey tick failed")
                report.journeys_error = f"{type(exc).__name__}: {exc}"
        if self.dispatch is not None and not self.stop.is_set() and not self._lost.is_set():
            try:
                report.dispatched = self.dispatch()
            except Exception as exc:  # the next tick tries again; runs are not held back
                log.exception("dispatch failed")
                report.dispatch_error = f"{type(exc).__name__}: {exc}"
        return report

    def _export(self, specs: list[ProgramSpec], decisions: list[Decision]) -> None:
        """The schedule metrics: windows by status, each program's last success and the next
        window not handled yet (in the past when the program is late). Two reads per tick."""
        for d in decisions:
            metrics.SCHEDULE_WINDOWS.labels(d.program, d.status).inc(d.windows)
        if not specs:
            return
        states = self.book.states()
        scheduled = {s.name for s in specs}
        for program, at in self.book.last_successes().items():
            if program in scheduled:
                metrics.SCHEDULE_LAST_SUCCESS.labels(program).set(at.timestamp())
        for spec in specs:
            state = states.get(spec.name)
            if state is None or spec.schedule is None:
                continue
            cron = Cron(spec.schedule.cron, spec.schedule.timezone or self.config.timezone)
            upcoming = cron.next(state.last_fire or state.first_seen)
            if upcoming:
                metrics.SCHEDULE_NEXT.labels(spec.name).set(upcoming[0].timestamp())
                self._exported.add(spec.name)

    def _unexport(self, programs: set[str]) -> None:
        for program in programs:
            for gauge in (metrics.SCHEDULE_NEXT, metrics.SCHEDULE_LAST_SUCCESS):
                with contextlib.suppress(KeyError):  # never set for this program
                    gauge.remove(program)
            self._exported.discard(program)

    def _program(self, spec: ProgramSpec, tenure: datetime) -> list[Decision]:
        schedule = spec.schedule
        assert schedule is not None
        tz = schedule.timezone or self.config.timezone
        cron = Cron(schedule.cron, tz)
        now = self.clock()
        state = self.book.ensure(spec.name, schedule.cron, tz, now)
        start = state.last_fire or state.first_seen
        resume = state.running_fire if state.running_fire and state.running_fire > start else None
        if resume is not None:  # a run that never recorded its outcome: it runs again first
            start = resume
        recent, count, capped = cron.between(start, now, schedule.max_catch_up + 1)
        if not count and resume is None:
            return []
        if not self.book.claim(spec.name, self.holder, now, self.config.lease):
            other = self.book.state(spec.name)
            return [Decision(spec.name, recent[-1] if recent else now, "busy", tz,
                             detail=f"still running under {other.running_by if other else '?'}")]
        decisions: list[Decision] = []
        self._running = spec.name
        try:
            if spec.mode == "paused":  # its windows pass, unrun and not made up later
                last = recent[-1] if recent else resume
                assert last is not None
                self.book.record(spec.name, last, "paused", now, holder=self.holder, log=False)
                decisions.append(Decision(spec.name, last, "paused", tz, windows=max(count, 1)))
                return decisions
            runs, skips = self._plan(cron, start, tenure, recent, count, capped, schedule.catch_up,
                                     schedule.max_catch_up) if count else ([], [])
            if resume is not None:
                runs.insert(0, resume)
            # in window order, so a stop between two runs leaves the rest due, not passed
            steps = sorted([(w, None) for w in runs] + [(g[0], g) for g in skips],
                           key=lambda step: step[0])
            for fire_at, group in steps:
                if group is not None:
                    first, last, n, status, why = group
                    self.book.record(spec.name, first, status, now, holder=self.holder, windows=n,
                                     detail=why, last=last)
                    decisions.append(Decision(spec.name, first, status, tz, windows=n, detail=why))
                elif self.stop.is_set() or self._lost.is_set():
                    break
                else:
                    decisions.append(self._run(spec, fire_at, tz, resumed=fire_at == resume))
        finally:
            self._running = None
            self.book.unclaim(spec.name, self.holder)
        return decisions

    def _plan(self, cron: Cron, start: datetime, tenure: datetime, recent: list[datetime], count: int,
              capped: bool, policy: str, max_catch_up: int
              ) -> tuple[list[datetime], list[tuple[datetime, datetime, int, str, str]]]:
        """The windows to run, and the groups to skip as (first, last, count, status, why).

        ``recent`` holds the latest windows after ``start`` (ascending), ``count`` all of them."""
        cutoff = tenure - self.grace
        on_time = [w for w in recent if w >= cutoff]
        more = "at least " if capped else ""
        first = cron.next(start)[0]
        overrun = "earlier window(s) passed while a run was going on"
        if len(on_time) == len(recent):  # every window seen is recent: the latest stands for all
            return [recent[-1]], [(first, recent[-2], count - 1, "overrun", f"{more}{count - 1} {overrun}")
                                  ] if count > 1 else []
        late = [w for w in recent if w < cutoff]
        late_count = count - len(on_time)
        missed = f"{more}{late_count} window(s) passed while no scheduler ran"
        runs: list[datetime] = []
        skips: list[tuple[datetime, datetime, int, str, str]] = []
        if policy == "skip" or (policy == "once" and on_time):
            skips.append((first, late[-1], late_count, "missed",
                          f"{missed} (catch_up: {policy}{'; a window on time runs' if on_time else ''})"))
        elif policy == "once":
            if late_count > 1:
                skips.append((first, late[-2], late_count - 1, "missed",
                              f"{missed}; the latest runs (catch_up: once)"))
            runs.append(late[-1])
        else:  # each
            keep = late[-max_catch_up:]
            if late_count > len(keep):
                skips.append((first, _before(cron, keep[0]), late_count - len(keep), "missed",
                              f"{missed}; the latest {len(keep)} run (catch_up: each, "
                              f"max_catch_up: {max_catch_up})"))
            runs.extend(keep)
        if on_time:
            if len(on_time) > 1:
                skips.append((on_time[0], on_time[-2], len(on_time) - 1, "overrun",
                              f"{len(on_time) - 1} {overrun}"))
            runs.append(on_time[-1])
        return runs, skips

    def _run(self, spec: ProgramSpec, fire_at: datetime, tz: str, resumed: bool) -> Decision:
        self.book.starting(spec.name, self.holder, fire_at)
        note = "resumed: its run was interrupted" if resumed else None
        result: RunResult | None = None
        error: str | None = None
        try:
            result = run_program(spec, self.store, self.context, now=fire_at, registry=self.registry)
            run = result.run
        except CeapError as exc:  # recorded as a failed run by run_program
            error, run = str(exc), exc.run
        run_id = run.run_id if run is not None else None
        status = run.status if run is not None else "failed"
        self.book.record(spec.name, fire_at, status, self.clock(), holder=self.holder, run_id=run_id,
                         run_at=run.started_at if run is not None else None,
                         detail="; ".join(x for x in (note, error) if x) or None)
        return Decision(spec.name, fire_at, status, tz, run_id=run_id, detail=error or note,
                        result=result)

    # -- the loop -------------------------------------------------------------------
    def heartbeat(self) -> None:
        """Renew the lease (and the running program's mark) once; called every lease/3."""
        now = self.clock()
        if self.lease_book.acquire(self.lease_name, self.holder, now, self.config.lease) is None:
            self._lost.set()
            return
        program = self._running
        if program is not None:
            self.lease_book.renew(program, self.holder, now + self.config.lease)

    def _beat(self) -> None:
        every = self.config.lease.total_seconds() / 3
        while not self.stop.wait(every):
            try:
                self.heartbeat()
            except Exception:  # a failed renewal is a lost lease: the tick stops after its step
                log.exception("lease renewal failed")
                self._lost.set()

    def run(self, once: bool = False, on_tick: Callable[[TickReport], None] | None = None,
            wait: Callable[[float], Any] | None = None, heartbeat: bool = True) -> None:
        """Tick until ``stop`` is set (after one tick with ``once``); give the lease up at the end."""
        beat = None
        if heartbeat and not once:
            beat = threading.Thread(target=self._beat, name="ceap-scheduler-lease", daemon=True)
            beat.start()
        wait = wait or self.stop.wait
        try:
            while not self.stop.is_set():
                report = self.tick()
                if on_tick:
                    on_tick(report)
                if once:
                    break
                wait(self.config.poll.total_seconds())
        finally:
            self.stop.set()
            if beat is not None:
                beat.join()
            try:
                # lapsed long ago, not "as of this clock": ``--once --now`` in the future must
                # not keep the other schedulers standing by until that time
                self.book.release(self.lease_name, self.holder, RELEASED)
            except Exception:
                log.exception("could not give the lease up (it lapses by itself)")


def _before(cron: Cron, at: datetime) -> datetime:
    """The window before ``at``."""
    return next(w for w in cron.upto(at - timedelta(microseconds=1)))


__all__ = ["Decision", "Scheduler", "TickReport", "is_scheduled"]
