"""Tables and columns added after the baseline: shared rate limits (the dispatcher's token
buckets), the audit log, consent history and deletion log (admin and privacy), the
partition and claim of a real-time timer, API key scopes, expiry and revocation, and the
dashboard's index of deliveries by day.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from ceap.store.migrations import add_columns, execute_for_dialect, no_downgrade

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_for_dialect(STATEMENTS)
    add_columns("timers", {"sqlite": [("partition_key", "TEXT"), ("claimed_until", "TEXT")],
                           "postgresql": [("partition_key", "TEXT"), ("claimed_until", "TIMESTAMPTZ")]})
    add_columns("api_keys", {
        "sqlite": [("scopes", "TEXT"), ("expires_at", "TEXT"), ("revoked_at", "TEXT"),
                   ("revoked_by", "TEXT")],
        "postgresql": [("scopes", "TEXT"), ("expires_at", "TIMESTAMPTZ"), ("revoked_at", "TIMESTAMPTZ"),
                       ("revoked_by", "TEXT")]})


downgrade = no_downgrade


STATEMENTS = {
    "sqlite": [
        """CREATE TABLE IF NOT EXISTS rate_limits (
  name TEXT PRIMARY KEY, tokens REAL NOT NULL, stamp REAL NOT NULL
)""",
        """CREATE TABLE IF NOT EXISTS audit_log (
  id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, at TEXT NOT NULL, actor TEXT NOT NULL,
  action TEXT NOT NULL, target TEXT NOT NULL, detail TEXT, source TEXT
)""",
        """CREATE INDEX IF NOT EXISTS audit_log_by_time ON audit_log (tenant_id, at)""",
        """CREATE INDEX IF NOT EXISTS audit_log_by_target ON audit_log (tenant_id, target)""",
        """CREATE TABLE IF NOT EXISTS consent_history (
  id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, customer_id TEXT NOT NULL, channel TEXT NOT NULL,
  topic TEXT NOT NULL, old_granted INTEGER, new_granted INTEGER NOT NULL, source TEXT,
  actor TEXT, at TEXT NOT NULL
)""",
        "CREATE INDEX IF NOT EXISTS consent_history_by_customer "
        "ON consent_history (tenant_id, customer_id, at)",
        """CREATE TABLE IF NOT EXISTS deletion_log (
  tenant_id TEXT NOT NULL, customer_hash TEXT NOT NULL, requested_at TEXT NOT NULL,
  completed_at TEXT, requested_by TEXT NOT NULL, rows_deleted INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (tenant_id, customer_hash)
)""",
        "CREATE INDEX IF NOT EXISTS deliveries_by_day "
        "ON deliveries (tenant_id, created_at, channel, status)",
    ],
    "postgresql": [
        """CREATE TABLE IF NOT EXISTS rate_limits (
  name TEXT PRIMARY KEY, tokens DOUBLE PRECISION NOT NULL, stamp DOUBLE PRECISION NOT NULL
)""",
        """CREATE TABLE IF NOT EXISTS audit_log (
  id BIGSERIAL PRIMARY KEY, tenant_id TEXT NOT NULL, at TIMESTAMPTZ NOT NULL, actor TEXT NOT NULL,
  action TEXT NOT NULL, target TEXT NOT NULL, detail TEXT, source TEXT
)""",
        """CREATE INDEX IF NOT EXISTS audit_log_by_time ON audit_log (tenant_id, at)""",
        """CREATE INDEX IF NOT EXISTS audit_log_by_target ON audit_log (tenant_id, target)""",
        """CREATE TABLE IF NOT EXISTS consent_history (
  id BIGSERIAL PRIMARY KEY, tenant_id TEXT NOT NULL, customer_id TEXT NOT NULL, channel TEXT NOT NULL,
  topic TEXT NOT NULL, old_granted BOOLEAN, new_granted BOOLEAN NOT NULL, source TEXT,
  actor TEXT, at TIMESTAMPTZ NOT NULL
)""",
        "CREATE INDEX IF NOT EXISTS consent_history_by_customer "
        "ON consent_history (tenant_id, customer_id, at)",
        """CREATE TABLE IF NOT EXISTS deletion_log (
  tenant_id TEXT NOT NULL, customer_hash TEXT NOT NULL, requested_at TIMESTAMPTZ NOT NULL,
  completed_at TIMESTAMPTZ, requested_by TEXT NOT NULL, rows_deleted BIGINT NOT NULL DEFAULT 0,
  PRIMARY KEY (tenant_id, customer_hash)
)""",
        "CREATE INDEX IF NOT EXISTS deliveries_by_day "
        "ON deliveries (tenant_id, created_at, channel, status)",
    ],
}
