"""Tables of the delivery layer: the outbox of delivery attempts, receipts,
customer profiles, consent and suppressions. Created by ``Store.migrate``."""

from __future__ import annotations

from ceap.store.admin_schema import API_KEY_COLUMNS
from ceap.store.sql_common import TYPES

#: the event log's index for a customer's events (migration 0009), on PostgreSQL only (the
#: store of several workers, which read history from the log by customer); SQLite's log has
#: none (migration 0011): its worker keeps the history in memory (``ceap.realtime.keyed``),
#: and each entry, inserted at a random place, cost the append 2-3 µs an event
EVENT_LOG_INDEX = "CREATE INDEX IF NOT EXISTS event_log_by_customer ON event_log (tenant_id, customer_id)"

#: Columns the dispatcher adds to ``candidates`` (nullable; absent from a run's write).
CANDIDATE_DISPATCH_COLUMNS = {
    "status_reason": "text",
    "claimed_until": "ts",
    "worker": "text",
    "updated_at": "ts",
}

#: Columns crash recovery adds to ``deliveries``: when an attempt was found in flight at a
#: crash (kept whatever happens next) and what became of it: ``held``, ``resent``,
#: ``deduplicated`` (resent to a provider that drops a repeated key), ``marked_sent``, ``dropped``.
DELIVERY_CRASH_COLUMNS = {
    "ambiguous_at": "ts",
    "ambiguity": "text",
}


#: Deliveries in flight, held after a crash or dead: those ``deliveries_held`` holds (queued
#: ones are in ``deliveries_due``). A query that should read that index says this term as it
#: is: SQLite uses a partial index only when the query's WHERE contains the index's WHERE
#: (``status = 'dead'`` alone is not enough). ORs, not ``IN (...)``: SQLite evaluates the
#: term on every status change, and an ``IN`` list costs it a temporary table each time.
HELD_STATUSES = ("sending", "ambiguous", "dead")
HELD = "(" + " OR ".join(f"status = '{s}'" for s in HELD_STATUSES) + ")"
#: The deliveries ``deliveries_by_day`` holds: all but those queued or in flight (their status
#: still changes), so the dashboard's counts read it and the few open ones by their own indexes.
SETTLED = "status <> 'queued' AND status <> 'sending'"


