"""Fire times of a cron expression in a time zone, as UTC instants, across DST changes.

croniter walks the wall clock (naive local times); each local time it yields
becomes one instant by this rule:

- a local time the clocks skip (02:30 on the spring-forward night in
  Europe/Paris) fires once, at the moment the clocks jump (03:00 local);
- a local time that happens twice (02:30 on the fall-back night) fires once,
  at its first occurrence (02:30 summer time).

The mapping never goes backwards, so several local times that land on one
instant (02:00 and 02:30 skipped, 03:00 real) fire once, and walking forward
or backward gives the same instants.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from ceap.spec.schedule import zone

#: more than any DST shift: how far past an instant a backward walk starts
_SLACK = timedelta(hours=3)


def _local(instant: datetime, tz: ZoneInfo) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None)


def _jump(before: datetime, after: datetime, tz: ZoneInfo) -> datetime:
    """The first second in (before, after] whose UTC offset is ``after``'s: where the clocks jumped."""
    target = after.astimezone(tz).utcoffset()
    lo, hi = int(before.timestamp()), int(after.timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(tz).utcoffset() == target:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


def instant(local: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant a naive local time fires at (see the module's rule)."""
    first = local.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if _local(first, tz) == local:
        return first  # exists (an ambiguous time: its first occurrence)
    # skipped by the clocks: fold=1 reads it with the later offset (an instant before the
    # jump), fold=0 with the earlier one (after the jump); the jump lies between them
    early = local.replace(tzinfo=tz, fold=1).astimezone(UTC)
    return _jump(min(early, first), max(early, first), tz)


@dataclass(frozen=True)
class Cron:
    """A cron expression read in one time zone."""

    expr: str
    timezone: str

    @property
    def tz(self) -> ZoneInfo:
        return zone(self.timezone)

    def after(self, start: datetime) -> Iterator[datetime]:
        """Fire times strictly after ``start``, ascending, without end."""
        tz = self.tz
        it = croniter(self.expr, _local(start, tz) - _SLACK, ret_type=datetime)
        last = start
        while True:
            at = instant(it.get_next(), tz)
            if at > last:
                last = at
                yield at

    def upto(self, end: datetime) -> Iterator[datetime]:
        """Fire times at or before ``end``, descending, without end."""
        tz = self.tz
        it = croniter(self.expr, _local(end, tz) + _SLACK, ret_type=datetime)
        last: datetime | None = None
        while True:
            at = instant(it.get_prev(), tz)
            if at <= end and (last is None or at < last):
                last = at
                yield at

    def next(self, start: datetime, n: int = 1) -> list[datetime]:
        """The first ``n`` fire times after ``start``."""
        it = self.after(start)
        return [next(it) for _ in range(n)]

    def between(self, start: datetime, end: datetime, limit: int) -> tuple[list[datetime], int, bool]:
        """Fire times in (``start``, ``end``]: the latest ``limit`` of them (ascending), how many
        there are (counted up to ``10 * limit + 1000``), and whether the count stopped there."""
        cap = 10 * limit + 1000
        latest: list[datetime] = []
        for count, at in enumerate(self.upto(end)):
            if at <= start:
                return list(reversed(latest)), count, False
            if len(latest) < limit:
                latest.append(at)
            if count + 1 >= cap:
                return list(reversed(latest)), count + 1, True
        raise AssertionError("unreachable")  # upto() never ends


__all__ = ["Cron", "instant"]
