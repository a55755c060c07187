"""``ceap scheduler`` (run the programs on their schedules) and ``ceap schedule`` (list them)."""

from __future__ import annotations

import logging
import signal
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ceap.cli.common import JsonOption, NowOption, app, err, parse_now, state
from ceap.cli.output import Column, Sheet, show
from ceap.errors import CeapError, SpecError
from ceap.model import utcnow
from ceap.observability.logs import progress as say

if TYPE_CHECKING:
    from ceap.runtime.schedule_book import LogEntry, ProgramState
    from ceap.runtime.scheduler import Decision, TickReport
    from ceap.spec import ProgramSpec, ProjectConfig

from ceap.cli.observe import MetricsAddrOption, MetricsPortOption, start_metrics


class ProgramFolder:
    """The programs folder, read again at each tick. A file that does not load is
    reported (once per change) and left out; the others still run."""

    def __init__(self, project: ProjectConfig):
        self.folder = project.programs_dir()
        self._reported: dict[Path, str] = {}

    @property
    def failing(self) -> int:
        """How many files did not load at the last read."""
        return len(self._reported)

    def __call__(self) -> list[ProgramSpec]:
        paths = sorted([*self.folder.glob("*.yaml"), *self.folder.glob("*.yml")]) \
            if self.folder.is_dir() else []
        from ceap.spec import load_program

        specs = []
        for path in paths:
            try:
                specs.append(load_program(path))
                self._reported.pop(path, None)
            except CeapError as exc:
                lines = exc.lines() if isinstance(exc, SpecError) else [f"{path}: {exc}"]
                text = "\n".join(lines)
                if self._reported.get(path) != text:
                    self._reported[path] = text
                    for line in lines:
                        say(f"not scheduled: {line}", _print, logging.WARNING, file=str(path))
        return specs


def _local(at: datetime, tz: str) -> datetime:
    from ceap.spec.schedule import zone

    return at.astimezone(zone(tz))


class _At(str):
    """A time as ISO 8601 text (piped output) that remembers its zone (tables)."""

    at: datetime

    @classmethod
    def of(cls, at: datetime) -> _At:
        text = cls(at.isoformat())
        text.at = at
        return text


def _minutes(value: Any) -> str:
    return f"{value:%Y-%m-%d %H:%M %Z}" if isinstance(value, datetime) else ""


def decisions_sheet(decisions: list[Decision]) -> Sheet:
    sheet = Sheet("scheduler", [Column("program"), Column("window", human=_minutes), Column("status"),
                                Column("windows", right=True), Column("run_id", "run"),
                                Column("detail")])
    for d in decisions:
        sheet.add(d.program, _local(d.fire_at, d.timezone), d.status, d.windows, d.run_id, d.detail)
    return sheet


def _print(text: str) -> None:
    err.print(text, highlight=False, markup=False)


def _say_tick(report: TickReport, was: dict[str, Any]) -> None:
    """Progress lines on standard error: decisions, dispatch totals, leadership changes
    (JSON log records of ``ceap.progress`` in JSON mode, without the stamp)."""
    stamp = f"{report.at:%Y-%m-%d %H:%M:%S}Z"
    if report.leader != was.get("leader") or report.holder != was.get("holder"):
        line = ("active: running the programs on their schedules" if report.leader
                else f"standing by: scheduler {report.holder} is active")
        say(line, lambda text: _print(f"{stamp} {text}"), leader=report.leader, holder=report.holder)
    was.update(leader=report.leader, holder=report.holder)
    for d in report.decisions:
        window = f"{_local(d.fire_at, d.timezone):%Y-%m-%d %H:%M %Z}"
        extra = f" ({d.windows} windows)" if d.windows > 1 else ""
        run = f" run {d.run_id}" if d.run_id else ""
        why = f": {d.detail}" if d.detail else ""
        say(f"{d.program} {window}: {d.status}{extra}{run}{why}", lambda text: _print(f"{stamp} {text}"),
            program=d.program, window=d.fire_at.isoformat(), status=d.status, windows=d.windows,
            run_id=d.run_id)
    # in the order they ran: the journey tick writes messages the dispatch pass then sends
    j = report.journeys
    if j is not None and (j.entered or j.refused or j.moved or j.conflicts):
        say(f"journeys: entered {j.entered:,}  refused {j.refused:,}  messages {j.messages:,}  moved "
            f"{j.moved:,}  completed {j.completed:,}  exited {j.exited:,}  waiting {j.waiting:,}",
            lambda text: _print(f"{stamp} {text}"), entered=j.entered, refused=j.refused,
            messages=j.messages, moved=j.moved, completed=j.completed, exited=j.exited,
            waiting=j.waiting)
    if report.journeys_error:
        say(f"journey tick failed: {report.journeys_error}", lambda text: _print(f"{stamp} {text}"))
    s = report.dispatched
    if s is not None and (s.busy or s.requeued or s.ambiguous):
        say(f"dispatch: sent {s.sent:,}  suppressed {s.suppressed:,}  deferred "
            f"{s.deferred:,}  retrying {s.retry:,}  dead {s.dead:,}", lambda text: _print(f"{stamp} {text}"),
            sent=s.sent, suppressed=s.suppressed, deferred=s.deferred, retry=s.retry, dead=s.dead)
    if report.dispatch_error:
        say(f"dispatch failed: {report.dispatch_error}", lambda text: _print(f"{stamp} {text}"))


