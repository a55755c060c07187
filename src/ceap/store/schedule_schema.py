"""Tables of the scheduler: each program's schedule state, the log of its windows,
and the lease that makes one scheduler the active one. Created by ``Store.migrate``."""

from __future__ import annotations

from ceap.store.sql_common import TYPES


def schedule_ddl(dialect: str) -> list[str]:
    t = TYPES[dialect]
    text, ts, i = t["text"], t["ts"], t["int"]
    return [
        f"""CREATE TABLE IF NOT EXISTS schedule_state (
  tenant_id {text} NOT NULL, program {text} NOT NULL, cron {text}, timezone {text},
  first_seen {ts} NOT NULL, last_fire {ts}, last_status {text}, last_run_id {text},
  last_run_at {ts}, skipped {i} NOT NULL DEFAULT 0, running_by {text}, running_until {ts},
  running_fire {ts},
  updated_at {ts} NOT NULL,
  PRIMARY KEY (tenant_id, program)
)""",
        f"""CREATE TABLE IF NOT EXISTS schedule_log (
  id {t['id']}, tenant_id {text} NOT NULL, program {text} NOT NULL, fire_at {ts} NOT NULL,
  status {text} NOT NULL, run_id {text}, windows {i} NOT NULL DEFAULT 1, detail {text},
  scheduler {text}, created_at {ts} NOT NULL
)""",
        "CREATE INDEX IF NOT EXISTS schedule_log_by_program ON schedule_log (tenant_id, program, fire_at)",
        f"""CREATE TABLE IF NOT EXISTS scheduler_lease (
  name {text} PRIMARY KEY, holder {text} NOT NULL, since {ts} NOT NULL, until {ts} NOT NULL
)""",
    ]
