"""``ceap worker``: real-time programs over a stream, in bounded micro-batches.

Each pass polls at most ``batch`` messages (waiting at most ``wait`` seconds),
runs every live real-time program over them, stores all effects, and only then
commits the messages. Programs are re-read when their files change, so adding,
editing, pausing or removing one takes effect without a restart.
"""

from __future__ import annotations

import gc
import logging
import operator
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.compute as pc

from ceap.errors import CeapError, SpecError
from ceap.model import utcnow
from ceap.observability.metrics import WORKER_LAG, record_worker_batch
from ceap.observability.tracing import span
from ceap.outcomes.goals import record_event_outcomes
from ceap.plugin import PluginContext
from ceap.privacy.tombstone import drop_deleted
from ceap.realtime.claims import Claims, restore
from ceap.realtime.columns import column_issues
from ceap.realtime.engine import ProgramRunner
from ceap.realtime.eventtime import EPOCH, Watermarks, parse_received, rejected_rows
from ceap.realtime.keyed import KeyedState
from ceap.realtime.microbatch import DEFAULT_LATENESS, Batch, run_micro_batch
from ceap.realtime.source import StreamConnector
from ceap.realtime.spec import is_realtime
from ceap.realtime.state import index_by_customer
from ceap.realtime.status import StatusReporter
from ceap.registry import Registry
from ceap.runtime.chains import cancel_pending
from ceap.spec import load_program
from ceap.spec.program import ProgramSpec
from ceap.store.base import Store

if TYPE_CHECKING:
    from ceap.journeys.engine import TickStats
    from ceap.journeys.live import LiveJourneys
    from ceap.journeys.ticker import JourneyTicker

log = logging.getLogger(__name__)
_TOKEN = operator.attrgetter("token")  # a message's token, taken in C
#: the collector's young-generation threshold while a worker runs (Python's default: 2,000)
GC_YOUNG_THRESHOLD = 50_000
#: seconds ``--until-idle`` keeps polling a stream that has given nothing yet while it says
#: messages wait (a Kafka consumer's polls are empty until its group assigns it partitions)
JOIN_PATIENCE = 30.0


@dataclass
class WorkerStats:
    polls: int = 0
    messages: int = 0
    events: int = 0
    rejected: int = 0
    duplicates: int = 0
    late: int = 0
    candidates: int = 0
    erased: int = 0  # events of customers deleted before they arrived (docs/privacy.md)
    programs: list[str] = field(default_factory=list)
    lag: int | None = None
    journey_ticks: int = 0  # journey ticks this worker ran (docs/journeys.md)
    journey_entered: int = 0
    journey_messages: int = 0  # by its ticks, its batches' events and its wait deadlines
    journey_moved: int = 0  # entries moved by its batches' events and wait deadlines


