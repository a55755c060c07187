"""Journeys: each customer's place in a journey (``journey_entries``) and its transitions
(``journey_log``); docs/journeys.md.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from ceap.store.migrations import execute_for_dialect, no_downgrade

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_for_dialect(STATEMENTS)


downgrade = no_downgrade


def _statements(ident: str, ts: str, n: str) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS journey_entries (
  id {ident}, tenant_id TEXT NOT NULL, program TEXT NOT NULL, customer_id TEXT NOT NULL,
  candidate_id {n} NOT NULL, version TEXT NOT NULL, step TEXT NOT NULL, seq {n} NOT NULL,
  step_since {ts} NOT NULL, status TEXT NOT NULL, reason TEXT, data TEXT NOT NULL,
  entered_at {ts} NOT NULL, updated_at {ts} NOT NULL, ended_at {ts},
  UNIQUE (tenant_id, program, candidate_id)
)""",
        "CREATE INDEX IF NOT EXISTS journey_entries_by_status ON journey_entries (program, status)",
        "CREATE INDEX IF NOT EXISTS journey_entries_by_customer "
        "ON journey_entries (tenant_id, customer_id, program)",
        f"""CREATE TABLE IF NOT EXISTS journey_log (
  id {ident}, tenant_id TEXT NOT NULL, program TEXT NOT NULL, customer_id TEXT NOT NULL,
  entry_id {n} NOT NULL, seq {n} NOT NULL, step TEXT NOT NULL, what TEXT NOT NULL,
  candidate_id {n}, at {ts} NOT NULL,
  UNIQUE (entry_id, seq)
)""",
        "CREATE INDEX IF NOT EXISTS journey_log_by_candidate ON journey_log (candidate_id)",
    ]


STATEMENTS = {
    "sqlite": _statements("INTEGER PRIMARY KEY", "TEXT", "INTEGER"),
    "postgresql": _statements("BIGSERIAL PRIMARY KEY", "TIMESTAMPTZ", "BIGINT"),
}
