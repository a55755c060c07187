"""Helpers the policies share."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ceap.delivery.delivery_config import DeliveryConfig
from ceap.delivery.model import Decision, Profile
from ceap.model import Candidate

log = logging.getLogger("ceap.delivery.policies")


def is_exempt(category: str | None, config: DeliveryConfig) -> bool:
    """Transactional and security actions (as declared by their program) bypass
    quiet hours and marketing caps."""
    return (category or "marketing") in config.exempt_categories


def topic_of(candidate: Candidate, field: str = "topic") -> str:
    """The consent topic: the payload's ``topic`` when it is a non-empty string,
    else the program's name."""
    value = (candidate.payload or {}).get(field) if field else None
    return value if isinstance(value, str) and value.strip() else candidate.program


def by_tenant(candidates: Iterable[Candidate]) -> dict[str, list[Candidate]]:
    out: dict[str, list[Candidate]] = defaultdict(list)
    for c in candidates:
        out[c.tenant_id].append(c)
    return out


def add_note(decision: Decision, note: str) -> Decision:
    if not note or (decision.note and note in decision.note):
        return decision
    return replace(decision, note=f"{decision.note}; {note}" if decision.note else note)


class Zones:
    """Time zones by name, cached; an unknown or missing name is the default zone."""

    def __init__(self, default: str):
        self.default = ZoneInfo(default)
        self._cache: dict[str, ZoneInfo] = {}

    def get(self, name: str | None) -> ZoneInfo:
        if not name:
            return self.default
        zone = self._cache.get(name)
        if zone is None:
            try:
                zone = ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                log.warning("unknown time zone %r in a profile: using %s", name, self.default.key)
                zone = self.default
            self._cache[name] = zone
        return zone

    def of(self, profile: Profile | None) -> ZoneInfo:
        return self.get(profile.timezone if profile else None)


def live(candidates: Sequence[Candidate], decisions: list[Decision]) -> list[tuple[int, Candidate, Decision]]:
    return [(i, c, d) for i, (c, d) in enumerate(zip(candidates, decisions, strict=True))
            if d.suppress is None and d.defer_until is None and d.send]
