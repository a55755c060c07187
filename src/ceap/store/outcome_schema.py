"""Tables of outcomes: engagements, goal events, conversions, tracked link
destinations and the cursors of the outbound exports. Created by ``Store.migrate``
(see docs/outcomes.md)."""

from __future__ import annotations

from ceap.store.delivery_schema import SETTLED
from ceap.store.sql_common import TYPES


def outcome_ddl(dialect: str) -> list[str]:
    t = TYPES[dialect]
    text, ts, i, real = t["text"], t["ts"], t["int"], t["real"]
    return [
        f"""CREATE TABLE IF NOT EXISTS engagements (
  id {t['id']}, tenant_id {text} NOT NULL, delivery_id {i}, candidate_id {i}, program {text},
  customer_id {text} NOT NULL, channel {text}, type {text} NOT NULL, ts {ts} NOT NULL,
  source {text} NOT NULL, url {text}, dedup_key {text} NOT NULL, recorded_at {ts} NOT NULL,
  UNIQUE (tenant_id, dedup_key)
)""",
        "CREATE INDEX IF NOT EXISTS engagements_by_candidate ON engagements (candidate_id)",
        "CREATE INDEX IF NOT EXISTS engagements_by_program ON engagements (tenant_id, program, type)",
        "CREATE INDEX IF NOT EXISTS engagements_by_recorded ON engagements (tenant_id, recorded_at)",
        f"""CREATE TABLE IF NOT EXISTS goal_events (
  tenant_id {text} NOT NULL, event_id {text} NOT NULL, customer_id {text} NOT NULL,
  type {text} NOT NULL, ts {ts} NOT NULL, value {real}, recorded_at {ts} NOT NULL,
  PRIMARY KEY (tenant_id, event_id)
)""",
        "CREATE INDEX IF NOT EXISTS goal_events_by_customer ON goal_events (tenant_id, customer_id, ts)",
        f"""CREATE TABLE IF NOT EXISTS conversions (
  tenant_id {text} NOT NULL, program {text} NOT NULL, candidate_id {i} NOT NULL,
  customer_id {text} NOT NULL, event_id {text} NOT NULL, event_type {text} NOT NULL, value {real},
  event_ts {ts} NOT NULL, touch_ts {ts} NOT NULL, attributed_at {ts} NOT NULL,
  PRIMARY KEY (tenant_id, program, event_id)
)""",
        "CREATE INDEX IF NOT EXISTS conversions_by_candidate ON conversions (candidate_id)",
        "CREATE INDEX IF NOT EXISTS conversions_by_attributed ON conversions (tenant_id, attributed_at)",
        f"""CREATE TABLE IF NOT EXISTS tracked_links (
  tenant_id {text} NOT NULL, hash {text} NOT NULL, url {text} NOT NULL, issued_at {ts} NOT NULL,
  PRIMARY KEY (tenant_id, hash)
)""",
        f"""CREATE TABLE IF NOT EXISTS export_cursors (
  tenant_id {text} NOT NULL, export {text} NOT NULL, source {text} NOT NULL, position {ts} NOT NULL,
  updated_at {ts} NOT NULL,
  PRIMARY KEY (tenant_id, export, source)
)""",
        # the exports read deliveries by when they were sent and when they were planned
        "CREATE INDEX IF NOT EXISTS deliveries_by_sent ON deliveries (tenant_id, sent_at) "
        "WHERE sent_at IS NOT NULL",
        "CREATE INDEX IF NOT EXISTS deliveries_by_created ON deliveries (tenant_id, created_at)",
        # the dashboard's deliveries by day, channel and status, read from the index alone
        # (settled ones: an attempt enters it once, when it settles; the open ones by status)
        "CREATE INDEX IF NOT EXISTS deliveries_by_day ON deliveries (tenant_id, created_at, channel, status) "
        f"WHERE {SETTLED}",
    ]
