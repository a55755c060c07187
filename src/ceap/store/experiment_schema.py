"""Tables of the experiments (docs/experiments.md), created by ``Store.migrate``:
``bandit_arms`` (a bandit's variant shares over time) and ``learned_outcomes`` (which
treated candidates an online model has learned from). Also the candidate columns an
older database lacks (``arm``, ``variant``, ``features``)."""

from __future__ import annotations

from ceap.store.schema import CANDIDATE_COLUMNS
from ceap.store.sql_common import TYPES, candidate_column

#: candidate columns added after the first release, in the order they were added
EXPERIMENT_COLUMNS = ("arm", "variant", "features")


def experiment_ddl(dialect: str) -> list[str]:
    t = TYPES[dialect]
    text, ts, i, real, b = t["text"], t["ts"], t["int"], t["real"], t["bool"]
    return [
        f"""CREATE TABLE IF NOT EXISTS bandit_arms (
  tenant_id {text} NOT NULL, program {text} NOT NULL, variant {text} NOT NULL, at {ts} NOT NULL,
  share {real} NOT NULL, alpha {real} NOT NULL, beta {real} NOT NULL,
  trials {i} NOT NULL, successes {i} NOT NULL,
  PRIMARY KEY (tenant_id, program, at, variant)
)""",
        f"""CREATE TABLE IF NOT EXISTS learned_outcomes (
  tenant_id {text} NOT NULL, candidate_id {i} NOT NULL, program {text} NOT NULL,
  converted {b} NOT NULL, model {text} NOT NULL, learned_at {ts} NOT NULL,
  PRIMARY KEY (tenant_id, candidate_id)
)""",
    ]


def add_experiment_columns(dialect: str, existing: set[str]) -> list[str]:
    """ALTER statements for the experiment columns an older ``candidates`` table lacks;
    an added ``arm`` is filled from ``holdout`` (the only control group there was)."""
    missing = [c for c in EXPERIMENT_COLUMNS if c in CANDIDATE_COLUMNS and c not in existing]
    statements = [f"ALTER TABLE candidates ADD COLUMN {name} {candidate_column(dialect, name)}"
                  for name in missing]
    if "arm" in missing:
        statements.append("UPDATE candidates SET arm = 'holdout' WHERE holdout")
    return statements
