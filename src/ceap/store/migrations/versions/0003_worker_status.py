"""The workers' reports of themselves (``worker_status``: partitions and their watermarks,
lag, counts, rate), read by the dashboard's Real-time page.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from ceap.store.migrations import execute_for_dialect, no_downgrade

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_for_dialect(STATEMENTS)


downgrade = no_downgrade


STATEMENTS = {
    "sqlite": [
        """CREATE TABLE IF NOT EXISTS worker_status (
  tenant_id TEXT NOT NULL, worker TEXT NOT NULL, stream TEXT NOT NULL,
  partitions TEXT NOT NULL, lag INTEGER, messages INTEGER NOT NULL, events INTEGER NOT NULL,
  rate REAL, started_at TEXT NOT NULL, updated_at TEXT NOT NULL,
  PRIMARY KEY (tenant_id, worker)
)""",
    ],
    "postgresql": [
        """CREATE TABLE IF NOT EXISTS worker_status (
  tenant_id TEXT NOT NULL, worker TEXT NOT NULL, stream TEXT NOT NULL,
  partitions TEXT NOT NULL, lag BIGINT, messages BIGINT NOT NULL, events BIGINT NOT NULL,
  rate DOUBLE PRECISION, started_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (tenant_id, worker)
)""",
    ],
}
