"""What the simulated customers do after a run: engage with the message, convert.

Given what the platform did (each candidate's arm and variant, and whether and when
a message reached the customer), each customer converts with the world's known
probability: ``p1`` (their variant's arm) when a treated candidate's message was
delivered, else ``p0`` (control customers, and treated ones the channel could not
reach: intention to treat). A customer's conversion is a ``purchase`` event inside
the attribution window of their touch (the send, or ``not_before`` when nothing was
sent). Some customers also buy before the touch or after the window: those events
must not be attributed.

Contacted customers engage: they open (or read) the message, some click, and a few
of the annoyed ones (complaints lately) unsubscribe. Converters open and click more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from ceap.simulate.design import GOAL_EVENT, OFFER_URL, VALUE, Design
from ceap.simulate.population import World

#: chance of an open (in-app: read) and of a click, for a contacted customer who does not
#: convert, and the extra for one who does
OPEN, OPEN_IF_CONVERTED = 0.35, 0.40
CLICK, CLICK_IF_CONVERTED = 0.08, 0.50
UNSUBSCRIBE, UNSUBSCRIBE_IF_ANNOYED = 0.002, 0.01
#: purchases outside any window: before the touch, after the window
EARLIER, LATER = 0.05, 0.03


@dataclass
class Contacts:
    """One row per candidate of a run, as the platform left it (see ``Platform.contacts``)."""

    candidate_id: np.ndarray
    customer_id: list[str]
    arm: list[str]
    variant: list[str | None]
    not_before: list[datetime]
    delivery_id: list[int | None]
    channel: list[str | None]
    sent_at: list[datetime | None]

    @property
    def contacted(self) -> np.ndarray:
        return np.array([a == "treatment" and s is not None for a, s in zip(self.arm, self.sent_at,
                                                                             strict=True)], dtype=bool)


@dataclass(frozen=True)
class Engagement:
    """One thing a customer did with a delivered message."""

    ts: datetime
    kind: str          # "open" (in-app: read), "click" or "unsubscribe"
    delivery_id: int
    customer_id: str
    channel: str


@dataclass
class Outcomes:
    """The draws for one run: per candidate (in ``Contacts`` order) and the events."""

    probability: np.ndarray
    converted: np.ndarray
    contacted: np.ndarray
    #: the uniform draw behind each outcome and the customer's baseline probability: the
    #: customer would have converted without the message when ``uniform < baseline``
    uniform: np.ndarray
    baseline: np.ndarray
    #: ``purchase`` events for /v1/events, in the window and outside it
    goal_events: list[dict[str, object]] = field(default_factory=list)
    engagements: list[Engagement] = field(default_factory=list)


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def draw_outcomes(world: World, rows: dict[str, int], design: Design, contacts: Contacts,
                  rng: np.random.Generator, prefix: str) -> Outcomes:
    """Draw each candidate's outcome and the events that report it (see the module doc).

    ``rows`` maps customer ids to their world rows; ``prefix`` makes event ids unique."""
    n = len(contacts.customer_id)
    world_rows = np.array([rows[c] for c in contacts.customer_id], dtype=np.int64)
    contacted = contacts.contacted
    p = world.p0[world_rows].copy()
    arms = np.array([design.arm(v).name if a == "treatment" else "" for a, v
                     in zip(contacts.arm, contacts.variant, strict=True)], dtype=object)
    for arm in design.arms:
        mask = contacted & (arms == arm.name)
        p[mask] = world.p1(arm, world_rows[mask])
    u = rng.random(n)
    converted = u < p
    out = Outcomes(p, converted, contacted, u, world.p0[world_rows])
    within = design.within.total_seconds()
    when = rng.uniform(0.01, 0.99, n) * within
    amounts = np.round(rng.lognormal(np.log(40.0), 0.5, n), 2)
    earlier = rng.random(n) < EARLIER
    later = rng.random(n) < LATER
    before = rng.uniform(3600, 20 * 86400, n)
    after = rng.uniform(3600, 3 * 86400, n)
    for i in range(n):
        customer = contacts.customer_id[i]
        touch = contacts.sent_at[i] if contacted[i] else contacts.not_before[i]
        assert touch is not None
        if converted[i]:
            out.goal_events.append(_purchase(f"{prefix}:{customer}:in", customer,
                                             touch + timedelta(seconds=float(when[i])), amounts[i]))
        if earlier[i]:
            out.goal_events.append(_purchase(f"{prefix}:{customer}:before", customer,
                                             touch - timedelta(seconds=float(before[i])), amounts[i]))
        if later[i]:
            out.goal_events.append(_purchase(f"{prefix}:{customer}:after", customer,
                                             touch + design.within + timedelta(seconds=float(after[i])),
                                             amounts[i]))
    _engage(out, world, world_rows, contacts, rng)
    return out


def _purchase(event_id: str, customer: str, ts: datetime, amount: float) -> dict[str, object]:
    return {"id": event_id, "type": GOAL_EVENT, "ts": _iso(ts), "customer_id": customer,
            "attributes": {VALUE: float(amount)}}


def _engage(out: Outcomes, world: World, world_rows: np.ndarray, contacts: Contacts,
            rng: np.random.Generator) -> None:
    n = len(contacts.customer_id)
    opens = rng.random(n) < OPEN + OPEN_IF_CONVERTED * out.converted
    clicks = opens & (rng.random(n) < CLICK + CLICK_IF_CONVERTED * out.converted)
    annoyed = world.complaints[world_rows] > 0
    unsubscribes = rng.random(n) < np.where(annoyed, UNSUBSCRIBE_IF_ANNOYED, UNSUBSCRIBE)
    open_after = rng.uniform(60, 6 * 3600, n)
    click_after = rng.uniform(10, 1800, n)
    for i in np.flatnonzero(out.contacted):
        sent, delivery, channel = contacts.sent_at[i], contacts.delivery_id[i], contacts.channel[i]
        assert sent is not None and delivery is not None and channel is not None
        customer = contacts.customer_id[i]
        if opens[i]:
            opened = sent + timedelta(seconds=float(open_after[i]))
            out.engagements.append(Engagement(opened, "open", delivery, customer, channel))
            if clicks[i]:
                out.engagements.append(Engagement(opened + timedelta(seconds=float(click_after[i])),
                                                  "click", delivery, customer, channel))
        if unsubscribes[i]:
            out.engagements.append(Engagement(sent + timedelta(hours=7), "unsubscribe", delivery,
                                              customer, channel))
    out.engagements.sort(key=lambda e: e.ts)


def caused(outcomes: Outcomes) -> np.ndarray:
    """Per candidate: +1 a conversion the message caused, -1 one it prevented, 0 otherwise
    (the same draw without the message: ``uniform < baseline``)."""
    without = outcomes.uniform < outcomes.baseline
    return outcomes.converted.astype(int) - without.astype(int)


def engagement_events(engagements: list[Engagement], prefix: str) -> list[dict[str, object]]:
    """Engagements as a client app reports them: events naming the delivery
    (``read`` for in-app, ``opened`` otherwise; ``clicked`` with the URL)."""
    events: list[dict[str, object]] = []
    for e in engagements:
        kind = {"open": "read" if e.channel == "inapp" else "opened", "click": "clicked",
                "unsubscribe": "unsubscribed"}[e.kind]
        attributes: dict[str, object] = {"delivery_id": e.delivery_id}
        if e.kind == "click":
            attributes["url"] = OFFER_URL
        events.append({"id": f"{prefix}:{e.delivery_id}:{kind}", "type": kind, "ts": _iso(e.ts),
                       "customer_id": e.customer_id, "attributes": attributes})
    return events


__all__ = ["Contacts", "Engagement", "Outcomes", "caused", "draw_outcomes", "engagement_events"]
