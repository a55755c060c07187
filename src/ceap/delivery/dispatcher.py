"""The dispatcher: claims due candidates, applies the policies, plans
deliveries in the outbox, then sends due attempts through their channels.

One pass (``step``) does both halves once; ``run`` repeats passes until
nothing is due (or forever with ``follow``). Several dispatchers may run
against one PostgreSQL store: every claim is a lease taken with
``FOR UPDATE SKIP LOCKED``.

The parts, one module each: ``dispatch_plan`` (candidates to planned
deliveries), ``dispatch_prepare`` (due attempts claimed and rendered),
``dispatch_send`` (a batch at its providers), ``dispatch_outcomes`` (results
recorded); ``dispatch_state`` holds the stats and the shared attributes. This
module sets them up and runs the loop.
"""

from __future__ import annotations

import gc
import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from datetime import datetime, timedelta
from typing import Any

from ceap.channels.base import Channel
from ceap.delivery.dispatch_plan import CandidatePlanner
from ceap.delivery.dispatch_prepare import AttemptPreparer
from ceap.delivery.dispatch_send import BatchSender
from ceap.delivery.dispatch_state import Batch, DispatchStats, default_worker_id
from ceap.delivery.held import export_totals
from ceap.delivery.model import Profile
from ceap.delivery.outbox import Outbox, Recovery, Retry
from ceap.delivery.policy import Policy, Reachable
from ceap.delivery.render import PlainRenderer, Renderer
from ceap.delivery.resilience import Bucket, CircuitBreaker, SharedTokenBucket, TokenBucket
from ceap.model import Candidate, utcnow
from ceap.observability import metrics
from ceap.observability.tracing import span
from ceap.store.base import Store

__all__ = ["DispatchStats", "Dispatcher", "default_worker_id"]

log = logging.getLogger(__name__)

#: the young generation's threshold while a run lasts (Python's default: 700): a run holds
#: two batches' messages, tens of thousands of objects, which each young collection walked
GC_YOUNG_THRESHOLD = 50_000


class _Heap:
    """The collector's settings while runs last in this process (``settled_heap``)."""

    lock = threading.Lock()
    runs = 0
    threshold: tuple[int, int, int] = (700, 10, 10)
    froze = False


@contextmanager
def settled_heap() -> Iterator[None]:
    """While a run lasts, the heap it started with (libraries, config, the store) is frozen
    (``gc.freeze``), so the collector's full passes walk only what the run made (two of
    them cost about 18 µs a message in a 10,000-message run: bench/README.md, issue 11),
    and the young generation is collected after 50,000 new objects rather than 700 (at
    10,000, 11 young collections cost 5 µs a message in that run). Both
    are undone when the last run in the process ends; a heap something else froze is left
    as it is. Objects are still freed by reference counting as soon as they are dropped;
    only cycles wait for a collection."""
    with _Heap.lock:
        _Heap.runs += 1
        if _Heap.runs == 1:
            threshold = gc.get_threshold()
            _Heap.threshold = threshold
            gc.set_threshold(max(threshold[0], GC_YOUNG_THRESHOLD), *threshold[1:])
            _Heap.froze = gc.isenabled() and gc.get_freeze_count() == 0
            if _Heap.froze:
                gc.freeze()
    try:
        yield
    finally:
        with _Heap.lock:
            _Heap.runs -= 1
            if _Heap.runs == 0:
                gc.set_threshold(*_Heap.threshold)
                if _Heap.froze:
                    gc.unfreeze()


