"""Baseline: the schema of the release before versioned migrations (what ``Store.migrate``
created and altered at open), frozen here.

On a database made by that release (tables present, no ``alembic_version``) every
statement is a no-op but the columns that release added at open to still older tables.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

from alembic import context, op
from sqlalchemy import inspect, text

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    dialect = context.get_context().dialect.name
    tables, added = STATEMENTS[dialect]
    for statement in tables:
        op.execute(statement)
    if context.is_offline_mode():  # a new database: the CREATE statements are all of it
        return
    bind = op.get_bind()
    for table, columns in added.items():
        have = {c["name"] for c in inspect(bind).get_columns(table)}
        for name, kind in columns:
            if name not in have:
                op.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
        if table == "candidates" and "arm" not in have:  # the only control group there was
            bind.execute(text("UPDATE candidates SET arm = 'holdout' WHERE holdout"))
    op.execute("CREATE INDEX IF NOT EXISTS deliveries_ambiguous ON deliveries (ambiguous_at) "
               "WHERE ambiguous_at IS NOT NULL")


def downgrade() -> None:
    raise NotImplementedError("the baseline is not undone; restore a backup instead")


SQLITE_TABLES = [
    """CREATE TABLE IF NOT EXISTS candidates (
  id INTEGER PRIMARY KEY,
  tenant_id TEXT NOT NULL,
  program TEXT NOT NULL,
  run_id TEXT NOT NULL,
  customer_id TEXT NOT NULL,
  subject_id TEXT,
  context TEXT,
  action_type TEXT NOT NULL,
  channels TEXT NOT NULL,
  template TEXT,
  category TEXT NOT NULL,
  score REAL,
  model TEXT,
  reasons TEXT,
  payload TEXT,
  status TEXT NOT NULL,
  priority INTEGER NOT NULL,
  created_at TEXT NOT NULL,
  not_before TEXT NOT NULL,
  expires_at TEXT NOT NULL,
  dedup_key TEXT NOT NULL,
  holdout INTEGER NOT NULL,
  version INTEGER NOT NULL,
  arm TEXT NOT NULL DEFAULT 'treatment',
  variant TEXT,
  features TEXT,
  UNIQUE (tenant_id, dedup_key)
)""",
    'CREATE INDEX IF NOT EXISTS candidates_by_customer ON candidates (tenant_id, customer_id, status)',
    'CREATE INDEX IF NOT EXISTS candidates_by_program ON candidates (tenant_id, program, status)',
    'CREATE INDEX IF NOT EXISTS candidates_by_expiry ON candidates (expires_at)',
    """CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, program TEXT NOT NULL,
  status TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT,
  funnel TEXT, error TEXT
)""",
    'CREATE INDEX IF NOT EXISTS runs_by_program ON runs (tenant_id, program, started_at)',
    """CREATE TABLE IF NOT EXISTS quarantine (
  id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, run_id TEXT NOT NULL,
  program TEXT NOT NULL, row TEXT NOT NULL, reason TEXT NOT NULL
)""",
    'CREATE INDEX IF NOT EXISTS quarantine_by_run ON quarantine (tenant_id, run_id)',
    """CREATE TABLE IF NOT EXISTS inbox (
  id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, customer_id TEXT NOT NULL,
  idempotency_key TEXT NOT NULL, program TEXT NOT NULL, candidate_id INTEGER,
  title TEXT NOT NULL, body TEXT NOT NULL, payload TEXT,
  created_at TEXT NOT NULL, read_at TEXT,
  UNIQUE (tenant_id, idempotency_key)
)""",
    'CREATE INDEX IF NOT EXISTS inbox_by_customer ON inbox (tenant_id, customer_id, created_at)',
    """CREATE TABLE IF NOT EXISTS deliveries (
  id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, candidate_id INTEGER NOT NULL,
  program TEXT NOT NULL, customer_id TEXT NOT NULL, channel TEXT NOT NULL,
  step INTEGER NOT NULL, remaining TEXT NOT NULL DEFAULT '[]',
  idempotency_key TEXT NOT NULL, status TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at TEXT NOT NULL, lease_until TEXT,
  worker TEXT, last_error TEXT, policy TEXT, provider_id TEXT,
  shadow INTEGER NOT NULL DEFAULT 0, category TEXT NOT NULL,
  created_at TEXT NOT NULL, updated_at TEXT NOT NULL, sent_at TEXT,
  ambiguous_at TEXT, ambiguity TEXT,
  UNIQUE (tenant_id, idempotency_key)
)""",
    'CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (status, next_attempt_at)',
    'CREATE INDEX IF NOT EXISTS deliveries_by_customer ON deliveries (tenant_id, customer_id, sent_at)',
    'CREATE INDEX IF NOT EXISTS deliveries_by_candidate ON deliveries (candidate_id)',
    'CREATE INDEX IF NOT EXISTS deliveries_by_provider_id ON deliveries (provider_id)',
    """CREATE TABLE IF NOT EXISTS delivery_events (
  id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, delivery_id INTEGER NOT NULL, status TEXT NOT NULL,
  detail TEXT, created_at TEXT NOT NULL
)""",
    'CREATE INDEX IF NOT EXISTS delivery_events_by_delivery ON delivery_events (delivery_id)',
    """CREATE TABLE IF NOT EXISTS profiles (
  tenant_id TEXT NOT NULL, customer_id TEXT NOT NULL, email TEXT, phone TEXT,
  push_token TEXT, timezone TEXT, locale TEXT, attributes TEXT, updated_at TEXT NOT NULL,
  PRIMARY KEY (tenant_id, customer_id)
)""",
    """CREATE TABLE IF NOT EXISTS consent (
  tenant_id TEXT NOT NULL, customer_id TEXT NOT NULL, channel TEXT NOT NULL,
  topic TEXT NOT NULL, granted INTEGER NOT NULL, source TEXT, updated_at TEXT NOT NULL,
  PRIMARY KEY (tenant_id, customer_id, channel, topic)
)""",
    """CREATE TABLE IF NOT EXISTS stream_queue (
  id INTEGER PRIMARY KEY, stream TEXT NOT NULL, body TEXT NOT NULL, enqueued_at TEXT NOT NULL,
  lease_until TEXT, worker TEXT
)""",
    'CREATE INDEX IF NOT EXISTS stream_queue_by_stream ON stream_queue (stream, id)',
    """CREATE TABLE IF NOT EXISTS event_log (
  tenant_id TEXT NOT NULL, event_id TEXT NOT NULL, customer_id TEXT NOT NULL,
  type TEXT NOT NULL, ts TEXT NOT NULL, attributes TEXT NOT NULL,
  PRIMARY KEY (tenant_id, event_id)
)""",
    'CREATE INDEX IF NOT EXISTS event_log_by_time ON event_log (tenant_id, customer_id, ts)',
    """CREATE TABLE IF NOT EXISTS timers (
  tenant_id TEXT NOT NULL, program TEXT NOT NULL, customer_id TEXT NOT NULL,
  event_id TEXT NOT NULL, fire_at TEXT NOT NULL, after_ts TEXT NOT NULL,
  PRIMARY KEY (tenant_id, program, customer_id, event_id)
)""",
    'CREATE INDEX IF NOT EXISTS timers_due ON timers (fire_at)',
    """CREATE TABLE IF NOT EXISTS api_keys (
  key_hash TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, name TEXT NOT NULL,
  created_at TEXT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS suppressions (
  tenant_id TEXT NOT NULL, channel TEXT NOT NULL, address TEXT NOT NULL,
  reason TEXT NOT NULL, created_at TEXT NOT NULL,
  PRIMARY KEY (tenant_id, channel, address)
)""",
    """CREATE TABLE IF NOT EXISTS bandit_arms (
  tenant_id TEXT NOT NULL, program TEXT NOT NULL, variant TEXT NOT NULL, at TEXT NOT NULL,
  share REAL NOT NULL, alpha REAL NOT NULL, beta REAL NOT NULL,
  trials INTEGER NOT NULL, successes INTEGER NOT NULL,
  PRIMARY KEY (tenant_id, program, at, variant)
)""",
    """CREATE TABLE IF NOT EXISTS learned_outcomes (
  tenant_id TEXT NOT NULL, candidate_id INTEGER NOT NULL, program TEXT NOT NULL,
  converted INTEGER NOT NULL, model TEXT NOT NULL, learned_at TEXT NOT NULL,
  PRIMARY KEY (tenant_id, candidate_id)
)""",
    """CREATE TABLE IF NOT EXISTS engagements (
  id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, delivery_id INTEGER, candidate_id INTEGER, program TEXT,
  customer_id TEXT NOT NULL, channel TEXT, type TEXT NOT NULL, ts TEXT NOT NULL,
  source TEXT NOT NULL, url TEXT, dedup_key TEXT NOT NULL, recorded_at TEXT NOT NULL,
  UNIQUE (tenant_id, dedup_key)
)""",
    'CREATE INDEX IF NOT EXISTS engagements_by_candidate ON engagements (candidate_id)',
    'CREATE INDEX IF NOT EXISTS engagements_by_program ON engagements (tenant_id, program, type)',
    'CREATE INDEX IF NOT EXISTS engagements_by_recorded ON engagements (tenant_id, recorded_at)',
    """CREATE TABLE IF NOT EXISTS goal_events (
  tenant_id TEXT NOT NULL, event_id TEXT NOT NULL, customer_id TEXT NOT NULL,
  type TEXT NOT NULL, ts TEXT NOT NULL, value REAL, recorded_at TEXT NOT NULL,
  PRIMARY KEY (tenant_id, event_id)
)""",
    'CREATE INDEX IF NOT EXISTS goal_events_by_customer ON goal_events (tenant_id, customer_id, ts)',
    """CREATE TABLE IF NOT EXISTS conversions (
  tenant_id TEXT NOT NULL, program TEXT NOT NULL, candidate_id INTEGER NOT NULL,
  customer_id TEXT NOT NULL, event_id TEXT NOT NULL, event_type TEXT NOT NULL, value REAL,
  event_ts TEXT NOT NULL, touch_ts TEXT NOT NULL, attributed_at TEXT NOT NULL,
  PRIMARY KEY (tenant_id, program, event_id)
)""",
    'CREATE INDEX IF NOT EXISTS conversions_by_candidate ON conversions (candidate_id)',
    'CREATE INDEX IF NOT EXISTS conversions_by_attributed ON conversions (tenant_id, attributed_at)',
    """CREATE TABLE IF NOT EXISTS tracked_links (
  tenant_id TEXT NOT NULL, hash TEXT NOT NULL, url TEXT NOT NULL, issued_at TEXT NOT NULL,
  PRIMARY KEY (tenant_id, hash)
)""",
    """CREATE TABLE IF NOT EXISTS export_cursors (
  tenant_id TEXT NOT NULL, export TEXT NOT NULL, source TEXT NOT NULL, position TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  PRIMARY KEY (tenant_id, export, source)
)""",
    'CREATE INDEX IF NOT EXISTS deliveries_by_sent ON deliveries (tenant_id, sent_at)',
    'CREATE INDEX IF NOT EXISTS deliveries_by_created ON deliveries (tenant_id, created_at)',
    """CREATE TABLE IF NOT EXISTS schedule_state (
  tenant_id TEXT NOT NULL, program TEXT NOT NULL, cron TEXT, timezone TEXT,
  first_seen TEXT NOT NULL, last_fire TEXT, last_status TEXT, last_run_id TEXT,
  last_run_at TEXT, skipped INTEGER NOT NULL DEFAULT 0, running_by TEXT, running_until TEXT,
  running_fire TEXT,
  updated_at TEXT NOT NULL,
  PRIMARY KEY (tenant_id, program)
)""",
    """CREATE TABLE IF NOT EXISTS schedule_log (
  id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, program TEXT NOT NULL, fire_at TEXT NOT NULL,
  status TEXT NOT NULL, run_id TEXT, windows INTEGER NOT NULL DEFAULT 1, detail TEXT,
  scheduler TEXT, created_at TEXT NOT NULL
)""",
    'CREATE INDEX IF NOT EXISTS schedule_log_by_program ON schedule_log (tenant_id, program, fire_at)',
    """CREATE TABLE IF NOT EXISTS scheduler_lease (
  name TEXT PRIMARY KEY, holder TEXT NOT NULL, since TEXT NOT NULL, until TEXT NOT NULL
)""",
]


SQLITE_ADDED_COLUMNS = {
    'candidates': [
        ('status_reason', 'TEXT'),
        ('claimed_until', 'TEXT'),
        ('worker', 'TEXT'),
        ('updated_at', 'TEXT'),
        ('arm', "TEXT NOT NULL DEFAULT 'treatment'"),
        ('variant', 'TEXT'),
        ('features', 'TEXT'),
    ],
    'deliveries': [
        ('ambiguous_at', 'TEXT'),
        ('ambiguity', 'TEXT'),
    ],
}


POSTGRESQL_TABLES = [
    """CREATE TABLE IF NOT EXISTS candidates (
  id BIGSERIAL PRIMARY KEY,
  tenant_id TEXT NOT NULL,
  program TEXT NOT NULL,
  run_id TEXT NOT NULL,
  customer_id TEXT NOT NULL,
  subject_id TEXT,
  context JSONB,
  action_type TEXT NOT NULL,
  channels JSONB NOT NULL,
  template TEXT,
  category TEXT NOT NULL,
  score DOUBLE PRECISION,
  model TEXT,
  reasons JSONB,
  payload JSONB,
  status TEXT NOT NULL,
  priority BIGINT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL,
  not_before TIMESTAMPTZ NOT NULL,
  expires_at TIMESTAMPTZ NOT NULL,
  dedup_key TEXT NOT NULL,
  holdout BOOLEAN NOT NULL,
  version BIGINT NOT NULL,
  arm TEXT NOT NULL DEFAULT 'treatment',
  variant TEXT,
  features JSONB,
  UNIQUE (tenant_id, dedup_key)
)""",
    'CREATE INDEX IF NOT EXISTS candidates_by_customer ON candidates (tenant_id, customer_id, status)',
    'CREATE INDEX IF NOT EXISTS candidates_by_program ON candidates (tenant_id, program, status)',
    'CREATE INDEX IF NOT EXISTS candidates_by_expiry ON candidates (expires_at)',
    """CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, program TEXT NOT NULL,
  status TEXT NOT NULL, started_at TIMESTAMPTZ NOT NULL, finished_at TIMESTAMPTZ,
  funnel JSONB, error TEXT
)""",
    'CREATE INDEX IF NOT EXISTS runs_by_program ON runs (tenant_id, program, started_at)',
    """CREATE TABLE IF NOT EXISTS quarantine (
  id BIGSERIAL PRIMARY KEY, tenant_id TEXT NOT NULL, run_id TEXT NOT NULL,
  program TEXT NOT NULL, row TEXT NOT NULL, reason TEXT NOT NULL
)""",
    'CREATE INDEX IF NOT EXISTS quarantine_by_run ON quarantine (tenant_id, run_id)',
    """CREATE TABLE IF NOT EXISTS inbox (
  id BIGSERIAL PRIMARY KEY, tenant_id TEXT NOT NULL, customer_id TEXT NOT NULL,
  idempotency_key TEXT NOT NULL, program TEXT NOT NULL, candidate_id BIGINT,
  title TEXT NOT NULL, body TEXT NOT NULL, payload JSONB,
  created_at TIMESTAMPTZ NOT NULL, read_at TIMESTAMPTZ,
  UNIQUE (tenant_id, idempotency_key)
)""",
    'CREATE INDEX IF NOT EXISTS inbox_by_customer ON inbox (tenant_id, customer_id, created_at)',
    """CREATE TABLE IF NOT EXISTS deliveries (
  id BIGSERIAL PRIMARY KEY, tenant_id TEXT NOT NULL, candidate_id BIGINT NOT NULL,
  program TEXT NOT NULL, customer_id TEXT NOT NULL, channel TEXT NOT NULL,
  step BIGINT NOT NULL, remaining TEXT NOT NULL DEFAULT '[]',
  idempotency_key TEXT NOT NULL, status TEXT NOT NULL,
  attempts BIGINT NOT NULL DEFAULT 0, next_attempt_at TIMESTAMPTZ NOT NULL, lease_until TIMESTAMPTZ,
  worker TEXT, last_error TEXT, policy TEXT, provider_id TEXT,
  shadow BOOLEAN NOT NULL DEFAULT false, category TEXT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL, sent_at TIMESTAMPTZ,
  ambiguous_at TIMESTAMPTZ, ambiguity TEXT,
  UNIQUE (tenant_id, idempotency_key)
)""",
    'CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (status, next_attempt_at)',
    'CREATE INDEX IF NOT EXISTS deliveries_by_customer ON deliveries (tenant_id, customer_id, sent_at)',
    'CREATE INDEX IF NOT EXISTS deliveries_by_candidate ON deliveries (candidate_id)',
    'CREATE INDEX IF NOT EXISTS deliveries_by_provider_id ON deliveries (provider_id)',
    """CREATE TABLE IF NOT EXISTS delivery_events (
  id BIGSERIAL PRIMARY KEY, tenant_id TEXT NOT NULL, delivery_id BIGINT NOT NULL, status TEXT NOT NULL,
  detail TEXT, created_at TIMESTAMPTZ NOT NULL
)""",
    'CREATE INDEX IF NOT EXISTS delivery_events_by_delivery ON delivery_events (delivery_id)',
    """CREATE TABLE IF NOT EXISTS profiles (
  tenant_id TEXT NOT NULL, customer_id TEXT NOT NULL, email TEXT, phone TEXT,
  push_token TEXT, timezone TEXT, locale TEXT, attributes JSONB, updated_at TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (tenant_id, customer_id)
)""",
    """CREATE TABLE IF NOT EXISTS consent (
  tenant_id TEXT NOT NULL, customer_id TEXT NOT NULL, channel TEXT NOT NULL,
  topic TEXT NOT NULL, granted BOOLEAN NOT NULL, source TEXT, updated_at TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (tenant_id, customer_id, channel, topic)
)""",
    """CREATE TABLE IF NOT EXISTS stream_queue (
  id BIGSERIAL PRIMARY KEY, stream TEXT NOT NULL, body TEXT NOT NULL, enqueued_at TIMESTAMPTZ NOT NULL,
  lease_until TIMESTAMPTZ, worker TEXT
)""",
    'CREATE INDEX IF NOT EXISTS stream_queue_by_stream ON stream_queue (stream, id)',
    """CREATE TABLE IF NOT EXISTS event_log (
  tenant_id TEXT NOT NULL, event_id TEXT NOT NULL, customer_id TEXT NOT NULL,
  type TEXT NOT NULL, ts TIMESTAMPTZ NOT NULL, attributes TEXT NOT NULL,
  PRIMARY KEY (tenant_id, event_id)
)""",
    'CREATE INDEX IF NOT EXISTS event_log_by_time ON event_log (tenant_id, customer_id, ts)',
    """CREATE TABLE IF NOT EXISTS timers (
  tenant_id TEXT NOT NULL, program TEXT NOT NULL, customer_id TEXT NOT NULL,
  event_id TEXT NOT NULL, fire_at TIMESTAMPTZ NOT NULL, after_ts TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (tenant_id, program, customer_id, event_id)
)""",
    'CREATE INDEX IF NOT EXISTS timers_due ON timers (fire_at)',
    """CREATE TABLE IF NOT EXISTS api_keys (
  key_hash TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, name TEXT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS suppressions (
  tenant_id TEXT NOT NULL, channel TEXT NOT NULL, address TEXT NOT NULL,
  reason TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (tenant_id, channel, address)
)""",
    """CREATE TABLE IF NOT EXISTS bandit_arms (
  tenant_id TEXT NOT NULL, program TEXT NOT NULL, variant TEXT NOT NULL, at TIMESTAMPTZ NOT NULL,
  share DOUBLE PRECISION NOT NULL, alpha DOUBLE PRECISION NOT NULL, beta DOUBLE PRECISION NOT NULL,
  trials BIGINT NOT NULL, successes BIGINT NOT NULL,
  PRIMARY KEY (tenant_id, program, at, variant)
)""",
    """CREATE TABLE IF NOT EXISTS learned_outcomes (
  tenant_id TEXT NOT NULL, candidate_id BIGINT NOT NULL, program TEXT NOT NULL,
  converted BOOLEAN NOT NULL, model TEXT NOT NULL, learned_at TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (tenant_id, candidate_id)
)""",
    """CREATE TABLE IF NOT EXISTS engagements (
  id BIGSERIAL PRIMARY KEY, tenant_id TEXT NOT NULL, delivery_id BIGINT, candidate_id BIGINT, program TEXT,
  customer_id TEXT NOT NULL, channel TEXT, type TEXT NOT NULL, ts TIMESTAMPTZ NOT NULL,
  source TEXT NOT NULL, url TEXT, dedup_key TEXT NOT NULL, recorded_at TIMESTAMPTZ NOT NULL,
  UNIQUE (tenant_id, dedup_key)
)""",
    'CREATE INDEX IF NOT EXISTS engagements_by_candidate ON engagements (candidate_id)',
    'CREATE INDEX IF NOT EXISTS engagements_by_program ON engagements (tenant_id, program, type)',
    'CREATE INDEX IF NOT EXISTS engagements_by_recorded ON engagements (tenant_id, recorded_at)',
    """CREATE TABLE IF NOT EXISTS goal_events (
  tenant_id TEXT NOT NULL, event_id TEXT NOT NULL, customer_id TEXT NOT NULL,
  type TEXT NOT NULL, ts TIMESTAMPTZ NOT NULL, value DOUBLE PRECISION, recorded_at TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (tenant_id, event_id)
)""",
    'CREATE INDEX IF NOT EXISTS goal_events_by_customer ON goal_events (tenant_id, customer_id, ts)',
    """CREATE TABLE IF NOT EXISTS conversions (
  tenant_id TEXT NOT NULL, program TEXT NOT NULL, candidate_id BIGINT NOT NULL,
  customer_id TEXT NOT NULL, event_id TEXT NOT NULL, event_type TEXT NOT NULL, value DOUBLE PRECISION,
  event_ts TIMESTAMPTZ NOT NULL, touch_ts TIMESTAMPTZ NOT NULL, attributed_at TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (tenant_id, program, event_id)
)""",
    'CREATE INDEX IF NOT EXISTS conversions_by_candidate ON conversions (candidate_id)',
    'CREATE INDEX IF NOT EXISTS conversions_by_attributed ON conversions (tenant_id, attributed_at)',
    """CREATE TABLE IF NOT EXISTS tracked_links (
  tenant_id TEXT NOT NULL, hash TEXT NOT NULL, url TEXT NOT NULL, issued_at TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (tenant_id, hash)
)""",
    """CREATE TABLE IF NOT EXISTS export_cursors (
  tenant_id TEXT NOT NULL, export TEXT NOT NULL, source TEXT NOT NULL, position TIMESTAMPTZ NOT NULL,
  updated_at TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (tenant_id, export, source)
)""",
    'CREATE INDEX IF NOT EXISTS deliveries_by_sent ON deliveries (tenant_id, sent_at)',
    'CREATE INDEX IF NOT EXISTS deliveries_by_created ON deliveries (tenant_id, created_at)',
    """CREATE TABLE IF NOT EXISTS schedule_state (
  tenant_id TEXT NOT NULL, program TEXT NOT NULL, cron TEXT, timezone TEXT,
  first_seen TIMESTAMPTZ NOT NULL, last_fire TIMESTAMPTZ, last_status TEXT, last_run_id TEXT,
  last_run_at TIMESTAMPTZ, skipped BIGINT NOT NULL DEFAULT 0, running_by TEXT, running_until TIMESTAMPTZ,
  running_fire TIMESTAMPTZ,
  updated_at TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (tenant_id, program)
)""",
    """CREATE TABLE IF NOT EXISTS schedule_log (
  id BIGSERIAL PRIMARY KEY, tenant_id TEXT NOT NULL, program TEXT NOT NULL, fire_at TIMESTAMPTZ NOT NULL,
  status TEXT NOT NULL, run_id TEXT, windows BIGINT NOT NULL DEFAULT 1, detail TEXT,
  scheduler TEXT, created_at TIMESTAMPTZ NOT NULL
)""",
    'CREATE INDEX IF NOT EXISTS schedule_log_by_program ON schedule_log (tenant_id, program, fire_at)',
    """CREATE TABLE IF NOT EXISTS scheduler_lease (
  name TEXT PRIMARY KEY, holder TEXT NOT NULL, since TIMESTAMPTZ NOT NULL, until TIMESTAMPTZ NOT NULL
)""",
]


POSTGRESQL_ADDED_COLUMNS = {
    'candidates': [
        ('status_reason', 'TEXT'),
        ('claimed_until', 'TIMESTAMPTZ'),
        ('worker', 'TEXT'),
        ('updated_at', 'TIMESTAMPTZ'),
        ('arm', "TEXT NOT NULL DEFAULT 'treatment'"),
        ('variant', 'TEXT'),
        ('features', 'JSONB'),
    ],
    'deliveries': [
        ('ambiguous_at', 'TIMESTAMPTZ'),
        ('ambiguity', 'TEXT'),
    ],
}


STATEMENTS = {
    "sqlite": (SQLITE_TABLES, SQLITE_ADDED_COLUMNS),
    "postgresql": (POSTGRESQL_TABLES, POSTGRESQL_ADDED_COLUMNS),
}
