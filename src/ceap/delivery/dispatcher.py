"""The dispatcher: claims due candidates, applies the policies, plans
deliveries in the outbox, then sends due attempts through their channels.

One pass (``step``) does both halves once; ``run`` repeats passes until
nothing is due (or forever with ``follow``). Several dispatchers may run
against one PostgreSQL store: every claim is a lease taken with
``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any, cast

from ceap.channels.base import Channel, Message, SendResult
from ceap.delivery.digest import flush_digests
from ceap.delivery.held import export_totals
from ceap.delivery.journal import AttemptJournal
from ceap.delivery.model import Decision, Delivery, Profile, counted
from ceap.delivery.outbox import Outbox, Recovery, Retry
from ceap.delivery.policies.caps import FrequencyCaps
from ceap.delivery.policy import Policy, PolicyContext, Reachable
from ceap.delivery.profiles import load_profiles
from ceap.delivery.render import PlainRenderer, Rendered, Renderer
from ceap.delivery.resilience import Bucket, CircuitBreaker, SharedTokenBucket, TokenBucket
from ceap.delivery.timed_journal import TimedJournal
from ceap.model import Candidate, utcnow
from ceap.observability import metrics
from ceap.observability.tracing import span
from ceap.store.base import Store

log = logging.getLogger(__name__)


@dataclass
class DispatchStats:
    expired: int = 0
    claimed: int = 0
    planned: int = 0
    suppressed: int = 0
    deferred: int = 0
    leased: int = 0      # due deliveries claimed for sending
    attempted: int = 0   # of those, handed to a provider (marked sending, an attempt counted)
    sent: int = 0
    retry: int = 0
    dead: int = 0
    fallback: int = 0
    shadow: int = 0
    requeued: int = 0
    ambiguous: int = 0
    #: due deliveries a one-shot run left queued: a rate limit (the run was stopped while
    #: waiting for it) or an open circuit breaker held them back (see ``Dispatcher.held``)
    held_rate_limit: int = 0
    held_circuit_open: int = 0

    def add(self, other: DispatchStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @property
    def busy(self) -> bool:
        return bool(self.claimed or self.leased)


@dataclass
class _Batch:
    """One pass's claimed and rendered attempts, per channel, waiting for their providers."""

    stats: DispatchStats
    work: dict[str, list[tuple[Delivery, Message]]]


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(32):08x}"