class Dispatcher(CandidatePlanner, AttemptPreparer, BatchSender):
    def __init__(
        self,
        store: Store,
        channels: dict[str, Channel[Any]],
        *,
        programs: dict[str, Any] | None = None,
        policies: Sequence[Policy] | None = None,
        renderer: Renderer | None = None,
        worker: str | None = None,
        lease: timedelta = timedelta(seconds=30),
        batch_size: int = 500,
        retry: Retry | None = None,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] | None = None,
        shared_limits: bool = True,
        pipeline: bool = True,
        settle_heap: bool = True,
    ):
        self.store = store
        self.channels = channels
        self.programs = programs
        self.policies: list[Policy] = [Reachable(), *(policies or [])]
        self.renderer = renderer or PlainRenderer()
        self.outbox = Outbox(store, worker or default_worker_id(), lease)
        self.batch_size = batch_size
        #: seconds between two reads of the store's delivery totals for ceap_store_deliveries
        self.totals_every = 15.0
        #: prepare the next pass while this one's messages are with the providers (``run``)
        self.pipeline = pipeline
        #: keep the heap a run starts with out of the collector's passes while it runs
        #: (``settled_heap``)
        self.settle_heap = settle_heap
        self._store_dialect: str | None = None
        #: candidates this dispatcher just planned, so sending them needs no second read
        self._planned: dict[int, tuple[Candidate, Profile | None]] = {}
        self._in_hand: set[int] = set()
        self._in_hand_lock = threading.Lock()
        self.retry = retry or Retry()
        self.clock = clock
        self.rng = rng or random.Random()
        #: how a one-shot run waits for a rate limit's next token (default: a real wait,
        #: cut short by ``run``'s ``stop``); a test with a fake clock advances it instead
        self.sleep = sleep
        #: channel -> (due deliveries held back, why), as the last ``run`` left them
        self.held: dict[str, tuple[int, str]] = {}
        self.unconfigured = set()
        # a clock given for tests (or replays) also times the breakers' cool-downs and buckets
        tick = time.monotonic if clock is utcnow else (lambda: self.clock().timestamp())
        self.breakers = {name: CircuitBreaker(ch.config.breaker_failures, ch.config.breaker_cooldown,
                                              clock=tick)
                         for name, ch in channels.items()}
        # rate limits are kept in the store (shared by every dispatcher on it) unless asked
        # otherwise; their clock is the epoch's, the same in every process
        epoch = time.time if clock is utcnow else (lambda: self.clock().timestamp())
        self.buckets: dict[str, Bucket] = {}
        for name, ch in channels.items():
            rate = ch.config.rate_per_sec or ch.default_rate_per_sec
            if rate:
                self.buckets[name] = (SharedTokenBucket(store, f"channel:{name}", rate, max(rate, 1.0),
                                                        clock=epoch) if shared_limits
                                      else TokenBucket(rate, burst=max(rate, 1.0), clock=tick))

    # -- the two halves ------------------------------------------------------
    def recover(self) -> Recovery:
        """Resolve attempts a crashed worker left in flight (see ``Outbox.recover``)."""
        resend = {name for name, ch in self.channels.items()
                  if ch.provider_dedup or ch.config.resend_in_flight}
        dedup = {name for name, ch in self.channels.items() if ch.provider_dedup}
        found = self.outbox.recover(self.clock(), resend, dedup)
        # one line per channel and outcome
        for group, what, outcome in ((found.ambiguous, "marked ambiguous, not resent", "ambiguous"),
                                     (found.requeued, "resent (reported as ambiguous)", "requeued")):
            by_channel: dict[str, list[int]] = defaultdict(list)
            for d in group:
                by_channel[d.channel].append(d.id)
            for channel, ids in by_channel.items():
                metrics.record_deliveries(channel, {outcome: len(ids)})
                shown = ", ".join(map(str, ids[:10])) + (", ..." if len(ids) > 10 else "")
                log.warning("%d delivery attempt(s) on %s were in flight at a crash: %s "
                            "(deliveries %s)", len(ids), channel, what, shown)
        return found

    def send(self) -> DispatchStats:
        """Claim the due attempts, render them and hand them to their channels."""
        with span("ceap.dispatch.send") as current:
            batch = self._prepare()
            batch.stats.add(self._send_batch(batch))
            stats = batch.stats
            if current is not None:
                current.set_attribute("ceap.leased", stats.leased)
                current.set_attribute("ceap.sent", stats.sent)
            return stats

    # -- loops -------------------------------------------------------------
    def step(self) -> DispatchStats:
        stats = self.plan()
        stats.add(self.send())
        return stats

    def _pass(self) -> Batch:
        """Plan newly due candidates, then claim and render due attempts (not sent yet)."""
        stats = self.plan()
        batch = self._prepare()
        stats.add(batch.stats)
        batch.stats = stats
        return batch

    def run(self, follow: bool = False, poll: float = 1.0,
            stop: threading.Event | None = None,
            on_step: Callable[[DispatchStats], None] | None = None,
            on_wait: Callable[[dict[str, int], float], None] | None = None,
            wait: bool = True) -> DispatchStats:
        """Recover, then dispatch until nothing is due (or until ``stop`` with ``follow``).

        Passes are pipelined (unless ``pipeline`` is off): while one pass's messages are
        with the providers, a second thread plans the next candidates and claims and
        renders the next attempts, which stay ``queued`` (no attempt counted) until their
        own turn, so a crash still leaves ``sending`` only what was at a provider.

        Without ``follow`` the run finishes what is due within the rate limits: when the
        only due work left is held by a channel's rate limit, it waits for the next token
        (``on_wait(due per channel, seconds)`` is told first) and goes on; ``wait=False``
        (a scheduler's pass) stops instead. It stops at once when ``stop`` is set; what
        is still due then, and what an open circuit breaker holds, is counted in
        ``held_rate_limit``/``held_circuit_open`` and detailed per channel in ``self.held``.
        While it runs, the heap it started with is out of the collector's passes
        (``settled_heap``; ``settle_heap=False``: not)."""
        with settled_heap() if self.settle_heap else nullcontext():
            return self._run(follow, poll, stop, on_step, on_wait, wait)

    def _run(self, follow: bool, poll: float, stop: threading.Event | None,
             on_step: Callable[[DispatchStats], None] | None,
             on_wait: Callable[[dict[str, int], float], None] | None, wait: bool) -> DispatchStats:
        total = DispatchStats()
        found = self.recover()
        total.requeued, total.ambiguous = len(found.requeued), len(found.ambiguous)
        stop = stop or threading.Event()
        self.held = {}
        read_at: float | None = None
        idle = 0  # passes in a row that found tokens but nothing to claim
        ahead = ThreadPoolExecutor(1, thread_name_prefix="ceap-dispatch-ahead") if self.pipeline else None
        batch: Batch | None = None
        try:
            while not stop.is_set():
                if batch is None:
                    batch = self._pass()
                following: Future[Batch] | None = None
                if batch.work and ahead is not None:
                    following = ahead.submit(self._pass)
                stats = batch.stats
                stats.add(self._send_batch(batch))
                total.add(stats)
                if on_step:
                    on_step(total)
                if read_at is None or time.monotonic() - read_at >= self.totals_every:
                    self.export_store_totals()
                    read_at = time.monotonic()
                batch = following.result() if following is not None else None
                if batch is not None and not batch.stats.busy:  # it looked before these results
                    total.add(batch.stats)                      # (a fallback, a retry): look again
                    batch = None
                if stats.busy or batch is not None:
                    continue
                if not follow:
                    seconds, due = self._rate_wait() if wait else (None, {})
                    idle = idle + 1 if seconds == 0 else 0
                    if seconds is None or idle > 2:  # nothing held by a rate limit (or not ours)
                        break
                    if on_wait:
                        on_wait(due, seconds)
                    if self.sleep is not None:
                        self.sleep(seconds)
                    else:
                        stop.wait(seconds)
                    continue
                stop.wait(poll)
                found = self.recover()
                total.requeued += len(found.requeued)
                total.ambiguous += len(found.ambiguous)
        finally:
            if batch is not None:  # prepared, never sent: the attempts are due again at once
                total.add(batch.stats)
                self._abandon(batch)
            if ahead is not None:
                ahead.shutdown(wait=True)
            # what this run planned (born leased to it) and did not send: anyone's now
            # (if the store fails here, the leases simply run out)
            try:
                self.outbox.release_all()
            except Exception as exc:
                log.warning("could not release this dispatcher's leases (%s): they run out in %s",
                            type(exc).__name__, self.outbox.lease)
        if not follow:
            self.held = self._held()
            total.held_rate_limit = sum(n for n, why in self.held.values() if why.startswith("rate"))
            total.held_circuit_open = sum(n for n, why in self.held.values() if why.startswith("circuit"))
        self.export_store_totals()
        return total

    def export_store_totals(self) -> None:
        """Set ``ceap_store_deliveries`` from the store (at most every ``totals_every``
        seconds while the loop runs, and when it ends)."""
        export_totals(self.store)

    def _rate_wait(self) -> tuple[float | None, dict[str, int]]:
        """Seconds until a rate-limited channel with due work may send again (None: no
        such channel; an open breaker's channel is not waited for), and its due count."""
        due = {ch: n for ch, n in self.outbox.due(self.clock()).items()
               if ch in self.buckets and self.breakers[ch].state != "open"}
        if not due:
            return None, {}
        return min(self.buckets[ch].wait() for ch in due), due

    def _held(self) -> dict[str, tuple[int, str]]:
        held: dict[str, tuple[int, str]] = {}
        for ch, n in self.outbox.due(self.clock()).items():
            if ch not in self.channels:
                continue
            if self.breakers[ch].state == "open":
                held[ch] = (n, f"circuit open after {self.channels[ch].config.breaker_failures} "
                               "failures in a row")
            elif ch in self.buckets:
                held[ch] = (n, f"rate limit {self.buckets[ch].rate:g}/s")
        return held
