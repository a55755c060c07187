"""Shadow decisions next to live ones.

A program in shadow mode goes through the dispatcher like a live one (claims,
policies, rendering) but its deliveries end ``shadow``: nothing leaves the
platform, and a ``shadow`` event in ``delivery_events`` records what would
have been sent and to whom (``to=... title=...``). A channel configured with
``shadow: true`` does the same for a live program's messages on it.

``compare_shadow(store, tenant, "churn_v2", live="churn_prevention")`` reads
both programs' deliveries over the same window (by default, from the shadow
program's first decision to its last) and returns a ``ShadowComparison``:
per program the decisions, candidates and customers, counts per status, per
channel and per suppressing policy; the overlap of customers (decided on at
all, and messaged: would-have-been-sent against sent or delivered); and a
sample of what the shadow program would have sent. ``shadow_programs`` lists
the programs with shadow decisions in a window. Every count is one SQL query
on the store (SQLite or PostgreSQL); customer sets are never loaded.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ceap.store.base import Store
from ceap.store.schema import from_iso
from ceap.store.tx import Tx

#: delivery statuses meaning the live program's message got out
SENT = ("sent", "delivered")
SHADOW = "shadow"


@dataclass(frozen=True)
class Outcomes:
    """What one program's deliveries came to over the window."""

    program: str
    decisions: int                        # deliveries (one per candidate and channel tried)
    candidates: int
    customers: int
    statuses: dict[str, int]              # delivery status -> count
    channels: dict[str, dict[str, int]]   # channel -> status -> count
    policies: dict[str, int]              # suppressing policy -> count

    @property
    def would_send(self) -> int:
        """Deliveries recorded as shadow: what would have been sent."""
        return self.statuses.get(SHADOW, 0)

    @property
    def sent(self) -> int:
        return sum(self.statuses.get(s, 0) for s in SENT)

    @property
    def suppressed(self) -> int:
        return self.statuses.get("suppressed", 0)


@dataclass(frozen=True)
class Overlap:
    """Customers of the shadow program only, of both, of the live program only."""

    shadow_only: int
    both: int
    live_only: int

    @property
    def jaccard(self) -> float | None:
        union = self.shadow_only + self.both + self.live_only
        return self.both / union if union else None


@dataclass(frozen=True)
class WouldSend:
    """One message the shadow program would have sent."""

    delivery_id: int
    candidate_id: int
    customer_id: str
    channel: str
    detail: str | None        # "to=<address> title='...'" as the dispatcher recorded it
    at: datetime | None


@dataclass(frozen=True)
class ShadowComparison:
    tenant: str
    shadow: Outcomes
    live: Outcomes | None
    since: datetime | None    # the window (inclusive); None: unbounded
    until: datetime | None
    #: customers either program decided on at all (sent, suppressed, shadow, ...)
    decided: Overlap | None
    #: customers the shadow program would have messaged against those the live one messaged
    messaged: Overlap | None
    samples: list[WouldSend] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.shadow.decisions == 0


def _window(tx: Tx, since: datetime | None, until: datetime | None,
            column: str = "created_at") -> tuple[str, list[Any]]:
    sql, params = "", []
    if since is not None:
        sql += f" AND {column} >= ?"
        params.append(tx.ts(since))
    if until is not None:
        sql += f" AND {column} <= ?"
        params.append(tx.ts(until))
    return sql, params


def shadow_programs(store: Store, tenant: str, since: datetime | None = None,
                    until: datetime | None = None) -> list[str]:
    """Programs with shadow decisions in the window: in shadow mode, or sending on a shadow channel."""
    with store.tx() as tx:
        win, params = _window(tx, since, until)
        rows = tx.execute("SELECT DISTINCT program FROM deliveries WHERE tenant_id = ? "
                          f"AND (status = ? OR shadow = ?){win} ORDER BY program",
                          (tenant, SHADOW, True, *params)).fetchall()
    return [str(r[0]) for r in rows]


def shadow_window(store: Store, tenant: str, program: str) -> tuple[datetime | None, datetime | None]:
    """The first and last shadow decision of ``program`` (None, None without any)."""
    with store.tx() as tx:
        row = tx.execute("SELECT min(created_at), max(created_at) FROM deliveries WHERE tenant_id = ? "
                         "AND program = ? AND (status = ? OR shadow = ?)",
                         (tenant, program, SHADOW, True)).fetchone()
    return from_iso(row[0]), from_iso(row[1])


def outcomes(store: Store, tenant: str, program: str, since: datetime | None = None,
             until: datetime | None = None) -> Outcomes:
    """``program``'s deliveries in the window, counted by status, channel and policy."""
    with store.tx() as tx:
        return _outcomes(tx, tenant, program, since, until)


