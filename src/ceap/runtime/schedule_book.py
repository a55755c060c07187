"""What the scheduler keeps in the store: each program's state, the log of its windows,
and the lease that makes one scheduler the active one.

Every write is one short transaction through ``Store.tx``, so the same SQL runs on
SQLite and PostgreSQL. Times come from the caller's clock (hosts' clocks must agree
to well within a lease), which is also what lets tests drive it with a fake clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ceap.store.base import Store
from ceap.store.schema import from_iso

_STATE = ("tenant_id", "program", "cron", "timezone", "first_seen", "last_fire", "last_status",
          "last_run_id", "last_run_at", "skipped", "running_by", "running_until", "running_fire",
          "updated_at")
_LOG = ("program", "fire_at", "status", "run_id", "windows", "detail", "scheduler", "created_at")
_TIMES = {"first_seen", "last_fire", "last_run_at", "running_until", "running_fire", "updated_at", "fire_at",
          "created_at", "since", "until"}


def _row(names: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    return {n: from_iso(v) if n in _TIMES else v for n, v in zip(names, row, strict=True)}


@dataclass(frozen=True)
class ProgramState:
    """One program's row: the last window handled, and who is running it now."""

    tenant_id: str
    program: str
    cron: str | None
    timezone: str | None
    first_seen: datetime
    last_fire: datetime | None  # the latest window run or skipped
    last_status: str | None  # succeeded, failed, skipped (a run's status), paused
    last_run_id: str | None
    last_run_at: datetime | None
    skipped: int  # windows skipped so far (catch-up and overruns)
    running_by: str | None
    running_until: datetime | None
    running_fire: datetime | None  # the window whose run started and has no outcome yet
    updated_at: datetime


@dataclass(frozen=True)
class LogEntry:
    """A decision about one window (or a run of skipped windows: ``windows`` > 1)."""

    program: str
    fire_at: datetime
    status: str  # succeeded, failed, skipped (a run's), missed, overrun, resumed-*
    run_id: str | None
    windows: int
    detail: str | None
    scheduler: str | None
    created_at: datetime


@dataclass(frozen=True)
class Lease:
    name: str
    holder: str
    since: datetime  # when this holder's unbroken hold began
    until: datetime


