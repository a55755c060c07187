"""The event log's customer index without ``ts``: ``event_log_by_customer (tenant_id,
customer_id)`` replaces ``event_log_by_time (tenant_id, customer_id, ts)``. The worker
inserts each micro-batch at random places of it; entries half as long make those
inserts cheaper, and the reads that use it (a customer's history, the timers) look
customers up by it just as well: the log is pruned to the longest window (bench/README.md,
issue 10).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from alembic import op

from ceap.store.migrations import no_downgrade

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

#: the same statements on SQLite and PostgreSQL (frozen: not read from the schema modules)
STATEMENTS = [
    "CREATE INDEX IF NOT EXISTS event_log_by_customer ON event_log (tenant_id, customer_id)",
    "DROP INDEX IF EXISTS event_log_by_time",
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


downgrade = no_downgrade
