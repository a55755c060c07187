"""Digests (docs/digests.md): the candidates held for a customer's digest, each with its
digest's key, window and due time, and, once sent, the digest message's candidate."""

from __future__ import annotations

from ceap.store.sql_common import TYPES


def digest_ddl(dialect: str) -> list[str]:
    t = TYPES[dialect]
    text, ts, n = t["text"], t["ts"], t["int"]
    key = "INTEGER PRIMARY KEY" if dialect == "sqlite" else "BIGINT PRIMARY KEY"
    return [
        f"""CREATE TABLE IF NOT EXISTS digest_items (
  candidate_id {key}, tenant_id {text} NOT NULL, customer_id {text} NOT NULL,
  digest_key {text} NOT NULL, program {text} NOT NULL, item_at {ts} NOT NULL,
  window_start {ts} NOT NULL, due_at {ts} NOT NULL, message_id {n}, flushed_at {ts}
)""",
        "CREATE INDEX IF NOT EXISTS digest_items_by_customer "
        "ON digest_items (tenant_id, customer_id, digest_key, message_id)",
        "CREATE INDEX IF NOT EXISTS digest_items_due ON digest_items (due_at) "
        "WHERE message_id IS NULL",
        # candidates a run wrote for a digest and no dispatcher has put in one yet
        "CREATE INDEX IF NOT EXISTS candidates_to_digest ON candidates (id) "
        "WHERE status = 'digest'",
    ]
