"""Crash recovery of the outbox: attempts a dead worker left ``sending`` are resolved
(requeued or held as ambiguous)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ceap.delivery.model import Delivery
from ceap.delivery.outbox_rows import DELIVERY_COLS, delivery_from_row
from ceap.store.base import Store
from ceap.store.delivery_schema import HELD
from ceap.store.tx import Tx


@dataclass
class Recovery:
    """What a restart found in flight: requeued (provider deduplicates, or resend
    was asked for) and marked ambiguous (not resent)."""

    requeued: list[Delivery]
    ambiguous: list[Delivery]


class OutboxRecovery:
    """``recover``, and the delivery events it writes (for ``Outbox``)."""

    store: Store
    worker: str

    def _event(self, tx: Tx, d: Delivery, status: str, detail: str | None, now: datetime) -> None:
        tx.execute("INSERT INTO delivery_events (tenant_id, delivery_id, status, detail, created_at) "
                   "VALUES (?, ?, ?, ?, ?)", (d.tenant_id, d.id, status, detail, tx.ts(now)))

    # -- crash recovery ----------------------------------------------------
    def recover(self, now: datetime, resend: set[str],
                deduplicated: set[str] | frozenset[str] = frozenset()) -> Recovery:
        """Resolve attempts left ``sending`` by a worker whose lease ran out:
        channels in ``resend`` (resending was asked for, or the provider deduplicates:
        ``deduplicated``) go back to the queue, the others become ``ambiguous``. Each
        gets ``ambiguous_at`` and ``ambiguity`` (``resent``, ``deduplicated``, ``held``),
        which stay whatever happens next, and an ``ambiguous`` event."""
        requeued: list[Delivery] = []
        ambiguous: list[Delivery] = []
        with self.store.tx() as tx:
            stamp = tx.ts(now)
            rows = tx.execute(f"SELECT {DELIVERY_COLS} FROM deliveries WHERE status = 'sending' AND {HELD} "
                              "AND lease_until < ?", (stamp,)).fetchall()
            for d in map(delivery_from_row, rows):
                if d.channel in resend:
                    how = "deduplicated" if d.channel in deduplicated else "resent"
                    tx.execute("UPDATE deliveries SET status = 'queued', lease_until = NULL, "
                               "ambiguous_at = ?, ambiguity = ?, updated_at = ? WHERE id = ?",
                               (stamp, how, stamp, d.id))
                    self._event(tx, d, "ambiguous", "in flight at a crash; resent", now)
                    requeued.append(d)
                else:
                    tx.execute("UPDATE deliveries SET status = 'ambiguous', lease_until = NULL, "
                               "last_error = 'in flight at a crash; not resent', ambiguous_at = ?, "
                               "ambiguity = 'held', updated_at = ? WHERE id = ?", (stamp, stamp, d.id))
                    self._event(tx, d, "ambiguous", "in flight at a crash; not resent", now)
                    ambiguous.append(d)
        return Recovery(requeued, ambiguous)