@app.command()
def scheduler(
    once: Annotated[bool, typer.Option("--once", help="one tick, then stop (and print what it did)")
                    ] = False,
    now: NowOption = None,
    dispatch: Annotated[bool | None, typer.Option(
        "--dispatch/--no-dispatch", help="send what is due after each tick (default: ceap.yaml's "
                                         "scheduler.dispatch)")] = None,
    journeys: Annotated[bool, typer.Option(
        "--journeys/--no-journeys", help="tick the journeys before dispatching, at most every "
                                         "ceap.yaml journeys.tick_every (default 5s)")] = True,
    as_json: JsonOption = False,
    metrics_port: MetricsPortOption = None,
    metrics_addr: MetricsAddrOption = "0.0.0.0",
) -> None:
    """Run each program on its schedule, then dispatch what is due. Of several schedulers
    on one store, one is active; SIGTERM or Ctrl-C stops it after the current step."""
    from ceap.cli.delivery import build_dispatcher
    from ceap.runtime.scheduler import Scheduler

    project = state.project()
    start_metrics(metrics_port, metrics_addr)
    at = parse_now(now)
    if at is not None and not once:
        err.print("--now needs --once (a clock that stands still would never reach the next window)")
        raise typer.Exit(2)
    store = state.open_store(project)
    lease_store = None if once else state.open_store(project)
    config = project.scheduler
    clock = (lambda: at) if at is not None else utcnow
    programs = ProgramFolder(project)
    reports: list[TickReport] = []
    try:
        dispatcher = None
        if config.dispatch if dispatch is None else dispatch:
            dispatcher = build_dispatcher(project, store, programs={}, clock=clock)

        def load() -> list[ProgramSpec]:
            specs = programs()
            if dispatcher is not None:
                dispatcher.programs = {p.name: p for p in specs}
            return specs

        ticker = None
        if journeys and project.journeys.tick_every.total_seconds() > 0:
            from ceap.journeys.ticker import ticker_for

            ticker = ticker_for(store, project, clock=clock)
        sched = Scheduler(store, project.context(state.tenant), load, config=config, clock=clock,
                          dispatch=(lambda: dispatcher.run(wait=False)) if dispatcher is not None else None,
                          journeys=ticker.maybe_tick if ticker is not None else None,
                          lease_store=lease_store)

        def on_signal(*_: Any) -> None:
            say("stopping after the current step", _print)
            sched.stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
        was: dict[str, Any] = {}

        def on_tick(report: TickReport) -> None:
            reports.append(report) if once else None
            _say_tick(report, was)

        sched.run(once=once, on_tick=on_tick)
    except typer.Exit:
        raise
    except Exception as exc:  # the store gone, say: a supervisor restarts the process
        what = str(exc) if isinstance(exc, CeapError) else f"{type(exc).__name__}: {exc}"
        say(f"error: {what}", _print, logging.ERROR, error=type(exc).__name__)
        raise typer.Exit(1) from None
    finally:
        store.close()
        if lease_store is not None:
            lease_store.close()
    if once:
        decisions = [d for r in reports for d in r.decisions]
        show(decisions_sheet(decisions), as_json,
             records=[{k: v for k, v in asdict(d).items() if k != "result"} for d in decisions])
        if any(d.status == "failed" for d in decisions):
            raise typer.Exit(1)
    else:
        say("scheduler stopped", _print)


