"""Digests: ``digest_items`` (the candidates held for a customer's digest, their digest's
key, window and due time, and the digest message once sent) and an index of the
candidates waiting to be put in one (docs/digests.md).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from ceap.store.migrations import execute_for_dialect, no_downgrade

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_for_dialect(STATEMENTS)


downgrade = no_downgrade


_INDEXES = [
    "CREATE INDEX IF NOT EXISTS digest_items_by_customer "
    "ON digest_items (tenant_id, customer_id, digest_key, message_id)",
    "CREATE INDEX IF NOT EXISTS digest_items_due ON digest_items (due_at) WHERE message_id IS NULL",
    "CREATE INDEX IF NOT EXISTS candidates_to_digest ON candidates (id) WHERE status = 'digest'",
]

STATEMENTS = {
    "sqlite": [
        """CREATE TABLE IF NOT EXISTS digest_items (
  candidate_id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, customer_id TEXT NOT NULL,
  digest_key TEXT NOT NULL, program TEXT NOT NULL, item_at TEXT NOT NULL,
  window_start TEXT NOT NULL, due_at TEXT NOT NULL, message_id INTEGER, flushed_at TEXT
)""",
        *_INDEXES,
    ],
    "postgresql": [
        """CREATE TABLE IF NOT EXISTS digest_items (
  candidate_id BIGINT PRIMARY KEY, tenant_id TEXT NOT NULL, customer_id TEXT NOT NULL,
  digest_key TEXT NOT NULL, program TEXT NOT NULL, item_at TIMESTAMPTZ NOT NULL,
  window_start TIMESTAMPTZ NOT NULL, due_at TIMESTAMPTZ NOT NULL, message_id BIGINT,
  flushed_at TIMESTAMPTZ
)""",
        *_INDEXES,
    ],
}
