"""A database made before the experiment columns existed gets them on migrate: the
arm from the holdout flag, no variant, no features; new runs then write them."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from ceap.model import RunRecord
from ceap.store import open_store
from ceap.store.experiment_schema import EXPERIMENT_COLUMNS
from ceap.store.sql_common import ddl
from ceap.testing import make_candidates
from tests.experiment_helpers import candidate_ids

NOW = datetime(2026, 1, 5, tzinfo=UTC)


def _old_candidates_ddl(dialect: str) -> str:
    """The ``candidates`` table as the first release created it (no experiment columns)."""
    create = ddl(dialect)[0]
    kept = [line for line in create.splitlines()
            if not any(line.strip().startswith(f"{c} ") for c in EXPERIMENT_COLUMNS)]
    return "\n".join(kept)


def _old_rows(dialect: str) -> list[tuple[object, ...]]:
    ts = NOW.isoformat() if dialect == "sqlite" else NOW
    later = (NOW + timedelta(days=9)).isoformat() if dialect == "sqlite" else NOW + timedelta(days=9)
    return [("default", "old", "r0", f"c{i}", None, "{}", "inform", '["email"]', None, "marketing",
             0.5, "m", None, "{}", "held_out" if i == 0 else "pending", 0, ts, ts, later,
             f"old:c{i}", i == 0, 1) for i in range(3)]


_OLD_COLUMNS = ("tenant_id, program, run_id, customer_id, subject_id, context, action_type, channels, "
                "template, category, score, model, reasons, payload, status, priority, created_at, "
                "not_before, expires_at, dedup_key, holdout, version")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_an_old_database_gets_the_experiment_columns(backend: str, request: pytest.FixtureRequest,
                                                     tmp_path: object) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/old.db"
        conn: object = sqlite3.connect(f"{tmp_path}/old.db")
        marks = ", ".join("?" for _ in range(22))
    else:
        url = request.getfixturevalue("pg_empty_url")
        conn = psycopg.connect(url, autocommit=True)
        marks = ", ".join("%s" for _ in range(22))
    dialect = "sqlite" if backend == "sqlite" else "postgres"
    create = _old_candidates_ddl(dialect)
    assert "arm" not in create and "variant" not in create and "features" not in create
    conn.execute(create)  # type: ignore[attr-defined]
    for row in _old_rows(dialect):
        conn.execute(f"INSERT INTO candidates ({_OLD_COLUMNS}) VALUES ({marks})", row)  # type: ignore[attr-defined]
    if backend == "sqlite":
        conn.commit()  # type: ignore[attr-defined]
    conn.close()  # type: ignore[attr-defined]

    store = open_store(url)  # migrates
    try:
        old = {c.customer_id: c for c in candidate_ids(store, "old").values()}
        assert {k: (c.arm, c.variant, c.features) for k, c in old.items()} == {
            "c0": ("holdout", None, None), "c1": ("treatment", None, None),
            "c2": ("treatment", None, None)}
        store.migrate()  # again: nothing changes
        assert {c.customer_id: c.arm for c in candidate_ids(store, "old").values()} == {
            "c0": "holdout", "c1": "treatment", "c2": "treatment"}
        new = make_candidates(2, program="new", arm=lambda i: ["global_control", "treatment"][i],
                              holdout=lambda i: i == 0, variant="b", features={"x": 1.0})
        assert store.write_run(RunRecord("r1", "default", "new", "succeeded", NOW), new).inserted == 2
        assert sorted((c.arm, c.variant, c.features["x"]) for c in candidate_ids(store, "new").values()) \
            == [("global_control", "b", 1.0), ("treatment", "b", 1.0)]
    finally:
        store.close()
