"""What ``ceap sweep`` does for outcomes: keep expired candidates while a goal
event could still be attributed to them, and forget expired link destinations."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ceap.model import utcnow
from ceap.outcomes.links import REFRESH, purge_links


def longest_goal_window(specs: Any) -> timedelta:
    return max((s.goal.within for s in specs if getattr(s, "goal", None) is not None), default=timedelta(0))


def sweep_outcomes(store: Any, project: Any, tenant: str | None = None,
                   now: datetime | None = None) -> tuple[int, int]:
    """Delete candidates expired longer ago than the longest goal window (a touch is never
    after its candidate's expiry, so attribution can no longer reach them), and tracked
    links past ``tracking.link_ttl``. Returns (candidates, links) deleted."""
    from ceap.spec import load_programs

    now = now or utcnow()
    folder = project.programs_dir()
    specs = load_programs(folder) if folder.is_dir() else []
    removed = store.sweep_expired(now - longest_goal_window(specs), tenant)
    # a destination's issued_at is re-stamped at most daily (REFRESH): keep that much longer
    links = purge_links(store, now - project.tracking.link_ttl - REFRESH) if project.tracking else 0
    return removed, links
