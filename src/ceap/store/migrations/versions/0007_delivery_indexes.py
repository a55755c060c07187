"""Fewer index entries touched as a delivery goes queued -> sending -> sent: the due index
holds only queued deliveries (by channel), a new one those in flight, held or dead, the
dashboard's index by day only the others, the customer index carries
``created_at`` instead of ``sent_at``, and the indexes of sent times and provider ids
leave out the rows without one (bench/README.md, issue 11).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

from ceap.store.migrations import no_downgrade

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

#: the same statements on SQLite and PostgreSQL (frozen: not read from the schema modules)
STATEMENTS = [
    "DROP INDEX IF EXISTS deliveries_due",
    "CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (channel, next_attempt_at) "
    "WHERE status = 'queued'",
    "CREATE INDEX IF NOT EXISTS deliveries_held ON deliveries (status, lease_until) "
    "WHERE (status = 'sending' OR status = 'ambiguous' OR status = 'dead')",
    "DROP INDEX IF EXISTS deliveries_by_customer",
    "CREATE INDEX IF NOT EXISTS deliveries_by_customer ON deliveries (tenant_id, customer_id, created_at)",
    "DROP INDEX IF EXISTS deliveries_by_provider_id",
    "CREATE INDEX IF NOT EXISTS deliveries_by_provider_id ON deliveries (provider_id) "
    "WHERE provider_id IS NOT NULL",
    "DROP INDEX IF EXISTS deliveries_by_sent",
    "CREATE INDEX IF NOT EXISTS deliveries_by_sent ON deliveries (tenant_id, sent_at) "
    "WHERE sent_at IS NOT NULL",
    "DROP INDEX IF EXISTS deliveries_by_day",
    "CREATE INDEX IF NOT EXISTS deliveries_by_day ON deliveries (tenant_id, created_at, channel, status) "
    "WHERE status <> 'queued' AND status <> 'sending'",
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


downgrade = no_downgrade