def schedule_sheet(specs: list[ProgramSpec], states: dict[str, ProgramState], default_tz: str,
                   at: datetime, n: int) -> tuple[Sheet, list[dict[str, Any]]]:
    from ceap.runtime.scheduler import is_scheduled, next_runs

    sheet = Sheet("schedule", [Column("program"), Column("schedule"), Column("timezone"),
                               Column("catch_up", "catch-up"), Column("last_window", "last window",
                                                                      human=_minutes),
                               Column("last_status", "status"), Column("last_run", "last run"),
                               Column("next", "next run(s)",
                                      human=lambda v: ", ".join(_minutes(t.at) for t in v or []))])
    records: list[dict[str, Any]] = []
    for spec in specs:
        sched = spec.schedule
        s = states.get(spec.name)
        if sched is None or not is_scheduled(spec):
            why = "real-time: ceap worker" if getattr(spec.source, "type", None) == "events" \
                else "not scheduled"
            sheet.add(spec.name, why, None, None, None, None, None, [])
            records.append({"program": spec.name, "schedule": None, "note": why})
            continue
        tz = sched.timezone or default_tz
        upcoming = next_runs(spec, s, default_tz, at, n)
        last = _local(s.last_fire, tz) if s is not None and s.last_fire is not None else None
        status = "paused" if spec.mode == "paused" else (s.last_status if s is not None else None)
        sheet.add(spec.name, sched.cron, tz, sched.catch_up, last, status,
                  s.last_run_id if s is not None else None, [_At.of(t) for t in upcoming])
        records.append({"program": spec.name, "schedule": sched.cron, "timezone": tz,
                        "catch_up": sched.catch_up, "max_catch_up": sched.max_catch_up,
                        "mode": spec.mode, "last_window": last, "last_status": status,
                        "last_run_id": s.last_run_id if s is not None else None,
                        "skipped_windows": s.skipped if s is not None else 0,
                        "running_by": s.running_by if s is not None else None, "next": upcoming})
    return sheet, records


def history_sheet(entries: list[LogEntry], zones: dict[str, str]) -> Sheet:
    """The log, each window in its program's time zone (as last seen by the scheduler)."""
    sheet = Sheet("schedule history", [Column("program"), Column("fire_at", "window", human=_minutes),
                                       Column("status"), Column("windows", right=True),
                                       Column("run_id", "run"), Column("detail"), Column("scheduler")])
    for e in entries:
        sheet.add(e.program, _local(e.fire_at, zones.get(e.program) or "UTC"), e.status, e.windows,
                  e.run_id, e.detail, e.scheduler)
    return sheet


@app.command()
def schedule(
    upcoming: Annotated[int, typer.Option("--next", min=1, max=100, help="next runs to show")] = 3,
    history: Annotated[bool, typer.Option("--history", help="the log of windows run and skipped "
                                                            "instead")] = False,
    program: Annotated[str | None, typer.Option(help="only this program")] = None,
    limit: Annotated[int, typer.Option(min=1, help="--history: most lines")] = 50,
    now: NowOption = None,
    as_json: JsonOption = False,
) -> None:
    """Each program's schedule, time zone, catch-up policy, last run and next runs. A program
    file that does not load is reported (exit 2) and the others are listed."""
    from ceap.runtime.schedule_book import ScheduleBook

    project = state.project()
    at = parse_now(now) or utcnow()
    folder = ProgramFolder(project)
    specs = [s for s in folder() if program is None or s.name == program]
    if program is not None and not specs:
        err.print(f"no program {program!r} in {project.programs_dir()}", markup=False, highlight=False)
        raise typer.Exit(2)
    store = state.open_store(project)
    try:
        book = ScheduleBook(store, state.tenant or project.tenant)
        states = book.states()
        if history:
            entries = book.history(program, limit)
            zones = {name: st.timezone or "UTC" for name, st in states.items()}
            show(history_sheet(entries, zones), as_json, records=[asdict(e) for e in entries])
            return
        lease = book.lease(f"scheduler:{book.tenant}")
    finally:
        store.close()
    sheet, records = schedule_sheet(specs, states, project.scheduler.timezone, at, upcoming)
    show(sheet, as_json, records=records)
    if folder.failing:
        raise typer.Exit(2)
    if lease is not None and not as_json:
        alive = "active" if lease.until >= at else "lapsed"
        err.print(f"scheduler {lease.holder}: {alive} (lease until {lease.until:%Y-%m-%d %H:%M:%S}Z)",
                  markup=False, highlight=False)
