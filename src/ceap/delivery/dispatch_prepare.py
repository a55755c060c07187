"""Preparing attempts: claim due deliveries within each channel's breaker and rate
limit (leases: they stay ``queued``), load their candidates and render their
messages; shadows and template failures are recorded here, never sent."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ceap.channels.base import Channel, Message, SendResult
from ceap.delivery.dispatch_outcomes import OutcomeRecorder
from ceap.delivery.dispatch_state import Batch, DispatchStats
from ceap.delivery.model import Delivery
from ceap.delivery.profiles import load_profiles
from ceap.delivery.render import Rendered
from ceap.model import Candidate
from ceap.observability import metrics


class AttemptPreparer(OutcomeRecorder):
    """The second half's first step: a ``Batch`` of rendered messages, not sent yet."""

    def _prepare(self) -> Batch:
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
        with self._in_hand_lock:
            held = frozenset(self._in_hand)
        claimed = self.outbox.claim_deliveries(now, quotas, held)
        stats.leased = len(claimed)
        batch = Batch(stats, {})
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
        with self._in_hand_lock:
            self._in_hand.update(batch.ids())
        return batch

    @staticmethod
    def _message(d: Delivery, c: Candidate, r: Rendered, profile: Any, channel: Channel[Any]) -> Message:
        to = None
        if channel.address:  # the program may name the address (the phone on file before a change)
            to = c.payload.get(f"to_{channel.address}") or getattr(profile, channel.address, None)
        # fields set directly, as ``Message(...)`` would set them (a frozen dataclass's
        # ``__init__`` costs a few microseconds, and a batch makes thousands)
        m = object.__new__(Message)
        m.__dict__.update(tenant_id=d.tenant_id, idempotency_key=d.idempotency_key,
                          customer_id=c.customer_id, program=c.program, channel=d.channel,
                          title=r.title, body=r.body, candidate_id=c.id, to=to, payload=c.payload,
                          html=r.html, headers=dict(r.headers), category=c.category,
                          locale=getattr(profile, "locale", None))
        return m
