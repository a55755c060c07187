"""The journey tick: enter the customers a journey program selected, then move every
active entry along its steps as far as it can go now.

A program with ``journey`` writes its selected candidates with status ``journey``: they are
tickets, never sent. :func:`tick` turns each ticket into an entry (status ``entered``) or
refuses it under the re-entry rule (``cancelled``, with the reason), then walks each
active entry: a ``send`` step writes the step's message as an ordinary ``pending``
candidate (the dispatcher applies consent, quiet hours, caps and arbitration to it), a
``wait_for`` step moves on when one of its events came within the window or when the
window has passed by the clock, a ``branch`` step by its condition, ``exit`` and ``end``
finish the entry. ``exit_on`` events end it before anything else.

Exactly one message per step: the message's dedup key is
``journey:<program>:<customer>:<entry id>:<step>:<seq>`` and each entry's move (its new
place, its log rows and its messages) is one transaction, conditional on the place it
was read at (``seq``); a tick killed at any point leaves each entry either moved with
its messages or not moved at all, and a second tick over the same entry adds nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ceap.durations import format_duration
from ceap.journeys import deadlines
from ceap.journeys.branches import branch_results
from ceap.journeys.state import (
    Entry,
    active_entries,
    in_list,
    insert_candidate,
    insert_candidates,
    message_dedup_key,
    message_row,
    seen_events,
)
from ceap.model import utcnow
from ceap.spec.journey import END, Journey
from ceap.store.base import Store
from ceap.store.schema import loads

log = logging.getLogger(__name__)

#: entries (or tickets) written per transaction
CHUNK = 200
#: moves one entry may make in one tick (a sound journey stops at a wait long before)
MAX_MOVES = 200


@dataclass
class TickStats:
    entered: int = 0
    refused: int = 0
    messages: int = 0
    moved: int = 0
    completed: int = 0
    exited: int = 0
    waiting: int = 0
    #: entries another tick moved first (nothing written for them here)
    conflicts: int = 0

    def add(self, other: TickStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Walk:
    """Where an entry ends up in this tick, and what happened on the way."""

    step: str
    since: datetime
    status: str = "active"
    reason: str | None = None
    #: ``(step, what, send step or None)`` per move, in order
    moves: list[tuple[str, str, Any]] = field(default_factory=list)


def tick(store: Store, specs: Iterable[Any], now: datetime | None = None,
         clock: Callable[[], datetime] | None = None,
         keep: Callable[[], bool] | None = None) -> TickStats:
    """Enter and advance every live journey program of ``specs`` once, as of ``now``.

    ``keep`` is asked before each program; when it says False (the ticker lost its lease,
    :mod:`ceap.journeys.ticker`) the tick stops there."""
    now = now or (clock or utcnow)()
    total = TickStats()
    for spec in specs:
        if spec.journey is None or spec.mode != "live":
            continue
        if keep is not None and not keep():
            log.warning("journey tick stopped before %s: the ticker's lease was lost", spec.name)
            break
        total.add(enter(store, spec, now))
        total.add(advance(store, spec, now))
    return total


# -- entering ----------------------------------------------------------------------------
def enter(store: Store, spec: Any, now: datetime) -> TickStats:
    """Turn the program's tickets (status ``journey``) into entries, by the re-entry rule:
    a chunk of tickets per transaction, a few statements per chunk."""
    stats = TickStats()
    journey: Journey = spec.journey
    version, first = journey.version(), journey.first
    while True:
        with store.tx() as tx:
            lock = " FOR UPDATE SKIP LOCKED" if tx.dialect == "postgres" else ""
            tickets = tx.execute(
                "SELECT id, tenant_id, customer_id, subject_id, score, model, context, payload, variant "
                f"FROM candidates WHERE program = ? AND status = 'journey' ORDER BY id LIMIT {CHUNK}{lock}",
                (spec.name,)).fetchall()
            if not tickets:
                return stats
            last = _last_entries(tx, spec.name, {(t[1], t[2]) for t in tickets})
            refused: list[tuple[str, Any, int]] = []
            admitted = []
            for ticket in tickets:
                key = (ticket[1], ticket[2])
                refusal = _refusal(journey, last.get(key), now)
                if refusal:
                    refused.append((f"journey: {refusal}", tx.ts(now), ticket[0]))
                    continue
                admitted.append(ticket)
                last[key] = (0, "active", now)  # a second ticket in this chunk finds them inside
            tx.executemany("UPDATE candidates SET status = 'cancelled', status_reason = ?, updated_at = ? "
                           "WHERE id = ? AND status = 'journey'", refused)
            stats.refused += len(refused)
            if not admitted:
                continue
            cond, args = in_list(tx, "id", [t[0] for t in admitted])
            claimed = {int(r[0]) for r in tx.execute(
                f"UPDATE candidates SET status = 'entered', status_reason = ?, updated_at = ? WHERE {cond} "
                "AND status = 'journey' RETURNING id", (f"journey: entered at {first}", tx.ts(now), *args))}
            stats.conflicts += len(admitted) - len(claimed)
            rows = [(tenant, spec.name, customer, cid, version, first, tx.ts(now),
                     _json({"score": score, "model": model, "subject_id": subject, "variant": variant,
                            "context": loads(context) or {}, "payload": loads(payload) or {}}),
                     tx.ts(now), tx.ts(now))
                    for cid, tenant, customer, subject, score, model, context, payload, variant in admitted
                    if cid in claimed]
            tx.executemany("INSERT INTO journey_entries (tenant_id, program, customer_id, candidate_id, "
                           "version, step, seq, step_since, status, data, entered_at, updated_at) "
                           "VALUES (?, ?, ?, ?, ?, ?, 0, ?, 'active', ?, ?, ?)", rows)
            ids: dict[int, int] = {}
            for tenant in sorted({t[1] for t in admitted}):  # by the unique (tenant, program, ticket)
                cond, args = in_list(tx, "candidate_id", sorted(t[0] for t in admitted
                                                                if t[1] == tenant and t[0] in claimed))
                ids.update(tx.execute(f"SELECT candidate_id, id FROM journey_entries WHERE tenant_id = ? "
                                      f"AND program = ? AND {cond}", (tenant, spec.name, *args),
                                      prepare=False).fetchall())
            tx.executemany("INSERT INTO journey_log (tenant_id, program, customer_id, entry_id, seq, step, "
                           "what, at) VALUES (?, ?, ?, ?, 0, ?, 'entered', ?)",
                           [(t, p, c, ids[cid], first, tx.ts(now)) for t, p, c, cid, *_ in rows])
            wait = journey.step(first)
            if wait is not None and wait.wait_for is not None:  # a journey that starts with a wait
                deadlines.arm(tx, spec.name, [(t, c, ids[cid], 0, now, now + wait.wait_for.within)
                                              for t, _, c, cid, *_ in rows])
            stats.entered += len(rows)


def _last_entries(tx: Any, program: str, customers: set[tuple[str, str]]
                  ) -> dict[tuple[str, str], tuple[int, str, Any]]:
    """``(tenant, customer)`` -> ``(id, status, entered_at)`` of their latest entry (read by
    the index on tenant, customer and program)."""
    found: dict[tuple[str, str], tuple[int, str, Any]] = {}
    for tenant in sorted({t for t, _ in customers}):
        cond, args = in_list(tx, "customer_id", sorted(c for t, c in customers if t == tenant))
        rows = tx.execute(f"SELECT customer_id, id, status, entered_at FROM journey_entries "
                          f"WHERE tenant_id = ? AND {cond} AND program = ? ORDER BY entered_at, id",
                          (tenant, *args, program), prepare=False).fetchall()
        for customer, entry_id, status, entered_at in rows:
            found[(tenant, customer)] = (int(entry_id), status, entered_at)  # the latest wins
    return found


def _refusal(journey: Journey, last: tuple[int, str, Any] | None, now: datetime) -> str | None:
    """Why the customer may not enter now, given their latest entry (None: they may)."""
    if last is None:
        return None
    entry_id, status, entered_at = last
    entry = f"entry {entry_id}" if entry_id else "an earlier ticket of this tick"
    if status == "active":
        return f"already inside ({entry})"
    if journey.reentry == "never":
        return f"re-entry never ({entry})"
    if journey.reentry == "always":
        return None
    assert isinstance(journey.reentry, timedelta)
    since = loads_time(entered_at)
    if now - since < journey.reentry:
        return f"re-entry after {format_duration(journey.reentry)} of the last entry ({entry})"
    return None


def loads_time(value: Any) -> datetime:
    from ceap.store.schema import from_iso

    found = from_iso(value)
    assert found is not None
    return found


# -- advancing ---------------------------------------------------------------------------
def advance(store: Store, spec: Any, now: datetime) -> TickStats:
    """Move every active entry of ``spec`` as far as it goes now."""
    journey: Journey = spec.journey
    with store.tx() as tx:
        entries = active_entries(tx, spec.name)
        seen = seen_events(tx, spec.name, journey.event_types()) if entries else {}
    return move(store, spec, entries, seen, now)


def move(store: Store, spec: Any, entries: Sequence[Entry],
         seen: dict[int, list[tuple[str, datetime]]], now: datetime) -> TickStats:
    """Walk ``entries`` (active, as read) with the events ``seen`` and write the moves, a
    chunk of entries per transaction: the tick's and the real-time worker's one way."""
    stats = TickStats()
    journey: Journey = spec.journey
    if not entries:
        return stats
    branches = branch_results(journey, entries)
    walks = [(e, walk(e, journey, now, seen.get(e.id, []), branches)) for e in entries]
    moving = [(e, w) for e, w in walks if w.moves]
    stats.waiting = len(walks) - len(moving)
    for start in range(0, len(moving), CHUNK):
        chunk = moving[start:start + CHUNK]
        with store.tx() as tx:
            moved = write_walks(tx, spec, chunk, now)
        for entry, w in chunk:
            if entry.id not in moved:
                stats.conflicts += 1
                continue
            stats.moved += 1
            stats.messages += sum(1 for _, _, send in w.moves if send is not None)
            stats.completed += w.status == "completed"
            stats.exited += w.status == "exited"
            stats.waiting += w.status == "active"
    return stats


def walk(entry: Entry, journey: Journey, now: datetime, seen: Sequence[tuple[str, datetime]],
         branches: dict[str, dict[int, bool | str]]) -> Walk:
    """Where ``entry`` goes from its current step as of ``now`` (pure: no store)."""
    w = Walk(entry.step, entry.step_since)
    exit_event = next((kind for kind, ts in seen if kind in journey.exit_on and ts >= entry.entered_at),
                      None)
    if exit_event:
        return _end(w, "exited", f"exit_on {exit_event}")
    edges = journey.edges()
    for _ in range(MAX_MOVES):
        step = journey.step(w.step)
        if step is None:
            return _end(w, "exited", f"step {w.step!r} is no longer in the journey")
        targets = dict(edges[step.id])
        if step.send is not None:
            w.since = max(w.since, now)
            w.moves.append((step.id, "sent", step.send))
            target = targets[""]
        elif step.wait_for is not None:
            wait = step.wait_for
            deadline = w.since + wait.within
            came = next(((kind, ts) for kind, ts in seen
                         if kind in wait.events and w.since <= ts <= deadline), None)
            if came is not None:
                w.moves.append((step.id, f"event {came[0]}", None))
                w.since, target = came[1], targets[came[0]]
            elif now >= deadline:
                w.moves.append((step.id, "timeout", None))
                w.since, target = deadline, targets["timeout"]
            else:
                return w
        elif step.branch is not None:
            result = branches.get(step.id, {}).get(entry.id, False)
            if isinstance(result, str):
                return _end(w, "exited", f"branch {step.id}: {result}")
            label = "then" if result else "else"
            w.moves.append((step.id, label, None))
            target = targets[label]
        else:
            return _end(w, "exited", str(step.exit))
        if target == END:
            return _end(w, "completed", "completed")
        w.step = target
    return _end(w, "exited", f"more than {MAX_MOVES} steps in one tick")


def _end(w: Walk, status: str, reason: str) -> Walk:
    w.status, w.reason = status, reason
    w.moves.append((w.step, reason if status == "completed" else f"exit: {reason}", None))
    return w


def write_walk(tx: Any, spec: Any, entry: Entry, w: Walk, now: datetime) -> bool:
    """Store one entry's moves and messages, if nobody moved it since it was read."""
    if not write_walk_entry(tx, entry, w, now):
        return False
    for n, (step, what, send) in enumerate(w.moves, start=entry.seq + 1):
        candidate = insert_candidate(tx, message_row(spec, entry, step, n, send, now)) if send else None
        tx.execute("INSERT INTO journey_log (tenant_id, program, customer_id, entry_id, seq, step, what, "
                   "candidate_id, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (entry.tenant_id, entry.program, entry.customer_id, entry.id, n, step, what[:500],
                    candidate, tx.ts(now)))
    rearm(tx, spec, [(entry, w)])
    return True


