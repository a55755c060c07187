"""SQL both stores share: the table layout and row decoding."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from ceap.model import Candidate, InboxItem, RunRecord
from ceap.store.schema import CANDIDATE_COLUMNS, JSON_COLUMNS, from_iso, loads

#: Column types per dialect; keys are the abstract types used below.
TYPES = {
    "sqlite": {"id": "INTEGER PRIMARY KEY", "text": "TEXT", "real": "REAL", "int": "INTEGER",
               "bool": "INTEGER", "ts": "TEXT", "json": "TEXT"},
    "postgres": {"id": "BIGSERIAL PRIMARY KEY", "text": "TEXT", "real": "DOUBLE PRECISION",
                 "int": "BIGINT", "bool": "BOOLEAN", "ts": "TIMESTAMPTZ", "json": "JSONB"},
}

_CANDIDATE_TYPES = {
    "tenant_id": "text NOT NULL", "program": "text NOT NULL", "run_id": "text NOT NULL",
    "customer_id": "text NOT NULL", "subject_id": "text", "context": "json",
    "action_type": "text NOT NULL", "channels": "json NOT NULL", "template": "text",
    "category": "text NOT NULL", "score": "real", "model": "text", "reasons": "json",
    "payload": "json", "status": "text NOT NULL", "priority": "int NOT NULL",
    "created_at": "ts NOT NULL", "not_before": "ts NOT NULL", "expires_at": "ts NOT NULL",
    "dedup_key": "text NOT NULL", "holdout": "bool NOT NULL", "version": "int NOT NULL",
    "arm": "text NOT NULL DEFAULT 'treatment'", "variant": "text", "features": "json",
}


def _typed(dialect: str, spec: str) -> str:
    head, _, rest = spec.partition(" ")
    return f"{TYPES[dialect][head]} {rest}".strip()


def candidate_column(dialect: str, name: str) -> str:
    """A candidate column's type and constraints in ``dialect`` (``TEXT NOT NULL ...``)."""
    return _typed(dialect, _CANDIDATE_TYPES[name])


#: the candidates a dispatcher may claim, in claim order (migration 0008): a claim reads the
#: first entries instead of sorting every unexpired candidate; ``OR``, not ``IN``: SQLite
#: checks an ``IN`` term of a partial index through a temporary table on every write
CANDIDATES_DUE = "(status = 'pending' OR status = 'shadow')"
CANDIDATES_DUE_INDEX = ("CREATE INDEX IF NOT EXISTS candidates_due ON candidates "
                        f"(priority DESC, score DESC, id) WHERE {CANDIDATES_DUE}")


def ddl(dialect: str) -> list[str]:
    """CREATE statements for every table and index, idempotent."""
    t = TYPES[dialect]
    cols = ",\n  ".join(f"{name} {_typed(dialect, _CANDIDATE_TYPES[name])}"
                        for name in CANDIDATE_COLUMNS)
    return [
        f"""CREATE TABLE IF NOT EXISTS candidates (
  id {t['id']},
  {cols},
  UNIQUE (tenant_id, dedup_key)
)""",
        "CREATE INDEX IF NOT EXISTS candidates_by_customer "
        "ON candidates (tenant_id, customer_id, status)",
        "CREATE INDEX IF NOT EXISTS candidates_by_program ON candidates (tenant_id, program, status)",
        "CREATE INDEX IF NOT EXISTS candidates_by_expiry ON candidates (expires_at)",
        CANDIDATES_DUE_INDEX,
        f"""CREATE TABLE IF NOT EXISTS runs (
  run_id {t['text']} PRIMARY KEY, tenant_id {t['text']} NOT NULL, program {t['text']} NOT NULL,
  status {t['text']} NOT NULL, started_at {t['ts']} NOT NULL, finished_at {t['ts']},
  funnel {t['json']}, error {t['text']}
)""",
        "CREATE INDEX IF NOT EXISTS runs_by_program ON runs (tenant_id, program, started_at)",
        f"""CREATE TABLE IF NOT EXISTS quarantine (
  id {t['id']}, tenant_id {t['text']} NOT NULL, run_id {t['text']} NOT NULL,
  program {t['text']} NOT NULL, row {t['text']} NOT NULL, reason {t['text']} NOT NULL
)""",
        "CREATE INDEX IF NOT EXISTS quarantine_by_run ON quarantine (tenant_id, run_id)",
        f"""CREATE TABLE IF NOT EXISTS inbox (
  id {t['id']}, tenant_id {t['text']} NOT NULL, customer_id {t['text']} NOT NULL,
  idempotency_key {t['text']} NOT NULL, program {t['text']} NOT NULL, candidate_id {t['int']},
  title {t['text']} NOT NULL, body {t['text']} NOT NULL, payload {t['json']},
  created_at {t['ts']} NOT NULL, read_at {t['ts']},
  UNIQUE (tenant_id, idempotency_key)
)""",
        "CREATE INDEX IF NOT EXISTS inbox_by_customer ON inbox (tenant_id, customer_id, created_at)",
    ]


