"""Sending a prepared batch: each message is ``sending`` only while at its provider
(the attempt journal for journaled channels, chunks of ``in_flight`` otherwise);
outcomes are recorded and fed to the channel's circuit breaker."""

from __future__ import annotations

import logging
import time
from typing import Any, cast

from ceap.channels.base import Channel, Message, SendResult
from ceap.channels.receipts import UNSUBSCRIBED, is_bounce
from ceap.delivery.consent_store import add_suppression
from ceap.delivery.dispatch_outcomes import OutcomeRecorder
from ceap.delivery.dispatch_state import Batch, DispatchStats
from ceap.delivery.journal import AttemptJournal
from ceap.delivery.model import Delivery, counted
from ceap.delivery.timed_journal import TimedJournal
from ceap.observability import metrics
from ceap.observability.tracing import span

log = logging.getLogger("ceap.delivery.dispatcher")


class BatchSender(OutcomeRecorder):
    """Hands prepared batches to their channels and records what came back."""

    def _send_batch(self, batch: Batch) -> DispatchStats:
        """Hand a prepared batch to its channels (each message ``sending`` only while there)."""
        stats = DispatchStats()
        try:
            self._send_work(batch, stats)
        finally:  # sent, refused, released or left in flight: no longer a prepared batch's
            self._let_go(batch)
        return stats

    def _send_work(self, batch: Batch, stats: DispatchStats) -> None:
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

    def _abandon(self, batch: Batch) -> None:
        """Release the leases of a prepared batch that will not be sent (a stop): its
        attempts are due again at once, for this or any dispatcher."""
        ids = batch.ids()
        if ids:
            self.outbox.release(ids)
        self._let_go(batch)

    def _let_go(self, batch: Batch) -> None:
        with self._in_hand_lock:
            self._in_hand.difference_update(batch.ids())
        batch.work = {}

    def _deliver(self, name: str, channel: Channel[Any],
                 messages: list[tuple[Delivery, Message]]) -> DispatchStats:
        """Send one channel's messages; each is ``sending`` only while at the provider."""
        stats = DispatchStats()
        outcomes: list[tuple[Delivery, SendResult]] = []
        if channel.journaled:  # the channel begins and ends each message with the journal
            lanes = min(len(messages), int(getattr(channel.config, "concurrency", 1)))
            with AttemptJournal(self.outbox, [d for d, _ in messages], self.clock,
                                self._retry_of(name), self.rng.random, lanes=lanes) as journal:
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
        self._suppress_bounces(name, channel, messages, outcomes)
        breaker = self.breakers[name]
        for _, result in outcomes:
            ok = result.status in ("sent", "delivered", "duplicate")
            if ok or result.retryable:
                breaker.record(ok)
        return stats

    def _suppress_bounces(self, name: str, channel: Channel[Any],
                          messages: list[tuple[Delivery, Message]],
                          outcomes: list[tuple[Delivery, SendResult]]) -> None:
        """An answer that the address no longer exists (``bounced: ...``: an invalid number,
        an unregistered push token) puts it on the suppression list for this channel
        (``hard_bounce``), as a provider's receipt saying so does; a number the provider
        says replied STOP (``unsubscribed: ...``, Twilio 21610) goes on it as ``sms_stop``
        (docs/policies.md)."""
        reasons = {d.id: "hard_bounce" if is_bounce(result) else "sms_stop"
                   for d, result in outcomes
                   if result.error and not result.retryable and (
                       is_bounce(result) or (channel.address == "phone"
                                             and result.error.startswith(f"{UNSUBSCRIBED}:")))}
        if not reasons or not channel.address:
            return
        for d, m in messages:
            if d.id in reasons and m.to:
                try:
                    add_suppression(self.store, d.tenant_id, name, str(m.to), reasons[d.id],
                                    kind=channel.address)
                except ValueError:  # nothing left of the address once normalised
                    continue

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
