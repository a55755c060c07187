"""The policy contract: each policy reads the claimed candidates and narrows
the decisions (drops channels, suppresses, defers). They run in order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from ceap.delivery.model import Decision, Profile
from ceap.model import Candidate


@dataclass
class PolicyContext:
    now: datetime
    store: Any
    profiles: dict[tuple[str, str], Profile]
    #: channel name -> profile field that holds its address (None: none needed)
    addresses: dict[str, str | None]
    programs: dict[str, Any] = field(default_factory=dict)

    def profile(self, c: Candidate) -> Profile | None:
        return self.profiles.get((c.tenant_id, c.customer_id))


class Policy(Protocol):
    name: str

    def apply(self, candidates: Sequence[Candidate], decisions: list[Decision],
              ctx: PolicyContext) -> list[Decision]: ...


def without(decision: Decision, channel: str, why: str) -> Decision:
    """``decision`` minus ``channel``; suppressed with ``why`` when no channel is left."""
    left = tuple(ch for ch in decision.send if ch != channel)
    if left:
        return replace(decision, send=left)
    return replace(decision, send=(), suppress=why)


class Reachable:
    """Drops channels the customer has no address for (no e-mail, no phone...)."""

    name = "no_address"

    def apply(self, candidates: Sequence[Candidate], decisions: list[Decision],
              ctx: PolicyContext) -> list[Decision]:
        addressed = {channel for channel, field_name in ctx.addresses.items() if field_name}
        out = []
        for c, d in zip(candidates, decisions, strict=True):
            if addressed.isdisjoint(d.send):  # no channel of it needs an address (webhooks)
                out.append(d)
                continue
            profile = ctx.profile(c)
            for channel in d.send:
                field_name = ctx.addresses.get(channel)
                if field_name and not (c.payload.get(f"to_{field_name}")
                                       or (profile and getattr(profile, field_name, None))):
                    dropped = without(d, channel, f"{self.name}:{channel}")
                    if dropped.send:  # another channel goes: say why this one did not
                        why = f"{channel}: no {field_name} in the profile"
                        dropped = replace(dropped, note=f"{d.note}; {why}" if d.note else why)
                    d = dropped
            out.append(d)
        return out
