"""Deliveries a crash left in doubt: the store's totals (for the dispatch
summary) and the resolution of held ones without SQL.

Crash recovery marks every attempt it finds in flight (``ambiguous_at``, and
``ambiguity``: ``held``, ``resent``, ``deduplicated``); the marks stay when
the delivery is later sent, so every possible duplicate can still be found.
A held delivery (status ``ambiguous``) waits for a person, who resolves it:

- ``resend``: back to ``queued`` (same idempotency key), sent by the next pass;
- ``mark-sent``: recorded ``sent`` (the provider has it), its candidate ``sent``;
- ``drop``: ``cancelled``, never sent again; its candidate ``cancelled`` when it
  has no other delivery open or sent.

Each resolution is one transaction and leaves a ``resolved`` event with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from ceap.delivery.model import Delivery
from ceap.delivery.outbox import SELECT_DELIVERY, delivery_from_row
from ceap.errors import CeapError
from ceap.observability.metrics import set_store_deliveries
from ceap.store.base import Store
from ceap.store.tx import Tx

Action = Literal["resend", "mark-sent", "drop"]
ACTIONS: tuple[Action, ...] = ("resend", "mark-sent", "drop")
#: statuses of a delivery the provider accepted
ACCEPTED = ("sent", "delivered", "bounced", "complained", "failed")
log = logging.getLogger(__name__)
_AMBIGUITY = {"resend": "resent", "mark-sent": "marked_sent", "drop": "dropped"}


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
        by_status = {s: int(n) for s, n in tx.execute(
            "SELECT status, count(*) FROM deliveries WHERE status IN "
            "('queued', 'sending', 'ambiguous', 'dead') GROUP BY status").fetchall()}
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
            program: str | None = None) -> list[Delivery]:
    """Resolve held deliveries: those in ``ids``, or with no ids every held one of the
    tenant (narrowed by ``channel`` and ``program``). Returns them as they were.
    ``ResolveError`` (nothing changed) when an id is unknown or not held."""
    if action not in ACTIONS:
        raise ResolveError(f"unknown action {action!r}: expected one of {', '.join(ACTIONS)}")
    if not reason.strip():
        raise ResolveError("a reason is required (--reason): it is kept with the delivery")
    with store.tx() as tx:
        held = _pick(tx, tenant_id, ids, channel, program)
        if held:
            _apply(tx, held, action, reason.strip(), now)
    return held


def _pick(tx: Tx, tenant_id: str, ids: Sequence[int], channel: str | None,
          program: str | None) -> list[Delivery]:
    where: list[str] = ["tenant_id = ?"]
    params: list[Any] = [tenant_id]
    if ids:
        where.append(f"id IN ({tx.placeholders(len(ids))})")
        params.extend(ids)
    else:
        where.append("status = 'ambiguous'")
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
                    else f"delivery {i} is {by_id[i].status}, not held (ambiguous)"
                    for i in dict.fromkeys(ids) if i not in by_id or by_id[i].status != "ambiguous"]
        if problems:
            raise ResolveError("; ".join(problems) + ": nothing was changed")
    return found


def _apply(tx: Tx, held: list[Delivery], action: Action, reason: str, now: datetime) -> None:
    stamp = tx.ts(now)
    how = _AMBIGUITY[action]
    for start in range(0, len(held), 500):
        ids = [d.id for d in held[start:start + 500]]
        only_held = f"WHERE id IN ({tx.placeholders(len(ids))}) AND status = 'ambiguous'"
        if action == "resend":
            tx.execute("UPDATE deliveries SET status = 'queued', next_attempt_at = ?, lease_until = NULL, "
                       f"worker = NULL, last_error = NULL, ambiguity = ?, updated_at = ? {only_held}",
                       (stamp, how, stamp, *ids))
        elif action == "mark-sent":
            tx.execute("UPDATE deliveries SET status = 'sent', sent_at = ?, lease_until = NULL, "
                       f"last_error = NULL, ambiguity = ?, updated_at = ? {only_held}",
                       (stamp, how, stamp, *ids))
        else:
            tx.execute("UPDATE deliveries SET status = 'cancelled', lease_until = NULL, last_error = ?, "
                       f"ambiguity = ?, updated_at = ? {only_held}",
                       (f"dropped by hand: {reason}", how, stamp, *ids))
    if action == "mark-sent":
        tx.executemany("UPDATE candidates SET status = 'sent', updated_at = ? WHERE id = ? "
                       "AND status <> 'sent'", [(stamp, c) for c in sorted({d.candidate_id for d in held})])
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
