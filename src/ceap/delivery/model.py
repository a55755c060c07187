"""Records of the delivery layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

DeliveryStatus = Literal[
    "queued",      # planned, waiting for its (next) attempt
    "sending",     # recorded before the provider call; a crash leaves it here
    "sent",        # the provider accepted it
    "delivered",   # a receipt says it arrived
    "bounced",     # a receipt says it did not
    "complained",  # the recipient marked it as spam
    "failed",      # a receipt says the provider failed it later
    "dead",        # gave up: the reason is in last_error
    "suppressed",  # a policy stopped it: the policy is named
    "ambiguous",   # in flight at a crash, not resent: held for a person to decide
    "shadow",      # would have been sent (shadow mode): nothing left the platform
    "cancelled",   # a person dropped it (``ceap deliveries drop``)
    "expired",
]
TERMINAL = frozenset({"sent", "delivered", "bounced", "complained", "failed", "dead", "suppressed",
                      "ambiguous", "shadow", "cancelled", "expired"})


@dataclass
class Delivery:
    """One channel's attempt(s) at delivering one candidate."""

    id: int
    tenant_id: str
    candidate_id: int
    program: str
    customer_id: str
    channel: str
    step: int
    idempotency_key: str
    status: str
    attempts: int
    next_attempt_at: datetime
    category: str
    shadow: bool = False
    last_error: str | None = None
    policy: str | None = None
    provider_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    sent_at: datetime | None = None
    #: when crash recovery found it in flight (kept whatever happens next), and what became of
    #: it: held, resent, deduplicated, marked_sent, dropped
    ambiguous_at: datetime | None = None
    ambiguity: str | None = None


def counted(d: Delivery) -> Delivery:
    """A copy of ``d`` with one more attempt (``dataclasses.replace`` costs ten times more)."""
    c = object.__new__(Delivery)
    c.__dict__.update(d.__dict__)
    c.attempts += 1
    return c


@dataclass
class Profile:
    """What the platform knows to reach a customer."""

    tenant_id: str
    customer_id: str
    email: str | None = None
    phone: str | None = None
    push_token: str | None = None
    timezone: str | None = None
    locale: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """What the policies decided for one claimed candidate.

    ``send``: the channels to plan, in order (``fallback``: one at a time; else all at once);
    ``suppress``: the policy that stopped it; ``defer_until``: try again then.
    """

    candidate_id: int
    send: tuple[str, ...] = ()
    fallback: bool = True
    suppress: str | None = None
    defer_until: datetime | None = None
    note: str | None = None