def _outcomes(tx: Tx, tenant: str, program: str, since: datetime | None,
              until: datetime | None) -> Outcomes:
    win, params = _window(tx, since, until)
    where = f"WHERE tenant_id = ? AND program = ?{win}"
    args = (tenant, program, *params)
    decisions, candidates, customers = tx.execute(
        f"SELECT count(*), count(DISTINCT candidate_id), count(DISTINCT customer_id) FROM deliveries "
        f"{where}", args).fetchone()
    statuses: dict[str, int] = {}
    channels: dict[str, dict[str, int]] = defaultdict(dict)
    for channel, status, n in tx.execute(
            f"SELECT channel, status, count(*) FROM deliveries {where} GROUP BY channel, status "
            "ORDER BY channel, status", args).fetchall():
        channels[str(channel)][str(status)] = int(n)
        statuses[str(status)] = statuses.get(str(status), 0) + int(n)
    policies = {str(p or "-"): int(n) for p, n in tx.execute(
        f"SELECT policy, count(*) FROM deliveries {where} AND status = 'suppressed' "
        "GROUP BY policy ORDER BY count(*) DESC, policy", args).fetchall()}
    return Outcomes(program, int(decisions), int(candidates), int(customers),
                    dict(sorted(statuses.items())), dict(channels), policies)


def _overlap(tx: Tx, tenant: str, shadow: str, live: str, since: datetime | None,
             until: datetime | None, shadow_status: tuple[str, ...] | None,
             live_status: tuple[str, ...] | None) -> Overlap:
    """Distinct customers on each side (optionally only deliveries in the given statuses)."""
    def cond(alias: str, statuses: tuple[str, ...] | None) -> tuple[str, list[Any]]:
        win, params = _window(tx, since, until, f"{alias}.created_at")
        if statuses:
            win += f" AND {alias}.status IN ({tx.placeholders(len(statuses))})"
            params.extend(statuses)
        return win, params

    s_win, s_params = cond("s", shadow_status)
    l_win, l_params = cond("l", live_status)
    count = "SELECT count(DISTINCT {a}.customer_id) FROM deliveries {a} WHERE {a}.tenant_id = ? " \
            "AND {a}.program = ?"
    n_shadow = tx.execute(count.format(a="s") + s_win, (tenant, shadow, *s_params)).fetchone()[0]
    n_live = tx.execute(count.format(a="l") + l_win, (tenant, live, *l_params)).fetchone()[0]
    both = tx.execute(
        count.format(a="s") + s_win + " AND EXISTS (SELECT 1 FROM deliveries l WHERE "
        "l.tenant_id = s.tenant_id AND l.customer_id = s.customer_id AND l.program = ?" + l_win + ")",
        (tenant, shadow, *s_params, live, *l_params)).fetchone()[0]
    return Overlap(int(n_shadow) - int(both), int(both), int(n_live) - int(both))


def _samples(tx: Tx, tenant: str, program: str, since: datetime | None, until: datetime | None,
             limit: int) -> list[WouldSend]:
    if limit <= 0:
        return []
    win, params = _window(tx, since, until, "d.created_at")
    rows = tx.execute(
        "SELECT d.id, d.candidate_id, d.customer_id, d.channel, e.detail, d.updated_at "
        "FROM deliveries d LEFT JOIN delivery_events e ON e.delivery_id = d.id AND e.status = ? "
        f"WHERE d.tenant_id = ? AND d.program = ? AND d.status = ?{win} ORDER BY d.id LIMIT ?",
        (SHADOW, tenant, program, SHADOW, *params, limit)).fetchall()
    return [WouldSend(int(i), int(c), str(cust), str(ch), detail, from_iso(at))
            for i, c, cust, ch, detail, at in rows]


def compare_shadow(store: Store, tenant: str, shadow: str, live: str | None = None,
                   since: datetime | None = None, until: datetime | None = None,
                   samples: int = 10) -> ShadowComparison:
    """``shadow``'s decisions next to ``live``'s over the same window.

    Without ``since`` and ``until`` the window runs from the shadow program's first
    shadow decision to its last; ``live`` may be the same program (a shadow channel
    next to the program's live channels)."""
    if since is None and until is None:
        since, until = shadow_window(store, tenant, shadow)
    with store.tx() as tx:
        mine = _outcomes(tx, tenant, shadow, since, until)
        theirs = _outcomes(tx, tenant, live, since, until) if live else None
        decided = messaged = None
        if live:
            decided = _overlap(tx, tenant, shadow, live, since, until, None, None)
            messaged = _overlap(tx, tenant, shadow, live, since, until, (SHADOW,), SENT)
        sample = _samples(tx, tenant, shadow, since, until, samples)
    return ShadowComparison(tenant, mine, theirs, since, until, decided, messaged, sample)


def shadow_report(store: Store, tenant: str, since: datetime | None = None,
                  until: datetime | None = None, samples: int = 10) -> list[ShadowComparison]:
    """One comparison (without a live counterpart) per program with shadow decisions."""
    return [compare_shadow(store, tenant, p, since=since, until=until, samples=samples)
            for p in shadow_programs(store, tenant, since, until)]


__all__ = ["SENT", "Outcomes", "Overlap", "ShadowComparison", "WouldSend", "compare_shadow", "outcomes",
           "shadow_programs", "shadow_report", "shadow_window"]
