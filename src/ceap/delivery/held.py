"""Deliveries a crash left in doubt, and dead letters: the store's totals (for the
dispatch summary) and the resolution of held and dead ones without SQL.

Crash recovery marks every attempt it finds in flight (``ambiguous_at``, and
``ambiguity``: ``held``, ``resent``, ``deduplicated``); the marks stay when
the delivery is later sent, so every possible duplicate can still be found.
A held delivery (status ``ambiguous``) waits for a person, who resolves it:

- ``resend``: back to ``queued`` (same idempotency key), sent by the next pass;
- ``mark-sent``: recorded ``sent`` (the provider has it), its candidate ``sent``;
- ``drop``: ``cancelled``, never sent again; its candidate ``cancelled`` when it
  has no other delivery open or sent.

A dead delivery (status ``dead``: its retries ran out) is resolved the same way;
``resend`` gives it a fresh set of attempts, and is refused while its candidate has
another delivery open or sent (a fallback channel took over: resending would send twice).

Each resolution is one transaction and leaves a ``resolved`` event with the reason,
and an audit log entry per delivery (who, from where, why).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from ceap import audit
from ceap.delivery.model import Delivery
from ceap.delivery.outbox import SELECT_DELIVERY, delivery_from_row
from ceap.errors import CeapError
from ceap.observability.metrics import set_store_deliveries
from ceap.store.base import Store
from ceap.store.delivery_schema import HELD
from ceap.store.tx import Tx

Action = Literal["resend", "mark-sent", "drop"]
ACTIONS: tuple[Action, ...] = ("resend", "mark-sent", "drop")
#: statuses of a delivery the provider accepted
ACCEPTED = ("sent", "delivered", "bounced", "complained", "failed")
log = logging.getLogger(__name__)
_AMBIGUITY = {"resend": "resent", "mark-sent": "marked_sent", "drop": "dropped"}
#: what can be resolved: held after a crash, or dead after its last attempt
RESOLVABLE = ("ambiguous", "dead")
_OPEN = "('queued', 'sending', 'sent', 'delivered', 'ambiguous')"


class ResolveError(CeapError):
    """A resolution that names deliveries that cannot be resolved; nothing was changed."""


@dataclass(frozen=True)
class StoreTotals:
    """What the whole store holds now (every tenant), whatever this run did."""

    queued: int
    sending: int
    held: int                 # ambiguous: in flight at a crash, not resent, for a person
    possible_duplicates: int  # resent after a crash and accepted again: the customer may have two
    dead: int


def store_totals(store: Store) -> StoreTotals:
    with store.tx() as tx:
        by_status = {s: int(n) for s, n in tx.execute(  # the held index alone
            f"SELECT status, count(*) FROM deliveries WHERE {HELD} GROUP BY status").fetchall()}
        by_status["queued"] = int(tx.execute(  # the due index alone
            "SELECT count(*) FROM deliveries WHERE status = 'queued'").fetchone()[0])
        dup = tx.execute(f"SELECT count(*) FROM deliveries WHERE ambiguous_at IS NOT NULL AND "
                         f"ambiguity = 'resent' AND status IN ({tx.placeholders(len(ACCEPTED))})",
                         ACCEPTED).fetchone()[0]
    return StoreTotals(by_status.get("queued", 0), by_status.get("sending", 0),
                       by_status.get("ambiguous", 0), int(dup), by_status.get("dead", 0))


def export_totals(store: Store) -> None:
    """``ceap_store_deliveries`` from ``store_totals`` (one grouped count). A failure to read
    is logged (its type only), not raised: the metrics never stop a dispatcher."""
    try:
        t = store_totals(store)
    except Exception as exc:
        log.warning("could not read the delivery totals for the metrics: %s", type(exc).__name__)
        return
    set_store_deliveries({"queued": t.queued, "sending": t.sending, "ambiguous": t.held,
                          "dead": t.dead, "possible_duplicate": t.possible_duplicates})


def resolve(store: Store, tenant_id: str, action: Action, reason: str, now: datetime, *,
            ids: Sequence[int] = (), channel: str | None = None,
            program: str | None = None, status: str = "ambiguous", actor: str = "system",
            source: str | None = None) -> list[Delivery]:
    """Resolve held or dead deliveries: those in ``ids``, or with no ids every one of the
    tenant in ``status`` (``ambiguous`` or ``dead``; narrowed by ``channel`` and ``program``).
    Returns them as they were. ``ResolveError`` (nothing changed) when an id is unknown,
    neither held nor dead, or a dead one cannot be resent."""
    if action not in ACTIONS:
        raise ResolveError(f"unknown action {action!r}: expected one of {', '.join(ACTIONS)}")
    if status not in RESOLVABLE:
        raise ResolveError(f"unknown status {status!r}: expected one of {', '.join(RESOLVABLE)}")
    if not reason.strip():
        raise ResolveError("a reason is required (--reason): it is kept with the delivery")
    with store.tx() as tx:
        held = _pick(tx, tenant_id, ids, channel, program, status)
        if action == "resend":
            _check_resend(tx, held, strict=bool(ids))
        if held:
            _apply(tx, held, action, reason.strip(), now)
            for d in held:
                audit.record_tx(tx, tenant_id=tenant_id, actor=actor, source=source, at=now,
                                action=f"delivery.{action}", target=f"delivery:{d.id}",
                                detail={"reason": reason.strip(), "was": d.status, "channel": d.channel,
                                        "program": d.program})
    return held


def _check_resend(tx: Tx, found: list[Delivery], strict: bool) -> None:
    """A dead delivery whose candidate has another delivery open or sent is not resent:
    named by id, nothing changes; picked by status, it is left out."""
    problems, skip = [], []
    for d in found:
        if d.status != "dead":
            continue
        other = tx.execute(f"SELECT count(*) FROM deliveries WHERE candidate_id = ? AND id <> ? "
                           f"AND status IN {_OPEN}", (d.candidate_id, d.id)).fetchone()[0]
        if other:
            problems.append(f"delivery {d.id}: its candidate has another delivery open or sent "
                            "(a fallback?): resending would send twice")
            skip.append(d)
    if problems and strict:
        raise ResolveError("; ".join(problems) + ": nothing was changed")
    for d in skip:
        found.remove(d)


def _pick(tx: Tx, tenant_id: str, ids: Sequence[int], channel: str | None,
          program: str | None, status: str = "ambiguous") -> list[Delivery]:
    where: list[str] = ["tenant_id = ?"]
    params: list[Any] = [tenant_id]
    if ids:
        where.append(f"id IN ({tx.placeholders(len(ids))})")
        params.extend(ids)
    else:  # by the held index (SQLite: ``+`` keeps it off the tenant indexes)
        where = [f"{'+' if tx.dialect == 'sqlite' else ''}tenant_id = ?", "status = ?", HELD]
        params.append(status)
    for column, value in (("channel", channel), ("program", program)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    rows = tx.execute(f"{SELECT_DELIVERY} WHERE {' AND '.join(where)} ORDER BY id",
                      params).fetchall()
    found = [delivery_from_row(r) for r in rows]
    if ids:
        by_id = {d.id: d for d in found}
        scope = " (or not on that channel/program)" if channel or program else ""
        problems = [f"delivery {i}: not found for tenant {tenant_id!r}{scope}" if i not in by_id
                    else f"delivery {i} is {by_id[i].status}, not held (ambiguous) nor dead"
                    for i in dict.fromkeys(ids) if i not in by_id or by_id[i].status not in RESOLVABLE]
        if problems:
            raise ResolveError("; ".join(problems) + ": nothing was changed")
    return found


def _apply(tx: Tx, held: list[Delivery], action: Action, reason: str, now: datetime) -> None:
    stamp = tx.ts(now)
    how = _AMBIGUITY[action]
    for start in range(0, len(held), 500):
        ids = [d.id for d in held[start:start + 500]]
        only_held = f"WHERE id IN ({tx.placeholders(len(ids))}) AND status IN ('ambiguous', 'dead')"
        # the crash mark is for deliveries a crash touched; a dead letter keeps none
        mark = "ambiguity = CASE WHEN ambiguous_at IS NULL THEN ambiguity ELSE ? END"
        if action == "resend":  # a dead letter starts its attempts again
            tx.execute("UPDATE deliveries SET attempts = CASE WHEN status = 'dead' THEN 0 ELSE attempts END, "
                       "status = 'queued', next_attempt_at = ?, lease_until = NULL, "
                       f"worker = NULL, last_error = NULL, {mark}, updated_at = ? {only_held}",
                       (stamp, how, stamp, *ids))
        elif action == "mark-sent":
            tx.execute("UPDATE deliveries SET status = 'sent', sent_at = ?, lease_until = NULL, "
                       f"last_error = NULL, {mark}, updated_at = ? {only_held}",
                       (stamp, how, stamp, *ids))
        else:
            tx.execute("UPDATE deliveries SET status = 'cancelled', lease_until = NULL, last_error = ?, "
                       f"{mark}, updated_at = ? {only_held}",
                       (f"dropped by hand: {reason}", how, stamp, *ids))
    if action == "mark-sent":
        tx.executemany("UPDATE candidates SET status = 'sent', updated_at = ? WHERE id = ? "
                       "AND status <> 'sent'", [(stamp, c) for c in sorted({d.candidate_id for d in held})])
    elif action == "resend":  # a dead letter's candidate was failed: it is in flight again
        tx.executemany("UPDATE candidates SET status = 'dispatched', status_reason = NULL, updated_at = ? "
                       "WHERE id = ? AND status = 'failed'",
                       [(stamp, d.candidate_id) for d in held if d.status == "dead"])
    elif action == "drop":
        _cancel_candidates(tx, held, reason, stamp)
    tx.executemany("INSERT INTO delivery_events (tenant_id, delivery_id, status, detail, created_at) "
                   "VALUES (?, ?, 'resolved', ?, ?)",
                   [(d.tenant_id, d.id, f"{action}: {reason}", stamp) for d in held])


def _cancel_candidates(tx: Tx, dropped: list[Delivery], reason: str, stamp: Any) -> None:
    """A candidate whose dropped delivery was its last hope is ``cancelled``."""
    for candidate_id in sorted({d.candidate_id for d in dropped}):
        open_ = tx.execute("SELECT count(*) FROM deliveries WHERE candidate_id = ? AND status IN "
                           "('queued', 'sending', 'sent', 'delivered', 'ambiguous')",
                           (candidate_id,)).fetchone()[0]
        if not open_:
            tx.execute("UPDATE candidates SET status = 'cancelled', status_reason = ?, updated_at = ? "
                       "WHERE id = ? AND status = 'dispatched'",
                       (f"delivery dropped by hand after a crash: {reason}", stamp, candidate_id))
