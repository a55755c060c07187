"""Quiet hours in the customer's own time zone: deferred, never dropped."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from ceap.delivery.delivery_config import DeliveryConfig, SendingHours
from ceap.delivery.model import Decision
from ceap.delivery.policies.common import Zones, add_note, is_exempt
from ceap.delivery.policy import PolicyContext
from ceap.model import Candidate


def next_opening(now: datetime, hours: SendingHours, zone: ZoneInfo) -> datetime | None:
    """None when sending is allowed at ``now`` in ``zone``; else the (UTC) moment
    the allowed hours next begin."""
    local = now.astimezone(zone)
    t = local.time().replace(tzinfo=None)
    start, end = hours.send_from, hours.send_until
    allowed = (start <= t < end) if start < end else (t >= start or t < end)
    if allowed:
        return None
    day = local.date()
    if start < end and t >= end:
        day += timedelta(days=1)
    opening = datetime.combine(day, start, tzinfo=zone)
    # a start inside a DST gap does not exist: round-trip through UTC moves it forward
    return opening.astimezone(UTC)


class QuietHours:
    """Defers marketing on channels with sending hours (default sms and voice,
    08:00 to 21:00) while it is outside them in the customer's time zone
    (``profile.timezone``, else ``default_timezone``). Transactional and security
    actions bypass it.

    With fallback delivery the first channel decides: closed, the candidate waits
    for its opening; open, later fallback channels that are closed now are dropped
    from the chain (a fallback must not go out at night). With ``deliver: all``
    the candidate waits until every channel it uses is open."""

    name = "quiet_hours"

    def __init__(self, config: DeliveryConfig | None = None):
        self.config = config or DeliveryConfig()
        self.zones = Zones(self.config.default_timezone)

    def apply(self, candidates: Sequence[Candidate], decisions: list[Decision],
              ctx: PolicyContext) -> list[Decision]:
        hours = self.config.quiet_hours
        if not hours:
            return decisions
        out = []
        for c, d in zip(candidates, decisions, strict=True):
            if is_exempt(c.category, self.config) or not any(ch in hours for ch in d.send):
                out.append(d)
                continue
            zone = self.zones.of(ctx.profile(c))
            openings = {ch: next_opening(ctx.now, hours[ch], zone) for ch in d.send if ch in hours}
            closed = {ch: at for ch, at in openings.items() if at is not None}
            if not closed:
                out.append(d)
            elif not d.fallback:
                out.append(self._defer(d, max(closed.values()), closed, zone))
            elif d.send[0] in closed:
                out.append(self._defer(d, closed[d.send[0]], {d.send[0]: closed[d.send[0]]}, zone))
            else:
                keep = tuple(ch for ch in d.send if ch not in closed)
                out.append(add_note(replace(d, send=keep),
                                    f"{self.name}: fallback {', '.join(closed)} dropped (outside "
                                    f"sending hours in {zone.key})"))
        return out

    def _defer(self, d: Decision, until: datetime, closed: dict[str, datetime], zone: ZoneInfo) -> Decision:
        local = until.astimezone(zone).strftime("%Y-%m-%d %H:%M")
        note = f"{self.name}:{','.join(closed)} deferred to {local} {zone.key}"
        return replace(d, defer_until=until, note=note)