#: what the dispatcher and cancellations add to a candidate (see ``delivery_schema``)
_STATUS_COLUMNS = ("status_reason", "updated_at")
SELECT_CANDIDATE = "SELECT id, " + ", ".join([*CANDIDATE_COLUMNS, *_STATUS_COLUMNS]) + " FROM candidates"


_CANDIDATE_NAMES = ("id", *CANDIDATE_COLUMNS, *_STATUS_COLUMNS)
if set(_CANDIDATE_NAMES) != {f.name for f in fields(Candidate)}:  # candidate_from_row sets them all
    raise RuntimeError("SELECT_CANDIDATE's columns differ from the Candidate fields")
_JSON_AT = tuple(_CANDIDATE_NAMES.index(n) for n in JSON_COLUMNS)
_TIME_AT = tuple(_CANDIDATE_NAMES.index(n) for n in ("created_at", "not_before", "expires_at", "updated_at"))
_HOLDOUT_AT, _CONTEXT_AT, _PAYLOAD_AT = (_CANDIDATE_NAMES.index(n) for n in ("holdout", "context", "payload"))


def candidate_from_row(row: Sequence[Any]) -> Candidate:
    """A ``Candidate`` from a ``SELECT_CANDIDATE`` row (the dispatcher decodes thousands a
    second: the fields are set directly, as ``Candidate(**values)`` would set them)."""
    values = list(row)
    for i in _JSON_AT:
        values[i] = loads(values[i])
    for i in _TIME_AT:
        values[i] = from_iso(values[i])
    values[_HOLDOUT_AT] = bool(values[_HOLDOUT_AT])
    values[_CONTEXT_AT] = values[_CONTEXT_AT] or {}
    values[_PAYLOAD_AT] = values[_PAYLOAD_AT] or {}
    c = object.__new__(Candidate)
    c.__dict__.update(zip(_CANDIDATE_NAMES, values, strict=True))
    return c


RUN_COLUMNS = ("run_id", "tenant_id", "program", "status", "started_at", "finished_at",
               "funnel", "error")


def run_from_row(row: Sequence[Any]) -> RunRecord:
    values = dict(zip(RUN_COLUMNS, row, strict=True))
    values["started_at"] = from_iso(values["started_at"])
    values["finished_at"] = from_iso(values["finished_at"])
    values["funnel"] = loads(values["funnel"]) or {}
    return RunRecord(**values)


INBOX_COLUMNS = ("id", "tenant_id", "customer_id", "idempotency_key", "program", "candidate_id",
                 "title", "body", "payload", "created_at", "read_at")


def inbox_from_row(row: Sequence[Any]) -> InboxItem:
    values = dict(zip(INBOX_COLUMNS, row, strict=True))
    values["payload"] = loads(values["payload"]) or {}
    values["created_at"] = from_iso(values["created_at"])
    values["read_at"] = from_iso(values["read_at"])
    return InboxItem(**values)