class Worker:
    def __init__(self, store: Store, source: StreamConnector[Any], programs_dir: Path,
                 context: PluginContext, *, batch: int = 1000, wait: float = 0.05,
                 registry: Registry | None = None, reload_every: float = 1.0,
                 clock: Callable[[], datetime] = utcnow, state_url: str | None = None,
                 state_namespace: str = "ceap", stream: str = "events",
                 journeys: JourneyTicker | None = None, catch_up: int = 1):
        self.store = store
        #: ticks the journeys after a poll loop, at most every ``journeys.every`` by this
        #: worker's clock (None: never)
        self.journeys = journeys
        #: moves the entries a batch's events concern, and takes due wait deadlines, in each
        #: pass (None with no ticker: ``--no-journeys``)
        self.live_journeys: LiveJourneys | None = None
        if journeys is not None:
            from ceap.journeys.live import LiveJourneys

            journeys.clock = clock
            self.live_journeys = LiveJourneys(store, journeys.programs, clock=clock, lease=journeys.lease)
        #: the stream's name in ceap.yaml: the ``stream`` label of the worker's metrics
        self.stream = stream
        self.source = source
        self.programs_dir = Path(programs_dir)
        self.context = context
        self.batch = batch
        self.wait = wait
        #: while polls come back full (the stream is behind), up to this many polls of
        #: ``batch`` messages make one micro-batch: its fixed costs are paid once for them
        self.catch_up = max(1, catch_up)
        self.registry = registry
        self.reload_every = reload_every
        self.clock = clock
        self.runners: dict[str, tuple[float, ProgramRunner]] = {}
        #: live batch programs with action.cancel_on: the events they wait for cancel their chains
        self.cancellers: dict[str, ProgramSpec] = {}
        self.watermarks = Watermarks()  # per partition of the stream
        #: the worker's report of itself in the store (the dashboard's Real-time page)
        self.status = StatusReporter(store, context.tenant, stream, clock())
        self.stats = WorkerStats()
        self._reloaded = 0.0
        #: False until the programs were first loaded: then a program whose rows lack a column
        #: it names stops the start (later, it is logged and not run)
        self._started = False
        #: files not loaded, by the modification time of the version refused
        self._refused: dict[str, float] = {}
        self._pruned = time.monotonic()
        if state_url:  # shared by several workers
            from ceap.realtime.state_redis import RedisEventLog, RedisTimers, connect

            client = connect(state_url)
            self.log: Any = RedisEventLog(client, namespace=state_namespace)
            self.timers: Any = RedisTimers(client, self.log, stream)
        else:  # in the store: embedded (SQLite) or shared (PostgreSQL)
            from ceap.realtime.state import EventLog
            from ceap.realtime.timers import Timers

            # a partition is named by its stream and its key: both written on every row
            self.log, self.timers = EventLog(store, stream), Timers(store, stream)
        #: the customers' events in memory for the partitions this worker holds, with the
        #: store as state backend (``_hold``); otherwise history is read from the log
        self.keyed: KeyedState | None = None
        self.claims = Claims(store, context.tenant, stream) if not state_url else None
        #: on a stream whose workers share its partitions (``StreamConnector.owns_partitions``
        #: False: Redis Streams, NATS, RabbitMQ, the embedded queue), True once another worker
        #: took a partition this one held: from then on history is read from the event log
        self.shared = False

    # -- programs --------------------------------------------------------
    def reload(self, force: bool = False) -> None:
        """Pick up added, edited, paused and removed real-time programs."""
        if not force and time.monotonic() - self._reloaded < self.reload_every:
            return
        self._reloaded = time.monotonic()
        found: dict[str, Path] = {}
        for path in sorted([*self.programs_dir.glob("*.yaml"), *self.programs_dir.glob("*.yml")]):
            found[str(path)] = path
        for key in list(self.runners):
            if key not in found:
                self.cancellers.pop(key, None)
                self._refused.pop(key, None)
                runner = self.runners.pop(key)[1]
                if runner is not None:  # paused, batch or never loaded: nothing runs
                    runner.close()
                log.info("program %s removed", key)
        for key, path in found.items():
            mtime = path.stat().st_mtime
            if self._refused.get(key) == mtime or (key in self.runners and self.runners[key][0] == mtime):
                continue
            try:
                spec = load_program(path, self.registry)
            except CeapError as exc:
                self._refuse(key, mtime, exc)
                continue
            if is_realtime(spec) and spec.mode != "paused" and (issues := column_issues(spec)):
                # its rows lack a column it names: it would stop the worker at its first batch
                error = SpecError(str(path), issues)
                if not self._started:  # start-up: refuse, naming the file, as `ceap validate`
                    self.close_programs()
                    raise error
                self._refuse(key, mtime, error, spec.name)
                continue
            self._refused.pop(key, None)
            if key in self.runners and self.runners[key][1] is not None:
                self.runners.pop(key)[1].close()
            self.cancellers.pop(key, None)
            if not is_realtime(spec) and spec.mode != "paused" and spec.action.cancel_on:
                self.cancellers[key] = spec
            if is_realtime(spec) and spec.mode != "paused":
                self.runners[key] = (mtime, ProgramRunner(spec, self.context, self.store, self.registry,
                                                          timers=self.timers))
            else:
                self.runners[key] = (mtime, None)  # type: ignore[assignment]
        self._started = True
        self.stats.programs = sorted(r.spec.name for _, r in self.runners.values() if r is not None)

    def _refuse(self, key: str, mtime: float, exc: CeapError, name: str | None = None) -> None:
        """A program file not loaded: logged once per version; the last good version, if
        any, keeps running."""
        log.error("program %s not loaded: %s", name or key, exc)
        self._refused[key] = mtime
        if key not in self.runners:
            self.runners[key] = (mtime, None)  # type: ignore[assignment]

    def live(self) -> list[ProgramRunner]:
        return [r for _, r in self.runners.values() if r is not None]

    # -- one pass --------------------------------------------------------
    def step(self) -> int:
        """Poll, process, store, commit. Returns the number of messages handled."""
        self.reload()
        self._prune()
        received = self._poll()
        self.stats.polls += 1
        if not received:
            self._process(received)
        else:
            started = time.perf_counter()
            with span("ceap.worker.batch", **{"ceap.stream": self.stream, "ceap.messages": len(received)}):
                self._process(received, started)
        if self.live_journeys is not None:
            self._journeys_live(self.live_journeys.fire_deadlines)
        if self.journeys is not None:
            self._tick_journeys()
        return len(received)

    def _poll(self) -> list[Any]:
        """One poll of at most ``batch`` messages; while each comes back full, up to
        ``catch_up - 1`` more at once (no wait), all processed as one micro-batch."""
        received = self.source.poll(self.batch, self.wait)
        polls = 1
        while polls < self.catch_up and len(received) >= polls * self.batch:
            more = self.source.poll(self.batch, 0.001)
            polls += 1
            if not more:
                break
            received = [*received, *more]
        return received

    def _journeys_live(self, work: Callable[[], TickStats]) -> None:
        """Journey moves in this pass (a batch's events, due deadlines); a failure is logged:
        the events are stored, the next tick (or deadline firing) moves the entries."""
        try:
            done = work()
        except Exception:
            log.exception("journey moves failed")
            return
        self.stats.journey_moved += done.moved
        self.stats.journey_messages += done.messages

    def _tick_journeys(self) -> None:
        """The journey tick, when due and when no other ticker holds the store's lease; a
        failed tick is logged and tried again when due (the events are already stored)."""
        try:
            assert self.journeys is not None
            done = self.journeys.maybe_tick()
        except Exception:
            log.exception("journey tick failed")
            return
        if done is not None:
            self.stats.journey_ticks += 1
            self.stats.journey_entered += done.entered
            self.stats.journey_messages += done.messages

    def _process(self, received: list[Any], started: float | None = None) -> None:
        events, rejected, partitions = parse_received(received, self.context.tenant)
        if rejected:
            self._dead_letters(rejected, received)
        # customers deleted since they were sent (their partitions go with their rows)
        events, erased = drop_deleted(self.store, events.append_column("__partition", partitions))
        partitions = events.column("__partition").combine_chunks()
        events = events.drop_columns(["__partition"])
        self.stats.erased += erased
        if erased:
            log.info("dropped %d event(s) of deleted customers", erased)
        runners = self.live()
        if self.claims is not None and len(partitions) and not self.shared:
            self._hold(runners, partitions)
        bound = self.watermarks.bounds(partitions)  # lateness: against each partition's own progress
        self.watermarks.advance(events.column("ts"), partitions)
        if self.claims is not None:  # timers in the store: their ``missing`` look-up in the state
            self.timers.keyed = self.keyed
        outcome = run_micro_batch(runners, self.log, Batch(events, partitions, bound,
                                                           dict(self.watermarks.by_partition)), self.keyed)
        if self.claims is not None and len(partitions):
            self.claims.written(pc.unique(partitions).to_pylist())
        for spec in self.cancellers.values():
            cancel_pending(self.store, spec.name, spec.action.cancel_on, events)
        if events.num_rows:  # goal events and engagements among them (none in an empty poll)
            record_event_outcomes(self.store, self.programs_dir, events, self.clock())
        if self.live_journeys is not None and events.num_rows:  # stored: journeys may move on them
            live = self.live_journeys
            self._journeys_live(lambda: live.on_events(events))
        self.source.commit(list(map(_TOKEN, received)))
        self.stats.messages += len(received)
        self.stats.events += outcome["events"]
        self.stats.rejected += len(rejected)
        self.stats.duplicates += outcome["duplicates"]
        self.stats.late += outcome["late"]
        self.stats.candidates += outcome["candidates"]
        if received or outcome["candidates"]:  # timers fired while idle write candidates too
            record_worker_batch(self.stream, len(received), outcome["events"], len(rejected),
                                outcome["duplicates"], outcome["late"], outcome["candidates"],
                                time.perf_counter() - started if started is not None else None)

    def _hold(self, runners: list[ProgramRunner], partitions: Any) -> None:
        """Make the keyed state hold what the programs read, for the batch's partitions: a
        partition this worker does not hold (first seen, or taken by another worker since)
        is claimed and its state and watermark restored from the event log; new programs
        needing more event types or a longer window make every partition restored again.
        On a stream whose workers share its partitions, a partition this worker held and
        another took meanwhile means two workers read it: the state is dropped and history
        read from the event log from then on (``shared``), as restoring at nearly every
        micro-batch would cost more."""
        assert self.claims is not None
        types = set().union(*(r.event_types() for r in runners)) if runners else set()
        keep = (max((r.span() for r in runners), default=timedelta(0))
                + max((r.source.lateness for r in runners), default=DEFAULT_LATENESS))
        if self.keyed is None or not self.keyed.covers(types, keep):
            self.keyed = KeyedState(types, keep)
            self.claims.epochs.clear()
        held = set(self.claims.epochs)
        taken = self.claims.take(pc.unique(partitions).to_pylist())
        if not self.source.owns_partitions and held.intersection(taken):
            self.shared, self.keyed = True, None
            index_by_customer(self.store)
            log.info("another worker reads this stream too: history from the event log from now on")
            return
        for name in taken:
            table, mark = restore(self.store, name, self.keyed.types, self.keyed.keep, self.stream)
            self.keyed.load(name, table, None if mark is None else mark - self.keyed.keep)
            if mark is not None and mark > self.watermarks.by_partition.get(name, EPOCH):
                self.watermarks.by_partition[name] = mark
            log.info("partition %r taken over: %d events of state restored", name, table.num_rows)

    def _prune(self, every: float = 300.0) -> None:
        """Drop logged events no feature window (plus the allowed lateness) can reach any more."""
        low = self.watermarks.lowest()
        if time.monotonic() - self._pruned < every or low.year < 2000:
            return
        self._pruned = time.monotonic()
        runners = self.live()
        keep = max((r.span() + r.source.lateness for r in runners), default=timedelta(days=1))
        removed = self.log.prune(low - keep)
        if removed:
            log.info("pruned %d events older than the longest window", removed)

    def _dead_letters(self, rejected: list[tuple[int, str]], received: list[Any]) -> None:
        """Keep the rejected items in the quarantine (run id ``stream``), each as its JSON
        text, or a message that is not JSON as its body's text, with the reason."""
        log.warning("%d event(s) of %d message(s) were not valid events", len(rejected), len(received))
        rows = rejected_rows(received, rejected)
        with self.store.tx() as tx:
            tx.executemany("INSERT INTO quarantine (tenant_id, run_id, program, row, reason) "
                           "VALUES (?, ?, ?, ?, ?)",
                           [(self.context.tenant, "stream", "__events", row, reason)
                            for row, reason in rows])

    def run(self, stop: threading.Event | None = None, until_idle: bool = False,
            on_progress: Callable[[WorkerStats], None] | None = None, every: float = 2.0) -> WorkerStats:
        """Process until ``stop`` is set (or, with ``until_idle``, until the stream is drained)."""
        stop = stop or threading.Event()
        self.reload(force=True)
        if not until_idle:  # runs for long: keep the start-up heap (libraries, programs) out of
            gc.collect()    # the collector's full passes, each a pause of tens of milliseconds
            gc.freeze()
        threshold = gc.get_threshold()
        # a micro-batch makes and drops tens of thousands of short-lived objects (message dicts,
        # rows), freed by reference counting; at the default young-generation threshold (2,000)
        # the collector's search for cycles took about a third of the worker's CPU in
        # bench/realtime.py (bench/README.md), so it searches less often while the worker runs
        gc.set_threshold(max(threshold[0], GC_YOUNG_THRESHOLD), *threshold[1:])
        try:
            last = started = time.monotonic()
            idle = 0
            while not stop.is_set():
                handled = self.step()
                idle = idle + 1 if handled == 0 else 0
                if time.monotonic() - last >= every:
                    self._read_lag()
                    if on_progress:
                        on_progress(self.stats)
                    last = time.monotonic()
                if until_idle and idle >= 2 and not self._joining(started):
                    break
            self._read_lag()
        finally:
            gc.set_threshold(*threshold)
        return self.stats

    def _joining(self, started: float) -> bool:
        """Whether an idle ``--until-idle`` worker should poll on: it has had no message yet,
        the stream says some wait (a consumer group still joining), for at most
        ``JOIN_PATIENCE`` seconds."""
        if self.stats.messages or time.monotonic() - started >= JOIN_PATIENCE:
            return False
        return bool(self.source.lag())

    def _read_lag(self) -> None:
        self.stats.lag = self.source.lag()
        if self.stats.lag is not None:
            WORKER_LAG.labels(self.stream).set(self.stats.lag)
        self.status.report(self.watermarks.by_partition, self.stats.lag, self.stats.messages,
                           self.stats.events, self.clock())

    def close_programs(self) -> None:
        """Close every program's runner (the worker has none afterwards)."""
        for _, runner in self.runners.values():
            if runner is not None:
                runner.close()
        self.runners.clear()
        self.cancellers.clear()

    def close(self) -> None:
        self.close_programs()
        self.source.close()
