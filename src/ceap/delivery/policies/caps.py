"""Frequency caps over rolling windows, and arbitration when they bind.

Counts are per customer: deliveries already sent in the window (``sent_at``),
attempts still queued or in flight, and what this batch has granted so far.
The batch is granted in order of program priority, then score (then candidate
id), so when two programs compete for a customer's last slot the more
important one wins, and the loser's reason names the cap and the winner.
Only non-exempt (marketing) deliveries count and are capped, and only on channels
not listed in ``caps.exempt_channels``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from ceap.delivery.delivery_config import CapRule, DeliveryConfig
from ceap.delivery.model import Decision
from ceap.delivery.policies.common import by_tenant, is_exempt
from ceap.delivery.policy import PolicyContext, without
from ceap.model import Candidate
from ceap.store.schema import from_iso

log = logging.getLogger("ceap.delivery.policies")
_CHUNK = 500


@dataclass(frozen=True)
class _Event:
    channel: str
    program: str
    at: datetime
    winner: Candidate | None = None   # granted in this batch
    shadow: bool = False              # granted to a shadow candidate: counts for shadows only


@dataclass(frozen=True)
class Loss:
    """One arbitration outcome: who lost which channel, to which cap, and to whom."""

    candidate_id: int
    program: str
    customer_id: str
    channel: str
    cap: str
    winner: str | None
    reason: str


class FrequencyCaps:
    """Caps: ``per_customer`` (all channels and programs), ``per_channel``
    (channel -> rules), ``per_program`` (each program, or ``programs`` overrides).
    A capped channel is dropped (a fallback may still go); with no channel left
    the candidate is suppressed as ``frequency_cap:<scope>``. The last batch's
    losses are kept in ``losses`` (and logged)."""

    name = "frequency_cap"

    def __init__(self, config: DeliveryConfig | None = None):
        self.config = config or DeliveryConfig()
        self.losses: list[Loss] = []

    # -- counts ------------------------------------------------------------
    def _history(self, ctx: PolicyContext, candidates: Sequence[Candidate]
                 ) -> dict[tuple[str, str], list[_Event]]:
        since = ctx.now - self.config.caps.longest()
        exempt = list(self.config.exempt_categories)
        free = set(self.config.caps.exempt_channels)
        events: dict[tuple[str, str], list[_Event]] = defaultdict(list)
        with ctx.store.tx() as tx:
            for tenant, group in by_tenant(candidates).items():
                ids = sorted({c.customer_id for c in group})
                for start in range(0, len(ids), _CHUNK):
                    chunk = ids[start:start + _CHUNK]
                    sql = ("SELECT customer_id, channel, program, status, sent_at FROM deliveries "
                           f"WHERE tenant_id = ? AND customer_id IN ({tx.placeholders(len(chunk))}) "
                           "AND shadow = ? AND (sent_at >= ? OR status IN ('queued', 'sending'))")
                    params: list[object] = [tenant, *chunk, False, tx.ts(since)]
                    if exempt:
                        sql += f" AND category NOT IN ({tx.placeholders(len(exempt))})"
                        params.extend(exempt)
                    for customer, channel, program, status, sent_at in tx.execute(sql, params).fetchall():
                        if channel in free:
                            continue
                        at = from_iso(sent_at) if status not in ("queued", "sending") else None
                        events[(tenant, customer)].append(_Event(channel, program, at or ctx.now))
        return events

    def _rules(self, c: Candidate, channel: str
               ) -> list[tuple[str, list[CapRule], Callable[[_Event], bool]]]:
        caps = self.config.caps
        return [
            ("per_customer", caps.per_customer, lambda e: True),
            (f"per_channel[{channel}]", caps.per_channel.get(channel, []), lambda e: e.channel == channel),
            (f"per_program[{c.program}]", caps.program_rules(c.program), lambda e: e.program == c.program),
        ]

    def _blocked(self, c: Candidate, channel: str, events: list[_Event], now: datetime,
                 shadow: bool) -> tuple[str, CapRule, list[_Event]] | None:
        for scope, rules, match in self._rules(c, channel):
            for rule in rules:
                since = now - rule.window
                counted = [e for e in events if match(e) and e.at >= since and (shadow or not e.shadow)]
                if len(counted) >= rule.max:
                    return scope, rule, counted
        return None

    # -- the policy ---------------------------------------------------------
    def apply(self, candidates: Sequence[Candidate], decisions: list[Decision],
              ctx: PolicyContext) -> list[Decision]:
        self.losses = []
        if self.config.caps.empty:
            return decisions
        capped = [i for i, (c, d) in enumerate(zip(candidates, decisions, strict=True))
                  if d.send and not is_exempt(c.category, self.config)]
        if not capped:
            return decisions
        events = self._history(ctx, [candidates[i] for i in capped])
        free = set(self.config.caps.exempt_channels)
        capped.sort(key=lambda i: (-candidates[i].priority, -candidates[i].score, candidates[i].id))
        out = list(decisions)
        for i in capped:
            c, d = candidates[i], decisions[i]
            shadow = c.status == "shadow"
            mine = events[(c.tenant_id, c.customer_id)]
            kept: list[str] = []
            notes: list[str] = []
            for ch in d.send:
                if ch in free:  # neither counted nor held
                    continue
                hit = self._blocked(c, ch, mine, ctx.now, shadow)
                if hit is None:
                    kept.append(ch)
                    if not d.fallback:
                        mine.append(_Event(ch, c.program, ctx.now, c, shadow))
                    continue
                scope, rule, counted = hit
                note, winner = self._explain(c, ch, scope, rule, counted)
                notes.append(note)
                d = without(d, ch, f"{self.name}:{scope.split('[')[0]}")
                self.losses.append(Loss(c.id, c.program, c.customer_id, ch, f"{scope} {rule.label()}",
                                        winner, note))
                log.info("candidate %s (%s) %s", c.id, c.program, note)
            if d.fallback and kept:
                mine.append(_Event(kept[0], c.program, ctx.now, c, shadow))
            if notes:
                joined = "; ".join(dict.fromkeys(notes))
                d = replace(d, note=f"{d.note}; {joined}" if d.note else joined)
            out[i] = d
        return out

    @staticmethod
    def _explain(c: Candidate, channel: str, scope: str, rule: CapRule,
                 counted: list[_Event]) -> tuple[str, str | None]:
        head = f"{channel}: {scope} cap {rule.label()} reached"
        winners = [e.winner for e in counted if e.winner is not None]
        if winners:
            w = winners[0]
            return (f"{head}: lost to {w.program} (priority {w.priority}, score {w.score:g}, "
                    f"candidate {w.id})", w.program)
        programs = ", ".join(dict.fromkeys(e.program for e in counted))
        return f"{head}: {len(counted)} already sent or queued in {_fmt(rule.window)} ({programs})", None


def _fmt(window: timedelta) -> str:
    from ceap.durations import format_duration

    return format_duration(window)