class Dispatcher:
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
        self._store_dialect: str | None = None
        #: candidates this dispatcher just planned, so sending them needs no second read
        self._planned: dict[int, tuple[Candidate, Profile | None]] = {}
        self.retry = retry or Retry()
        self.clock = clock
        self.rng = rng or random.Random()
        #: how a one-shot run waits for a rate limit's next token (default: a real wait,
        #: cut short by ``run``'s ``stop``); a test with a fake clock advances it instead
        self.sleep = sleep
        #: channel -> (due deliveries held back, why), as the last ``run`` left them
        self.held: dict[str, tuple[int, str]] = {}
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

    def plan(self) -> DispatchStats:
        with span("ceap.dispatch.plan") as current:
            stats = self._plan()
            metrics.record_dispatch_plan(stats.__dict__)
            if current is not None:
                current.set_attribute("ceap.claimed", stats.claimed)
            return stats

    def _plan(self) -> DispatchStats:
        stats = DispatchStats()
        now = self.clock()
        flush_digests(self, now)  # due digests become candidates (ceap.delivery.digest)
        stats.expired = self.outbox.expire(now)
        active = None
        if self.programs is not None:
            active = [n for n, p in self.programs.items() if getattr(p, "mode", "live") != "paused"]
        claimed = self.outbox.claim_candidates(now, self.batch_size, active)
        stats.claimed = len(claimed)
        if not claimed:
            return stats
        decisions = [self._initial(c) for c in claimed]
        profiles = load_profiles(self.store, {(c.tenant_id, c.customer_id) for c in claimed})
        ctx = PolicyContext(now, self.store, profiles,
                            {n: ch.address for n, ch in self.channels.items()},
                            self.programs or {})
        with self._customers_locked(claimed):
            for policy in self.policies:
                live = [(c, d) for c, d in zip(claimed, decisions, strict=True)
                        if d.suppress is None and d.defer_until is None]
                if not live:
                    break
                changed = policy.apply([c for c, _ in live], [d for _, d in live], ctx)
                by_id = {d.candidate_id: d for d in changed}
                decisions = [by_id.get(d.candidate_id, d) for d in decisions]
            counts = self.outbox.plan({c.id: c for c in claimed}, decisions, now)
        if len(self._planned) > 8 * self.batch_size:  # attempts planned long ago: re-read them
            self._planned.clear()
        self._planned.update((c.id, (c, profiles.get((c.tenant_id, c.customer_id))))
                             for c, d in zip(claimed, decisions, strict=True) if d.send)
        stats.planned, stats.suppressed, stats.deferred = (
            counts["planned"], counts["suppressed"], counts["deferred"])
        return stats

    @contextmanager
    def _customers_locked(self, claimed: Sequence[Candidate]) -> Iterator[None]:
        """With frequency caps on PostgreSQL: run the policies and write the plan in one
        transaction that holds an advisory lock per claimed customer (taken in key order,
        so two dispatchers never wait on each other in a circle). A dispatcher that claimed
        another candidate of the same customer waits until this plan is committed, then
        counts its deliveries: a cap holds across dispatchers. Elsewhere: nothing."""
        capped = any(isinstance(p, FrequencyCaps) and not p.config.caps.empty for p in self.policies)
        if not capped or self._dialect() != "postgres":
            yield
            return
        keys = sorted({zlib.crc32(f"{c.tenant_id}\x00{c.customer_id}".encode()) - 2**31
                       for c in claimed})
        with self.store.tx() as tx:
            tx.execute("SELECT count(pg_advisory_xact_lock(4243, k)) FROM "
                       "(SELECT unnest(?::int[]) AS k ORDER BY k) AS keys", (keys,))
            yield

    def _dialect(self) -> str:
        if self._store_dialect is None:
            with self.store.tx() as tx:
                self._store_dialect = tx.dialect
        return self._store_dialect

    def _initial(self, c: Candidate) -> Decision:
        spec = (self.programs or {}).get(c.program)
        fallback = getattr(getattr(spec, "action", None), "deliver", "fallback") != "all"
        known = tuple(ch for ch in c.channels if ch in self.channels)
        if not known:
            return Decision(c.id, suppress="no_channel",
                            note=f"no configured channel among {', '.join(c.channels)}")
        return Decision(c.id, send=known, fallback=fallback)

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

    def _prepare(self) -> _Batch:
        """Claim due attempts (leases: still ``queued``, no attempt counted), load their
        candidates and render their messages; record template failures and shadows."""
        stats = DispatchStats()
        now = self.clock()
        quotas: dict[str, int] = {}
        states = [(name, self.breakers[name].state) for name in self.channels]
        metrics.set_breakers(states)
        for name, state in states:
            breaker = self.breakers[name]
            if state == "open":
                self.outbox.fail_over(name, "circuit open", now)
            quota = breaker.allowance(self.batch_size)
            if name in self.buckets and quota:
                quota = self.buckets[name].acquire(quota)
            quotas[name] = quota
        claimed = self.outbox.claim_deliveries(now, quotas)
        stats.leased = len(claimed)
        batch = _Batch(stats, {})
        if self.buckets:  # tokens taken for attempts that were not due go back
            got: dict[str, int] = defaultdict(int)
            for d in claimed:
                got[d.channel] += 1
            for name, bucket in self.buckets.items():
                bucket.refund(quotas.get(name, 0) - got[name])
        if not claimed:
            return batch
        cached = {i: self._planned.pop(i) for i in {d.candidate_id for d in claimed}
                  if i in self._planned}
        candidates = {i: c for i, (c, _) in cached.items()}
        profiles = {(c.tenant_id, c.customer_id): p for c, p in cached.values() if p is not None}
        missing = self.outbox.candidates(d.candidate_id for d in claimed
                                         if d.candidate_id not in candidates)
        if missing:
            candidates.update(missing)
            profiles.update(load_profiles(self.store, {(c.tenant_id, c.customer_id)
                                                       for c in missing.values()}))
        by_channel: dict[str, list[Delivery]] = defaultdict(list)
        for d in claimed:
            by_channel[d.channel].append(d)
        unsent: list[tuple[Delivery, SendResult]] = []  # never handed to a provider
        shadows: list[tuple[Delivery, str]] = []
        render = self.renderer.render
        for name, group in by_channel.items():
            channel = self.channels[name]
            shadow_channel = channel.config.shadow
            messages: list[tuple[Delivery, Message]] = []
            for d in group:
                c = candidates[d.candidate_id]
                profile = profiles.get((c.tenant_id, c.customer_id))
                try:
                    rendered = render(c, name, profile)
                except Exception as exc:  # a template error is the candidate's, not the batch's
                    unsent.append((d, SendResult(d.idempotency_key, "failed", error=f"template: {exc}")))
                    continue
                message = self._message(d, c, rendered, profile, channel)
                if d.shadow or shadow_channel:
                    shadows.append((d, f"to={message.to or c.customer_id} title={message.title!r}"))
                else:
                    messages.append((d, message))
            if messages:
                batch.work[name] = messages
        if shadows:
            self.outbox.record_shadow(shadows, now)
            stats.shadow = len(shadows)
            shadow_by: dict[str, int] = defaultdict(int)
            for d, _ in shadows:
                shadow_by[d.channel] += 1
            for channel_name, n in shadow_by.items():
                metrics.record_deliveries(channel_name, {"shadow": n})
        self._record(unsent, stats)
        return batch

    def _send_batch(self, batch: _Batch) -> DispatchStats:
        """Hand a prepared batch to its channels (each message ``sending`` only while there)."""
        stats = DispatchStats()
        for name, messages in batch.work.items():
            # prepared while the previous batch was out: its breaker may have opened since
            # (then nothing goes), or be half-open (then one probe); the rest is released
            allowed = self.breakers[name].allowance(len(messages))
            if allowed < len(messages):
                self.outbox.release([d.id for d, _ in messages[allowed:]])
                if name in self.buckets:
                    self.buckets[name].refund(len(messages) - allowed)
                stats.leased -= len(messages) - allowed
                messages = messages[:allowed]
            if messages:
                stats.add(self._deliver(name, self.channels[name], messages))
        batch.work = {}
        return stats

    def _abandon(self, batch: _Batch) -> None:
        """Release the leases of a prepared batch that will not be sent (a stop): its
        attempts are due again at once, for this or any dispatcher."""
        ids = [d.id for messages in batch.work.values() for d, _ in messages]
        if ids:
            self.outbox.release(ids)
        batch.work = {}

    def _deliver(self, name: str, channel: Channel[Any],
                 messages: list[tuple[Delivery, Message]]) -> DispatchStats:
        """Send one channel's messages; each is ``sending`` only while at the provider."""
        stats = DispatchStats()
        outcomes: list[tuple[Delivery, SendResult]] = []
        if channel.journaled:  # the channel begins and ends each message with the journal
            with AttemptJournal(self.outbox, [d for d, _ in messages], self.clock,
                                self._retry_of(name), self.rng.random) as journal:
                results, raised = self._call(channel, [m for _, m in messages], journal, name)
            metrics.record_deliveries(name, journal.counts)
            for field, n in journal.counts.items():
                setattr(stats, field, getattr(stats, field) + n)
            stats.attempted += len(journal.begun)
            unrecorded: list[tuple[Delivery, SendResult]] = []
            left: list[int] = []
            for (d, _), result in zip(messages, results, strict=True):
                state = journal.state(d)
                if state == "refused":  # another worker's now
                    continue
                if state == "open" and raised:  # at the provider, outcome unknown: recovery's
                    left.append(d.id)
                    continue
                outcomes.append((d, result))
                if state != "recorded":  # the channel's own verdict (duplicate, no address, ...)
                    unrecorded.append((journal.begun.get(d.id, d), result))
            self._record(unrecorded, stats)
            if left:
                log.warning("%d attempt(s) on %s left in flight when the channel failed: crash "
                            "recovery resolves them once the lease runs out (deliveries %s)",
                            len(left), name, ", ".join(map(str, left[:10])))
        else:  # chunks of what the channel may have in flight: marked before, recorded after
            size = max(1, channel.in_flight)
            for start in range(0, len(messages), size):
                chunk = messages[start:start + size]
                granted = self.outbox.begin([d.id for d, _ in chunk], self.clock())
                chunk = [(d, m) for d, m in chunk if d.id in granted]
                if not chunk:
                    continue
                stats.attempted += len(chunk)
                results, _ = self._call(channel, [m for _, m in chunk], None, name)
                attempted = [(counted(d), r)
                             for (d, _), r in zip(chunk, results, strict=True)]
                self._record(attempted, stats)
                outcomes.extend(attempted)
        breaker = self.breakers[name]
        for _, result in outcomes:
            ok = result.status in ("sent", "delivered", "duplicate")
            if ok or result.retryable:
                breaker.record(ok)
        return stats

    def _record(self, outcomes: list[tuple[Delivery, SendResult]], stats: DispatchStats) -> None:
        """Record outcomes (each channel's own retry policy), adding the counts to ``stats``."""
        by_channel: dict[str, list[tuple[Delivery, SendResult]]] = defaultdict(list)
        for d, result in outcomes:
            by_channel[d.channel].append((d, result))
        for channel, recorded in by_channel.items():
            counts = self.outbox.record(recorded, self.clock(), self._retry_of(channel),
                                        (self.rng.random() for _ in recorded))
            metrics.record_deliveries(channel, counts)
            stats.sent += counts["sent"]
            stats.retry += counts["retry"]
            stats.dead += counts["dead"]
            stats.fallback += counts["fallback"]

    def _retry_of(self, channel: str) -> Retry:
        """The dispatcher's retry policy, with the channel's own ``max_attempts`` if it sets one."""
        attempts = self.channels[channel].config.max_attempts if channel in self.channels else None
        if attempts is None or attempts == self.retry.max_attempts:
            return self.retry
        return replace(self.retry, max_attempts=attempts)

    @staticmethod
    def _call(channel: Channel[Any], messages: list[Message],
              journal: AttemptJournal | None = None, name: str | None = None
              ) -> tuple[list[SendResult], bool]:
        """The channel's results, and whether it raised (then every message failed, retryably)."""
        name = name or channel.config.type
        started = time.perf_counter()
        try:
            with span("ceap.provider.send", **{"ceap.channel": name, "ceap.messages": len(messages)}):
                if journal is not None:  # each message's call is timed between begin and end
                    results: list[SendResult] = cast(Any, channel).send(
                        messages, journal=TimedJournal(journal, name))
                else:
                    results = channel.send(messages)
        except Exception as exc:  # a channel that raises has failed every message, retryably
            if journal is None:
                metrics.PROVIDER_DURATION.labels(name).observe(time.perf_counter() - started)
            # the exception's text may quote an address or a payload: only its type is logged
            log.warning("channel %s raised %s", name, type(exc).__name__,
                        extra={"channel": name, "error": type(exc).__name__})
            return [SendResult(m.idempotency_key, "failed", error=f"{type(exc).__name__}: {exc}",
                               retryable=True) for m in messages], True
        if journal is None:
            metrics.PROVIDER_DURATION.labels(name).observe(time.perf_counter() - started)
        if len(results) != len(messages):
            raise RuntimeError(f"channel {channel.config.type} returned {len(results)} results "
                               f"for {len(messages)} messages")
        return results, False

    @staticmethod
    def _message(d: Delivery, c: Candidate, r: Rendered, profile: Any, channel: Channel[Any]) -> Message:
        to = None
        if channel.address:  # the program may name the address (the phone on file before a change)
            to = c.payload.get(f"to_{channel.address}") or getattr(profile, channel.address, None)
        return Message(tenant_id=d.tenant_id, idempotency_key=d.idempotency_key,
                       customer_id=c.customer_id, program=c.program, channel=d.channel,
                       title=r.title, body=r.body, candidate_id=c.id, to=to, payload=c.payload,
                       html=r.html, headers=dict(r.headers), category=c.category,
                       locale=getattr(profile, "locale", None))

    # -- loops -------------------------------------------------------------
    def step(self) -> DispatchStats:
        stats = self.plan()
        stats.add(self.send())
        return stats

    def _pass(self) -> _Batch:
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
        ``held_rate_limit``/``held_circuit_open`` and detailed per channel in ``self.held``."""
        total = DispatchStats()
        found = self.recover()
        total.requeued, total.ambiguous = len(found.requeued), len(found.ambiguous)
        stop = stop or threading.Event()
        self.held = {}
        read_at: float | None = None
        idle = 0  # passes in a row that found tokens but nothing to claim
        ahead = ThreadPoolExecutor(1, thread_name_prefix="ceap-dispatch-ahead") if self.pipeline else None
        batch: _Batch | None = None
        try:
            while not stop.is_set():
                if batch is None:
                    batch = self._pass()
                following: Future[_Batch] | None = None
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
