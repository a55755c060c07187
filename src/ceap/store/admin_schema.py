"""Tables of administration and privacy, created by ``Store.migrate``: the audit log,
the history of consent changes, and the deletion log (the tombstones of deleted
customers). Also the ``api_keys`` columns added after the first release (scopes,
expiry, revocation). See docs/privacy.md and docs/operations-admin.md."""

from __future__ import annotations

from ceap.store.sql_common import TYPES

#: columns an older ``api_keys`` table lacks; a NULL ``scopes`` is a key made before scopes
#: existed (it has ``ceap.api.auth.DEFAULT_SCOPES``)
API_KEY_COLUMNS = {
    "scopes": "text",
    "expires_at": "ts",
    "revoked_at": "ts",
    "revoked_by": "text",
}


def admin_ddl(dialect: str) -> list[str]:
    t = TYPES[dialect]
    text, ts, b = t["text"], t["ts"], t["bool"]
    return [
        f"""CREATE TABLE IF NOT EXISTS audit_log (
  id {t['id']}, tenant_id {text} NOT NULL, at {ts} NOT NULL, actor {text} NOT NULL,
  action {text} NOT NULL, target {text} NOT NULL, detail {text}, source {text}
)""",
        "CREATE INDEX IF NOT EXISTS audit_log_by_time ON audit_log (tenant_id, at)",
        "CREATE INDEX IF NOT EXISTS audit_log_by_target ON audit_log (tenant_id, target)",
        f"""CREATE TABLE IF NOT EXISTS consent_history (
  id {t['id']}, tenant_id {text} NOT NULL, customer_id {text} NOT NULL, channel {text} NOT NULL,
  topic {text} NOT NULL, old_granted {b}, new_granted {b} NOT NULL, source {text},
  actor {text}, at {ts} NOT NULL
)""",
        "CREATE INDEX IF NOT EXISTS consent_history_by_customer "
        "ON consent_history (tenant_id, customer_id, at)",
        f"""CREATE TABLE IF NOT EXISTS deletion_log (
  tenant_id {text} NOT NULL, customer_hash {text} NOT NULL, requested_at {ts} NOT NULL,
  completed_at {ts}, requested_by {text} NOT NULL, rows_deleted {t['int']} NOT NULL DEFAULT 0,
  PRIMARY KEY (tenant_id, customer_hash)
)""",
    ]