def write_walks(tx: Any, spec: Any, chunk: Sequence[tuple[Entry, Walk]], now: datetime) -> set[int]:
    """Store the moves and messages of a chunk of entries in ``tx``, each entry only if
    nobody moved it since it was read; the ids of the entries moved. A few statements per
    chunk, not per entry: the conditional updates (one ``UPDATE ... FROM unnest`` on
    PostgreSQL), the messages (one batch, then one read of their ids) and the log rows."""
    moved = _move_entries(tx, chunk, now)
    kept = [(e, w) for e, w in chunk if e.id in moved]
    sends = [message_row(spec, e, step, n, send, now)
             for e, w in kept for n, (step, _, send) in enumerate(w.moves, start=e.seq + 1) if send]
    ids = insert_candidates(tx, sends)
    tx.executemany("INSERT INTO journey_log (tenant_id, program, customer_id, entry_id, seq, step, what, "
                   "candidate_id, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   [(e.tenant_id, e.program, e.customer_id, e.id, n, step, what[:500],
                     ids[(e.tenant_id, message_dedup_key(spec.name, e.customer_id, e.id, step, n))]
                     if send else None, tx.ts(now))
                    for e, w in kept for n, (step, what, send) in enumerate(w.moves, start=e.seq + 1)])
    rearm(tx, spec, kept)
    return moved


