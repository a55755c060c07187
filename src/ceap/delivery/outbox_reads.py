"""The outbox's reads: attempts due per channel, candidates by id, a tenant's deliveries and
their counts per status (for the dispatcher's plan, the API and reports)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from ceap.delivery.model import Delivery
from ceap.delivery.outbox_rows import DELIVERY_COLS, delivery_from_row
from ceap.model import Candidate
from ceap.store.base import Store
from ceap.store.delivery_schema import HELD, HELD_STATUSES
from ceap.store.sql_common import SELECT_CANDIDATE, candidate_from_row


class OutboxReads:
    """Read-only queries of the outbox, over ``store`` for ``worker``."""

    store: Store
    worker: str

    def due(self, now: datetime) -> dict[str, int]:
        """Queued attempts due now that no other worker holds, per channel."""
        with self.store.tx() as tx:
            rows = tx.execute("SELECT channel, count(*) FROM deliveries WHERE status = 'queued' "
                              "AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until < ? "
                              "OR worker = ?) GROUP BY channel",
                              (tx.ts(now), tx.ts(now), self.worker)).fetchall()
        return {ch: int(n) for ch, n in rows}

    def candidates(self, ids: Iterable[int]) -> dict[int, Candidate]:
        ids = list(dict.fromkeys(ids))
        if not ids:
            return {}
        with self.store.tx() as tx:
            rows = tx.execute(f"{SELECT_CANDIDATE} WHERE id IN ({tx.placeholders(len(ids))})",
                              ids).fetchall()
        return {c.id: c for c in map(candidate_from_row, rows)}

    def deliveries(self, tenant_id: str, candidate_id: int | None = None,
                   status: str | None = None, limit: int = 1000,
                   ambiguous: bool = False) -> list[Delivery]:
        """Newest first; ``ambiguous``: only those a crash left in flight (``ambiguous_at``
        set), whatever their status now: held, resent (possible duplicates) or resolved."""
        where: list[str] = ["tenant_id = ?"]
        params: list[Any] = [tenant_id]
        if candidate_id is not None:
            where.append("candidate_id = ?")
            params.append(candidate_id)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        with self.store.tx() as tx:
            if status in HELD_STATUSES and candidate_id is None:
                # by the held index, not by a walk of the tenant's deliveries
                # (SQLite: ``+`` keeps it off the tenant indexes)
                where[0] = f"{'+' if tx.dialect == 'sqlite' else ''}tenant_id = ?"
                where.append(HELD)
            if ambiguous:
                where.append("ambiguous_at IS NOT NULL")
            rows = tx.execute(f"SELECT {DELIVERY_COLS} FROM deliveries WHERE {' AND '.join(where)} "
                              "ORDER BY id DESC LIMIT ?", (*params, limit)).fetchall()
        return [delivery_from_row(r) for r in rows]

    def counts(self, tenant_id: str, program: str | None = None) -> dict[str, int]:
        """Deliveries per status (for funnels and reports)."""
        sql = "SELECT status, count(*) FROM deliveries WHERE tenant_id = ?"
        params: list[Any] = [tenant_id]
        if program:
            sql += " AND program = ?"
            params.append(program)
        with self.store.tx() as tx:
            return {s: int(n) for s, n in tx.execute(sql + " GROUP BY status", params).fetchall()}
