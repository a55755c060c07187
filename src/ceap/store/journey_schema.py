"""Where each customer stands in each journey (``journey_entries``: one row per entry, its
current step) and what happened on the way (``journey_log``: one row per transition).
See docs/journeys.md."""

from __future__ import annotations

from ceap.store.sql_common import TYPES


def journey_ddl(dialect: str) -> list[str]:
    t = TYPES[dialect]
    text, ts, n = t["text"], t["ts"], t["int"]
    return [
        f"""CREATE TABLE IF NOT EXISTS journey_entries (
  id {t['id']}, tenant_id {text} NOT NULL, program {text} NOT NULL, customer_id {text} NOT NULL,
  candidate_id {n} NOT NULL, version {text} NOT NULL, step {text} NOT NULL, seq {n} NOT NULL,
  step_since {ts} NOT NULL, status {text} NOT NULL, reason {text}, data {text} NOT NULL,
  entered_at {ts} NOT NULL, updated_at {ts} NOT NULL, ended_at {ts},
  UNIQUE (tenant_id, program, candidate_id)
)""",
        "CREATE INDEX IF NOT EXISTS journey_entries_by_status ON journey_entries (program, status)",
        "CREATE INDEX IF NOT EXISTS journey_entries_by_customer "
        "ON journey_entries (tenant_id, customer_id, program)",
        f"""CREATE TABLE IF NOT EXISTS journey_log (
  id {t['id']}, tenant_id {text} NOT NULL, program {text} NOT NULL, customer_id {text} NOT NULL,
  entry_id {n} NOT NULL, seq {n} NOT NULL, step {text} NOT NULL, what {text} NOT NULL,
  candidate_id {n}, at {ts} NOT NULL,
  UNIQUE (entry_id, seq)
)""",
        "CREATE INDEX IF NOT EXISTS journey_log_by_candidate ON journey_log (candidate_id)",
    ]