def rearm(tx: Any, spec: Any, kept: Sequence[tuple[Entry, Walk]]) -> None:
    """Move the deadline timers (:mod:`ceap.journeys.deadlines`) of entries just moved: the
    old place's goes, a new wait's comes (in the transaction of the move)."""
    deadlines.disarm(tx, spec.name, [(e.tenant_id, e.customer_id, e.id, e.seq) for e, _ in kept])
    arms = []
    for e, w in kept:
        step = spec.journey.step(w.step) if w.status == "active" else None
        if step is not None and step.wait_for is not None:
            arms.append((e.tenant_id, e.customer_id, e.id, e.seq + len(w.moves), w.since,
                         w.since + step.wait_for.within))
    deadlines.arm(tx, spec.name, arms)


def _move_entries(tx: Any, chunk: Sequence[tuple[Entry, Walk]], now: datetime) -> set[int]:
    """The conditional updates of a chunk (``seq`` as read); the ids that changed."""
    if tx.dialect != "postgres" or not chunk:  # SQLite is in-process: no round trip per entry
        return {e.id for (e, w) in chunk if write_walk_entry(tx, e, w, now)}
    # lock the rows in id order first: a worker and a ticker moving overlapping chunks at once
    # then wait for each other instead of deadlocking (the UPDATE's join locks in any order)
    tx.execute("SELECT id FROM journey_entries WHERE id = ANY(CAST(? AS bigint[])) ORDER BY id FOR UPDATE",
               (sorted(e.id for e, _ in chunk),)).fetchall()
    columns = list(zip(*[(w.step, e.seq + len(w.moves), w.since, w.status, w.reason,
                          now if w.status != "active" else None, e.id, e.seq) for e, w in chunk],
                         strict=True))
    found = tx.execute(
        "UPDATE journey_entries AS e SET step = v.step, seq = v.seq, step_since = v.since, "
        "status = v.status, reason = v.reason, updated_at = ?, ended_at = v.ended "
        "FROM unnest(CAST(? AS text[]), CAST(? AS bigint[]), CAST(? AS timestamptz[]), "
        "CAST(? AS text[]), CAST(? AS text[]), CAST(? AS timestamptz[]), CAST(? AS bigint[]), "
        "CAST(? AS bigint[])) AS v(step, seq, since, status, reason, ended, id, old_seq) "
        "WHERE e.id = v.id AND e.seq = v.old_seq RETURNING e.id",
        (now, *[list(c) for c in columns])).fetchall()
    return {int(r[0]) for r in found}


def write_walk_entry(tx: Any, entry: Entry, w: Walk, now: datetime) -> bool:
    """One entry's conditional update (its new place), if nobody moved it since it was read."""
    ended = tx.ts(now) if w.status != "active" else None
    changed = tx.execute("UPDATE journey_entries SET step = ?, seq = ?, step_since = ?, status = ?, "
                         "reason = ?, updated_at = ?, ended_at = ? WHERE id = ? AND seq = ?",
                         (w.step, entry.seq + len(w.moves), tx.ts(w.since), w.status, w.reason,
                          tx.ts(now), ended, entry.id, entry.seq))
    return bool(changed.rowcount == 1)


def _json(value: Any) -> str:
    import json

    return json.dumps(value, default=str)


__all__ = ["TickStats", "Walk", "advance", "enter", "message_dedup_key", "move", "tick", "walk", "write_walk",
           "write_walks"]
