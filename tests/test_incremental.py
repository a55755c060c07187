"""Incremental sources (a cursor column and a high-water mark per program) and the
single-process engine's spilled selection."""

from __future__ import annotations

import glob
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ceap.errors import CeapError
from ceap.model import CandidateQuery, RunRecord
from ceap.pipeline.funnel import Funnel
from ceap.pipeline.plan import Plan
from ceap.pipeline.selection import RunInfo, select
from ceap.plugin import PluginContext
from ceap.runtime import run_program
from ceap.runtime.batch import EngineSettings
from ceap.runtime.spill import LocalSettings, SpilledRows
from ceap.spec import parse_program
from ceap.store import open_store
from tests.conftest import PG_BASE, require_service

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def write_events(path: Path, rows: list[tuple[str, float, str]]) -> None:
    lines = ["customer_id,spend,updated_at"] + [f"{c},{s},{t}" for c, s, t in rows]
    path.write_text("\n".join(lines) + "\n")


def program(source: dict[str, Any]) -> Any:
    return parse_program({
        "name": f"incr_{uuid.uuid4().hex[:6]}",
        "source": {"cursor": "updated_at", **source},
        "selection": {"threshold": None, "dedup_window": "1h"},
        "action": {"type": "offer", "channels": ["inapp"]},
    })


def test_each_run_reads_only_rows_past_the_last_committed_mark(store: Any, tmp_path: Path) -> None:
    write_events(tmp_path / "a.csv", [("c1", 10, "2026-01-01 10:00:00"),
                                      ("c2", 20, "2026-01-01 11:00:00")])
    spec = program({"type": "csv", "path": "*.csv"})
    ctx = PluginContext(base_dir=tmp_path)
    first = run_program(spec, store, ctx, now=NOW)
    assert first.funnel.read == 2 and first.funnel.written == 2
    assert first.run.funnel["cursor"]["through"] == "2026-01-01T11:00:00"
    # new rows arrive; one of them is older than the mark (a late row is not re-read)
    write_events(tmp_path / "b.csv", [("c3", 30, "2026-01-02 09:00:00"),
                                      ("c4", 40, "2026-01-01 10:30:00")])
    second = run_program(spec, store, ctx, now=NOW + timedelta(hours=2))
    assert second.funnel.read == 1 and second.funnel.written == 1
    found = store.candidates(CandidateQuery(customer_id="c3", include_expired=True))
    assert [c.customer_id for c in found] == ["c3"]
    # nothing new: the run reads nothing and keeps the mark
    third = run_program(spec, store, ctx, now=NOW + timedelta(hours=4))
    assert third.funnel.read == 0
    assert store.last_cursor("default", spec.name)["through"] == "2026-01-02T09:00:00"


class FailingWrite:
    """A store whose candidate write fails (the database went away mid-run)."""

    def __init__(self, inner: Any):
        self.inner = inner

    def write_run(self, run: RunRecord, candidates: pa.Table, quarantine: Any = None) -> Any:
        raise OSError("connection lost")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_run_that_does_not_commit_leaves_the_mark(store: Any, tmp_path: Path) -> None:
    write_events(tmp_path / "a.csv", [("c1", 10, "2026-01-01 10:00:00")])
    spec = program({"type": "csv", "path": "*.csv"})
    ctx = PluginContext(base_dir=tmp_path)
    run_program(spec, store, ctx, now=NOW)
    write_events(tmp_path / "b.csv", [("c2", 20, "2026-01-03 10:00:00")])
    with pytest.raises(CeapError, match="connection lost"):
        run_program(spec, FailingWrite(store), ctx, now=NOW + timedelta(hours=1))
    assert store.runs("default", spec.name)[0].status == "failed"
    assert store.last_cursor("default", spec.name)["through"] == "2026-01-01T10:00:00"
    retry = run_program(spec, store, ctx, now=NOW + timedelta(hours=2))
    assert retry.funnel.read == 1 and retry.funnel.written == 1


def test_a_postgres_source_gets_the_mark_in_its_query(tmp_path: Path) -> None:
    require_service("postgres")
    table = f"events_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (customer_id text, seq bigint)")
        conn.execute(f"INSERT INTO {table} VALUES ('c1', 1), ('c2', 2)")
    try:
        store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
        spec = parse_program({
            "name": "pg_incr",
            "source": {"type": "sql", "connection": PG_BASE, "table": table, "cursor": "seq"},
            "selection": {"threshold": None},
            "action": {"type": "offer", "channels": ["inapp"]},
        })
        ctx = PluginContext(base_dir=tmp_path)
        assert run_program(spec, store, ctx, now=NOW).funnel.read == 2
        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            conn.execute(f"INSERT INTO {table} VALUES ('c3', 3), ('c0', 0)")
        again = run_program(spec, store, ctx, now=NOW + timedelta(days=1))
        assert again.funnel.read == 1
        assert store.last_cursor("default", "pg_incr") == {"column": "seq", "type": "int64",
                                                           "through": 3}
    finally:
        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            conn.execute(f"DROP TABLE {table}")


# -- the spilled selection -------------------------------------------------------
def scored_rows(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({
        "customer_id": pa.array([f"c{i}" for i in rng.integers(0, n // 3, n)]),
        "product": pa.array([f"p{i}" for i in rng.integers(0, 5, n)]),
        # coarse scores make many ties, so the tie-breaks are exercised
        "__ceap_score": pa.array(np.round(rng.random(n), 2)),
    })


@pytest.mark.parametrize("top_k", [None, 500])
def test_spilled_selection_equals_the_in_memory_one(top_k: int | None) -> None:
    spec = parse_program({
        "name": "sel", "source": {"type": "csv", "path": "x.csv", "subject_id": "product"},
        "selection": {"threshold": None, "top_k": top_k},
        "experiment": {"holdout": 0.1},
        "action": {"type": "offer", "channels": ["inapp"]},
    })
    rows = scored_rows(60_000, seed=7)
    info = RunInfo("default", "r1", NOW, "none")
    plan = Plan(spec, PluginContext())
    in_memory = select(plan.con, rows, spec, info, Funnel())
    spilled = SpilledRows(LocalSettings(memory_limit="64MB"))
    try:
        for start in range(0, rows.num_rows, 7_000):  # many appends, as a run's batches
            spilled.append(rows.slice(start, 7_000))
        funnel = Funnel()
        on_disk = select(spilled.con, spilled.name, spec, info, funnel)
    finally:
        spilled.close()
    assert on_disk.equals(in_memory)
    assert funnel.duplicate_customer == 60_000 - funnel.selected - funnel.over_top_k
    assert not os.path.exists(spilled.folder)


def test_a_run_keeps_no_scratch_files(tmp_path: Path, sqlite_url: str) -> None:
    pq.write_table(scored_rows(30_000, seed=1).drop_columns(["__ceap_score"]), tmp_path / "x.parquet")
    spec = parse_program({
        "name": "scratch", "source": {"type": "parquet", "path": "x.parquet", "batch_rows": 4_000},
        "selection": {"threshold": None, "top_k": 100},
        "action": {"type": "offer", "channels": ["inapp"]},
    })
    spill = tmp_path / "spill"
    result = run_program(spec, open_store(sqlite_url), PluginContext(base_dir=tmp_path), now=NOW,
                         engine=EngineSettings(local=LocalSettings(memory_limit="64MB",
                                                                   spill_dir=str(spill))))
    assert result.funnel.read == 30_000 and result.funnel.selected == 100
    assert glob.glob(str(spill / "*")) == []
