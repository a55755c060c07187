"""Treated candidates whose outcome is final: their attribution window has closed.

A treated candidate's touch is its first successful delivery (``sent_at``). One that
was never sent is final once it can no longer be (suppressed, failed, expired,
cancelled, or past ``expires_at``), with its touch at ``not_before`` (intention to
treat, as the attribution counts it). Its outcome is final once ``touch + within``
(the goal's attribution window) has passed: a conversion can no longer be
attributed to it. The bandit and the online learners read only final outcomes, so a
candidate whose window is still open never counts as a failure.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ceap.store.tx import Tx

#: candidate statuses that will never be sent
UNSENT_FINAL = ("suppressed", "failed", "expired", "cancelled", "shadowed")


def final_treated_sql(tx: Tx, columns: str, tenant: str, program: str, now: datetime,
                      within: timedelta, where: str = "", tail: str = "") -> tuple[str, list[Any]]:
    """``SELECT columns FROM candidates c ...`` over the program's final treated candidates.

    ``columns`` may use ``c.*``, ``d.sent_at`` and ``converted`` (1 when a conversion
    is attributed to the candidate, else 0); ``where`` adds conditions (``AND ...``)."""
    cutoff = tx.ts(now - within)
    unsent = ", ".join(f"'{s}'" for s in UNSENT_FINAL)
    converted = ("CASE WHEN EXISTS (SELECT 1 FROM conversions v WHERE v.tenant_id = c.tenant_id "
                 "AND v.program = c.program AND v.candidate_id = c.id) THEN 1 ELSE 0 END")
    sql = (f"SELECT {columns.replace('converted', converted)} FROM candidates c "
           "LEFT JOIN (SELECT candidate_id, MIN(sent_at) AS sent_at FROM deliveries "
           "WHERE tenant_id = ? AND program = ? AND sent_at IS NOT NULL GROUP BY candidate_id) d "
           "ON d.candidate_id = c.id "
           "WHERE c.tenant_id = ? AND c.program = ? AND c.arm = 'treatment' "
           "AND ((d.sent_at IS NOT NULL AND d.sent_at <= ?) OR (d.sent_at IS NULL AND "
           f"(c.status IN ({unsent}) OR c.expires_at <= ?) AND c.not_before <= ?)) {where} {tail}")
    return sql, [tenant, program, tenant, program, cutoff, tx.ts(now), cutoff]
