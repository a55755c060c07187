"""Wait deadlines as timers: one row of the real-time engine's ``timers`` table per entry
waiting at a ``wait_for`` step, fired by the real-time worker on the wall clock.

The row's ``program`` is ``journey:<program>`` (a program name holds no ``:``, so these
never mix with the absence timers of ``ceap.realtime.timers``), its ``event_id`` is
``<entry id>:<seq>`` (the entry's place at the wait), ``after_ts`` when the wait began and
``fire_at`` its deadline. A row is written (or moved) in the transaction that leaves the
entry at the wait and deleted in the one that moves it on, so it exists exactly while the
entry waits there. Firing claims due rows for a lease (``UPDATE ... RETURNING``, as the
absence timers do): one worker takes a deadline at a time; one killed before it moved the
entry leaves the row to be taken again when the lease ends, and the entry's conditional
move (on ``seq``) makes a second firing write nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from ceap.store.base import Store
from ceap.store.schema import from_iso

PREFIX = "journey:"
#: how many due deadlines one firing claims (the rest: the next firing)
CLAIM = 5000

#: ``(tenant, customer, entry id, seq, wait began, deadline)``
Deadline = tuple[str, str, int, int, datetime, datetime]


def timer_program(program: str) -> str:
    return f"{PREFIX}{program}"


def timer_key(entry_id: int, seq: int) -> str:
    return f"{entry_id}:{seq}"


def arm(tx: Any, program: str, rows: Sequence[Deadline]) -> None:
    """Write (or move, unclaimed) the deadline timers of entries left at a wait."""
    if not rows:
        return
    tx.executemany(
        "INSERT INTO timers (tenant_id, program, customer_id, event_id, after_ts, fire_at, partition_key) "
        "VALUES (?, ?, ?, ?, ?, ?, NULL) ON CONFLICT (tenant_id, program, customer_id, event_id) "
        "DO UPDATE SET after_ts = excluded.after_ts, fire_at = excluded.fire_at, claimed_until = NULL",
        [(t, timer_program(program), c, timer_key(e, s), tx.ts(since), tx.ts(deadline))
         for t, c, e, s, since, deadline in rows])


def disarm(tx: Any, program: str, rows: Sequence[tuple[str, str, int, int]]) -> None:
    """Delete the timers of ``(tenant, customer, entry id, seq)`` (an entry moved on)."""
    if rows:
        tx.executemany("DELETE FROM timers WHERE tenant_id = ? AND program = ? AND customer_id = ? "
                       "AND event_id = ?",
                       [(t, timer_program(program), c, timer_key(e, s)) for t, c, e, s in rows])


def claim(store: Store, programs: Sequence[str], now: datetime, lease: timedelta
          ) -> list[tuple[str, str, str, int, int]]:
    """Claim, for ``lease``, the deadlines of ``programs`` due at ``now`` that nobody holds;
    ``(tenant, program, customer, entry id, seq)`` of each (at most ``CLAIM``, earliest first)."""
    if not programs:
        return []
    names = [timer_program(p) for p in programs]
    with store.tx() as tx:
        marks = tx.placeholders(len(names))
        due = (f"program IN ({marks}) AND fire_at <= ? AND (claimed_until IS NULL OR claimed_until < ?)")
        args = (*names, tx.ts(now), tx.ts(now))
        if tx.execute(f"SELECT 1 FROM timers WHERE {due} LIMIT 1", args).fetchone() is None:
            return []  # the usual case: a read, no write lock
        # PostgreSQL: without the row locks a second claimer waits for the first one's
        # commit, then claims the same rows again (the subquery is not re-read)
        lock = " FOR UPDATE SKIP LOCKED" if tx.dialect == "postgres" else ""
        rows = tx.execute(
            f"UPDATE timers SET claimed_until = ? WHERE (tenant_id, program, customer_id, event_id) IN "
            f"(SELECT tenant_id, program, customer_id, event_id FROM timers WHERE {due} "
            f"ORDER BY fire_at LIMIT {CLAIM}{lock}) RETURNING tenant_id, program, customer_id, event_id",
            (tx.ts(now + lease), *args)).fetchall()
    out = []
    for tenant, program, customer, key in rows:
        entry_id, seq = str(key).split(":")
        out.append((str(tenant), str(program)[len(PREFIX):], str(customer), int(entry_id), int(seq)))
    return out


def pending(store: Store, program: str) -> list[tuple[int, int, datetime]]:
    """``(entry id, seq, deadline)`` of a program's deadline timers (for tests and status)."""
    with store.tx() as tx:
        rows = tx.execute("SELECT event_id, fire_at FROM timers WHERE program = ? ORDER BY event_id",
                          (timer_program(program),)).fetchall()
    out = []
    for key, fire_at in rows:
        entry_id, seq = str(key).split(":")
        when = from_iso(fire_at)
        assert when is not None
        out.append((int(entry_id), int(seq), when))
    return out


__all__ = ["PREFIX", "arm", "claim", "disarm", "pending", "timer_key", "timer_program"]