class ScheduleBook:
    """The schedule tables of one tenant."""

    def __init__(self, store: Store, tenant: str):
        self.store = store
        self.tenant = tenant

    # -- program state -----------------------------------------------------------
    def states(self) -> dict[str, ProgramState]:
        with self.store.tx() as tx:
            rows = tx.execute(f"SELECT {', '.join(_STATE)} FROM schedule_state WHERE tenant_id = ?",
                              (self.tenant,)).fetchall()
        return {r[1]: ProgramState(**_row(_STATE, r)) for r in rows}

    def state(self, program: str) -> ProgramState | None:
        with self.store.tx() as tx:
            row = tx.execute(f"SELECT {', '.join(_STATE)} FROM schedule_state "
                             "WHERE tenant_id = ? AND program = ?", (self.tenant, program)).fetchone()
        return ProgramState(**_row(_STATE, row)) if row else None

    def ensure(self, program: str, cron: str, timezone: str, now: datetime) -> ProgramState:
        """The program's state, created on first sight (its windows start after ``now``)."""
        with self.store.tx() as tx:
            tx.execute("INSERT INTO schedule_state (tenant_id, program, cron, timezone, first_seen, "
                       "skipped, updated_at) VALUES (?, ?, ?, ?, ?, 0, ?) "
                       "ON CONFLICT (tenant_id, program) DO NOTHING",
                       (self.tenant, program, cron, timezone, tx.ts(now), tx.ts(now)))
            tx.execute("UPDATE schedule_state SET cron = ?, timezone = ? WHERE tenant_id = ? "
                       "AND program = ? AND (cron IS NULL OR cron <> ? OR timezone IS NULL "
                       "OR timezone <> ?)", (cron, timezone, self.tenant, program, cron, timezone))
        state = self.state(program)
        assert state is not None
        return state

    def claim(self, program: str, holder: str, now: datetime, ttl: timedelta) -> bool:
        """Mark the program as running by ``holder`` until ``now + ttl``, unless another
        holder's mark is still valid: a run never overlaps itself."""
        with self.store.tx() as tx:
            cur = tx.execute("UPDATE schedule_state SET running_by = ?, running_until = ?, updated_at = ? "
                             "WHERE tenant_id = ? AND program = ? AND (running_by IS NULL "
                             "OR running_by = ? OR running_until < ?)",
                             (holder, tx.ts(now + ttl), tx.ts(now), self.tenant, program, holder,
                              tx.ts(now)))
            return bool(cur.rowcount == 1)

    def renew(self, program: str, holder: str, until: datetime) -> bool:
        with self.store.tx() as tx:
            cur = tx.execute("UPDATE schedule_state SET running_until = ? WHERE tenant_id = ? "
                             "AND program = ? AND running_by = ?",
                             (tx.ts(until), self.tenant, program, holder))
            return bool(cur.rowcount == 1)

    def starting(self, program: str, holder: str, fire_at: datetime) -> None:
        """Note the window about to run: if the run never records an outcome (a crash), the
        next scheduler runs that window again whatever the catch-up policy."""
        with self.store.tx() as tx:
            tx.execute("UPDATE schedule_state SET running_fire = ? WHERE tenant_id = ? AND program = ? "
                       "AND running_by = ?", (tx.ts(fire_at), self.tenant, program, holder))

    def unclaim(self, program: str, holder: str) -> None:
        with self.store.tx() as tx:
            tx.execute("UPDATE schedule_state SET running_by = NULL, running_until = NULL "
                       "WHERE tenant_id = ? AND program = ? AND running_by = ?",
                       (self.tenant, program, holder))

    def record(self, program: str, fire_at: datetime, status: str, now: datetime, *,
               holder: str, run_id: str | None = None, run_at: datetime | None = None,
               windows: int = 1, detail: str | None = None, last: datetime | None = None,
               log: bool = True) -> None:
        """Record a decision on windows up to ``last`` (default ``fire_at``): the state moves
        past them (never back) and, with ``log``, a line goes to the log. Skips count up."""
        last = last or fire_at
        skipped = windows if status in ("missed", "overrun") else 0
        with self.store.tx() as tx:
            if log:
                tx.execute("INSERT INTO schedule_log (tenant_id, program, fire_at, status, run_id, "
                           "windows, detail, scheduler, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (self.tenant, program, tx.ts(fire_at), status, run_id, windows, detail,
                            holder, tx.ts(now)))
            if run_id is not None or status == "paused":
                tx.execute("UPDATE schedule_state SET last_status = ?, last_run_id = ?, "
                           "last_run_at = ?, running_fire = NULL WHERE tenant_id = ? AND program = ?",
                           (status, run_id, tx.ts(run_at), self.tenant, program))
            tx.execute("UPDATE schedule_state SET last_fire = ?, skipped = skipped + ?, updated_at = ? "
                       "WHERE tenant_id = ? AND program = ? AND (last_fire IS NULL OR last_fire < ?)",
                       (tx.ts(last), skipped, tx.ts(now), self.tenant, program, tx.ts(last)))

    def history(self, program: str | None = None, limit: int = 50) -> list[LogEntry]:
        sql = f"SELECT {', '.join(_LOG)} FROM schedule_log WHERE tenant_id = ?"
        params: list[Any] = [self.tenant]
        if program:
            sql += " AND program = ?"
            params.append(program)
        sql += " ORDER BY fire_at DESC, id DESC LIMIT ?"
        with self.store.tx() as tx:
            rows = tx.execute(sql, [*params, limit]).fetchall()
        return [LogEntry(**_row(_LOG, r)) for r in rows]

    def last_successes(self) -> dict[str, datetime]:
        """Each program's latest window whose run succeeded (for the metrics)."""
        with self.store.tx() as tx:
            rows = tx.execute("SELECT program, max(fire_at) FROM schedule_log WHERE tenant_id = ? "
                              "AND status = 'succeeded' GROUP BY program", (self.tenant,)).fetchall()
        found = {program: from_iso(at) for program, at in rows}
        return {program: at for program, at in found.items() if at is not None}

    # -- the active scheduler ----------------------------------------------------
    def acquire(self, name: str, holder: str, now: datetime, ttl: timedelta) -> Lease | None:
        """Take or renew the lease ``name``: free, lapsed or already ours. The lease when
        ``holder`` has it after the call, else None. A lapsed lease starts a new hold."""
        with self.store.tx() as tx:
            tx.execute("INSERT INTO scheduler_lease (name, holder, since, until) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT (name) DO NOTHING", (name, holder, tx.ts(now), tx.ts(now + ttl)))
            tx.execute("UPDATE scheduler_lease SET since = CASE WHEN holder = ? AND until >= ? "
                       "THEN since ELSE ? END, holder = ?, until = ? "
                       "WHERE name = ? AND (holder = ? OR until < ?)",
                       (holder, tx.ts(now), tx.ts(now), holder, tx.ts(now + ttl), name, holder,
                        tx.ts(now)))
        lease = self.lease(name)
        return lease if lease is not None and lease.holder == holder else None

    def lease(self, name: str) -> Lease | None:
        with self.store.tx() as tx:
            row = tx.execute("SELECT name, holder, since, until FROM scheduler_lease WHERE name = ?",
                             (name,)).fetchone()
        return Lease(**_row(("name", "holder", "since", "until"), row)) if row else None

    def release(self, name: str, holder: str, now: datetime) -> None:
        """Give the lease up now (a clean stop), so another scheduler takes over at once."""
        with self.store.tx() as tx:
            tx.execute("UPDATE scheduler_lease SET until = ? WHERE name = ? AND holder = ?",
                       (tx.ts(now - timedelta(seconds=1)), name, holder))


__all__ = ["Lease", "LogEntry", "ProgramState", "ScheduleBook"]