def delivery_ddl(dialect: str) -> list[str]:
    t = TYPES[dialect]
    text, ts, i, b, js = t["text"], t["ts"], t["int"], t["bool"], t["json"]
    false = "false" if dialect == "postgres" else "0"
    return [
        f"""CREATE TABLE IF NOT EXISTS deliveries (
  id {t['id']}, tenant_id {text} NOT NULL, candidate_id {i} NOT NULL,
  program {text} NOT NULL, customer_id {text} NOT NULL, channel {text} NOT NULL,
  step {i} NOT NULL, remaining {text} NOT NULL DEFAULT '[]',
  idempotency_key {text} NOT NULL, status {text} NOT NULL,
  attempts {i} NOT NULL DEFAULT 0, next_attempt_at {ts} NOT NULL, lease_until {ts},
  worker {text}, last_error {text}, policy {text}, provider_id {text},
  shadow {b} NOT NULL DEFAULT {false}, category {text} NOT NULL,
  created_at {ts} NOT NULL, updated_at {ts} NOT NULL, sent_at {ts},
  ambiguous_at {ts}, ambiguity {text},
  UNIQUE (tenant_id, idempotency_key)
)""",
        # partial and narrow so that an attempt's queued -> sending -> sent touches few index
        # entries (migration 0007): due ones, in flight or held, a customer's, the provider ids
        "CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (channel, next_attempt_at) "
        "WHERE status = 'queued'",
        f"CREATE INDEX IF NOT EXISTS deliveries_held ON deliveries (status, lease_until) WHERE {HELD}",
        # created_at: never changes, and keeps the index wider than (tenant_id, created_at), which
        # SQLite (no statistics) then takes for scans of a tenant's deliveries in time order
        "CREATE INDEX IF NOT EXISTS deliveries_by_customer "
        "ON deliveries (tenant_id, customer_id, created_at)",
        "CREATE INDEX IF NOT EXISTS deliveries_by_candidate ON deliveries (candidate_id)",
        "CREATE INDEX IF NOT EXISTS deliveries_by_provider_id ON deliveries (provider_id) "
        "WHERE provider_id IS NOT NULL",
        f"""CREATE TABLE IF NOT EXISTS delivery_events (
  id {t['id']}, tenant_id {text} NOT NULL, delivery_id {i} NOT NULL, status {text} NOT NULL,
  detail {text}, created_at {ts} NOT NULL
)""",
        "CREATE INDEX IF NOT EXISTS delivery_events_by_delivery ON delivery_events (delivery_id)",
        f"""CREATE TABLE IF NOT EXISTS profiles (
  tenant_id {text} NOT NULL, customer_id {text} NOT NULL, email {text}, phone {text},
  push_token {text}, timezone {text}, locale {text}, attributes {js}, updated_at {ts} NOT NULL,
  PRIMARY KEY (tenant_id, customer_id)
)""",
        f"""CREATE TABLE IF NOT EXISTS consent (
  tenant_id {text} NOT NULL, customer_id {text} NOT NULL, channel {text} NOT NULL,
  topic {text} NOT NULL, granted {b} NOT NULL, source {text}, updated_at {ts} NOT NULL,
  PRIMARY KEY (tenant_id, customer_id, channel, topic)
)""",
        f"""CREATE TABLE IF NOT EXISTS stream_queue (
  id {t['id']}, stream {text} NOT NULL, body {text} NOT NULL, enqueued_at {ts} NOT NULL,
  lease_until {ts}, worker {text}
)""",
        "CREATE INDEX IF NOT EXISTS stream_queue_by_stream ON stream_queue (stream, id)",
        f"""CREATE TABLE IF NOT EXISTS event_log (
  tenant_id {text} NOT NULL, event_id {text} NOT NULL, customer_id {text} NOT NULL,
  type {text} NOT NULL, ts {ts} NOT NULL, attributes {text} NOT NULL, partition_key {text},
  stream {text},
  PRIMARY KEY (tenant_id, event_id)
)""",
        *([EVENT_LOG_INDEX] if dialect == "postgres" else []),
        f"""CREATE TABLE IF NOT EXISTS timers (
  tenant_id {text} NOT NULL, program {text} NOT NULL, customer_id {text} NOT NULL,
  event_id {text} NOT NULL, fire_at {ts} NOT NULL, after_ts {ts} NOT NULL, partition_key {text},
  claimed_until {ts}, stream {text},
  PRIMARY KEY (tenant_id, program, customer_id, event_id)
)""",
        "CREATE INDEX IF NOT EXISTS timers_due ON timers (fire_at)",
        f"""CREATE TABLE IF NOT EXISTS api_keys (
  key_hash {text} PRIMARY KEY, tenant_id {text} NOT NULL, name {text} NOT NULL,
  created_at {ts} NOT NULL
)""",
        # per-channel token buckets every dispatcher on the store draws from (``rate_per_sec``)
        f"""CREATE TABLE IF NOT EXISTS rate_limits (
  name {text} PRIMARY KEY, tokens {t['real']} NOT NULL, stamp {t['real']} NOT NULL
)""",
        f"""CREATE TABLE IF NOT EXISTS suppressions (
  tenant_id {text} NOT NULL, channel {text} NOT NULL, address {text} NOT NULL,
  reason {text} NOT NULL, created_at {ts} NOT NULL,
  PRIMARY KEY (tenant_id, channel, address)
)""",
    ]


#: the partition of the event that armed an absence timer (it fires on that partition's
#: watermark), until when a worker that took it holds it, and its stream (migration 0010)
TIMER_COLUMNS = {"partition_key": "text", "claimed_until": "ts", "stream": "text"}

#: table -> the columns a database created by an older version may lack
ADDED_COLUMNS = {"candidates": CANDIDATE_DISPATCH_COLUMNS, "deliveries": DELIVERY_CRASH_COLUMNS,
                 "timers": TIMER_COLUMNS, "api_keys": API_KEY_COLUMNS}


def add_missing_columns(dialect: str, existing: set[str], table: str = "candidates") -> list[str]:
    """ALTER statements for the columns of ``table`` an older database lacks; for
    ``deliveries`` also the index on them (created once the columns exist)."""
    t = TYPES[dialect]
    added = [f"ALTER TABLE {table} ADD COLUMN {name} {t[kind]}"
             for name, kind in ADDED_COLUMNS[table].items() if name not in existing]
    if table == "deliveries":  # partial: only the few deliveries a crash touched
        added.append("CREATE INDEX IF NOT EXISTS deliveries_ambiguous ON deliveries (ambiguous_at) "
                     "WHERE ambiguous_at IS NOT NULL")
    return added
