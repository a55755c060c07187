"""Keyed state of the real-time worker: the partition each logged event came from (a
partition's state is restored from the log when a worker takes it over) and which worker
holds each partition (``partition_claims``).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from ceap.store.migrations import add_columns, execute_for_dialect, no_downgrade

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_columns("event_log", {"sqlite": [("partition_key", "TEXT")],
                              "postgresql": [("partition_key", "TEXT")]})
    execute_for_dialect(STATEMENTS)


downgrade = no_downgrade


STATEMENTS = {
    "sqlite": [
        """CREATE TABLE IF NOT EXISTS partition_claims (
  tenant_id TEXT NOT NULL, stream TEXT NOT NULL, partition_key TEXT NOT NULL,
  owner TEXT NOT NULL, epoch INTEGER NOT NULL, claimed_at TEXT NOT NULL,
  PRIMARY KEY (tenant_id, stream, partition_key)
)""",
    ],
    "postgresql": [
        """CREATE TABLE IF NOT EXISTS partition_claims (
  tenant_id TEXT NOT NULL, stream TEXT NOT NULL, partition_key TEXT NOT NULL,
  owner TEXT NOT NULL, epoch BIGINT NOT NULL, claimed_at TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (tenant_id, stream, partition_key)
)""",
    ],
}
