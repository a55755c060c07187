"""What each ``ceap worker`` last reported about itself (the dashboard's Real-time page):
the partitions it read with their watermarks, the broker's lag, its counts and its rate;
and which worker holds each partition's in-memory state (``ceap.realtime.claims``)."""

from __future__ import annotations

from ceap.store.sql_common import TYPES


def worker_ddl(dialect: str) -> list[str]:
    t = TYPES[dialect]
    text, ts, n = t["text"], t["ts"], t["int"]
    return [
        f"""CREATE TABLE IF NOT EXISTS worker_status (
  tenant_id {text} NOT NULL, worker {text} NOT NULL, stream {text} NOT NULL,
  partitions {text} NOT NULL, lag {n}, messages {n} NOT NULL, events {n} NOT NULL,
  rate {t['real']}, started_at {ts} NOT NULL, updated_at {ts} NOT NULL,
  PRIMARY KEY (tenant_id, worker)
)""",
        # which worker holds each partition's in-memory state, and since which take-over
        f"""CREATE TABLE IF NOT EXISTS partition_claims (
  tenant_id {text} NOT NULL, stream {text} NOT NULL, partition_key {text} NOT NULL,
  owner {text} NOT NULL, epoch {n} NOT NULL, claimed_at {ts} NOT NULL,
  PRIMARY KEY (tenant_id, stream, partition_key)
)""",
    ]
