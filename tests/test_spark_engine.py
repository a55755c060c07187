"""``--engine spark`` in local[2]: the same program gives the same candidates as the
single-process engine, a re-run writes nothing new, and bad rows, the funnel and a
broken source behave as in the local engine. One SparkSession for the whole module
(starting one takes seconds)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from ceap.cli import app
from ceap.errors import SourceError
from ceap.plugin import PluginContext
from ceap.runtime import run_program
from ceap.runtime.batch import EngineSettings
from ceap.spec import parse_program
from ceap.store import open_store
from tests.helpers import ORDERS, ORDERS_HEADER, base_program, write_csv, write_program

NOW = datetime(2026, 5, 1, 8, tzinfo=UTC)
SPARK = EngineSettings(engine="spark", spark={"master": "local[2]", "partitions": 4})


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    from ceap.runtime.spark_engine import spark_session

    session = spark_session({"master": "local[2]", "conf": {"spark.ui.enabled": "false",
                                                            "spark.sql.shuffle.partitions": "4"}})
    yield session
    session.stop()


def write_source(folder: Path, rows: int = 40_000, seed: int = 3) -> None:
    """Customers on several rows, coarse values (many score ties), a few bad rows."""
    rng = np.random.default_rng(seed)
    customer = [f"c{i:05d}" for i in rng.integers(0, rows // 4, rows)]
    customer[5] = None  # quarantined: no customer id
    spend = np.round(rng.random(rows) * 100, 0).astype(str).astype(object)
    spend[7], spend[11] = "lots", "n/a"  # quarantined: not a float
    table = pa.table({
        "customer_id": pa.array(customer, pa.string()),
        "product": pa.array([f"p{i}" for i in rng.integers(0, 6, rows)]),
        "country": pa.array(rng.choice(["US", "FR", "DE", "ZZ"], rows)),
        "spend": pa.array(spend, pa.string()),
        "visits": pa.array(rng.integers(0, 20, rows)),
    })
    folder.mkdir(parents=True, exist_ok=True)
    for i, start in enumerate(range(0, rows, rows // 2)):  # two files
        pq.write_table(table.slice(start, rows // 2), folder / f"part-{i}.parquet")


def program(**selection: Any) -> Any:
    return parse_program({
        "name": "spark_vs_local",
        "source": {"type": "parquet", "path": "data/*.parquet", "subject_id": "product",
                   "context": ["country"], "columns": {"spend": "float"}, "max_bad_share": 0.01},
        "features": {"value": "spend * 2 + visits"},
        "filters": [{"id": "served", "expr": "country <> 'ZZ'"},
                    {"id": "active", "expr": "visits >= 2"}],
        "scorer": {"type": "expression", "weights": {"value": 0.01}, "bias": -1},
        "selection": {"threshold": 0.3, "reasons": 2, **selection},
        "experiment": {"holdout": 0.2},
        "action": {"type": "offer", "channels": ["inapp"], "payload_columns": ["spend"]},
    })


def candidates_of(store: Any) -> pa.Table:
    with store.tx() as tx:
        rows = tx.execute("SELECT customer_id, subject_id, context, score, reasons, payload, status, "
                          "dedup_key, holdout, created_at, expires_at FROM candidates "
                          "ORDER BY dedup_key").fetchall()
    return pa.Table.from_pylist([dict(zip(["customer_id", "subject_id", "context", "score", "reasons",
                                           "payload", "status", "dedup_key", "holdout", "created_at",
                                           "expires_at"], r, strict=True)) for r in rows])


def test_spark_and_local_give_identical_candidates_and_funnels(spark: Any, tmp_path: Path) -> None:
    """Best row per (customer, product) with many exact score ties between rows that
    differ elsewhere (spend 30 + visits 4 = spend 31 + visits 2), then top-k."""
    write_source(tmp_path / "data")
    spec = program(one_per_customer=False, top_k=4_000)
    ctx = PluginContext(base_dir=tmp_path)
    local_store = open_store(f"sqlite:///{tmp_path / 'local.db'}")
    spark_store = open_store(f"sqlite:///{tmp_path / 'spark.db'}")
    local = run_program(spec, local_store, ctx, now=NOW)
    on_spark = run_program(spec, spark_store, ctx, now=NOW, engine=SPARK)
    assert local.funnel.selected > 100 and local.funnel.held_out > 0
    assert local.funnel.duplicate_customer > 0 and local.funnel.quarantined == 3
    keep = ("run_id", "written", "already_present")
    assert ({k: v for k, v in on_spark.funnel.to_dict().items() if k not in keep}
            == {k: v for k, v in local.funnel.to_dict().items() if k not in keep})
    assert candidates_of(spark_store).equals(candidates_of(local_store))
    assert (sorted(spark_store.quarantined("default", on_spark.run.run_id), key=str)
            == sorted(local_store.quarantined("default", local.run.run_id), key=str))
    # (a re-run writing nothing new: see the CLI test below)


def test_a_broken_source_fails_the_spark_run_naming_it(spark: Any, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "part-0.parquet").write_bytes(b"not parquet at all")
    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
    with pytest.raises(SourceError, match=r"data/\*\.parquet"):
        run_program(program(), store, PluginContext(base_dir=tmp_path), now=NOW, engine=SPARK)
    assert [r.status for r in store.runs("default")] == ["failed"]
    with store.tx() as tx:
        assert tx.execute("SELECT count(*) FROM candidates").fetchone()[0] == 0


def cli_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CEAP_STORE", raising=False)
    write_csv(tmp_path / "orders.csv", ORDERS_HEADER, ORDERS)
    (tmp_path / "programs").mkdir(exist_ok=True)
    write_program(tmp_path / "programs" / "big_carts.yaml", base_program())
    (tmp_path / "ceap.yaml").write_text(
        f"store: sqlite:///ceap.db\nengine: {engine}\nspark: {{master: 'local[2]'}}\n")
    return CliRunner()


def test_ceap_yaml_engine_spark_runs_a_csv_program_like_local(
        spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CSV source (read on the driver, handed to Spark as Arrow) through the CLI, with
    ``engine: spark`` in ceap.yaml; ``--engine local`` overrides it for the comparison."""
    cli = cli_project(tmp_path, monkeypatch, "spark")
    on_spark = cli.invoke(app, ["run", "big_carts", "--json"])
    assert on_spark.exit_code == 0, on_spark.output
    local = cli.invoke(app, ["--store", "sqlite:///local.db", "run", "big_carts", "--json",
                             "--engine", "local"])
    assert local.exit_code == 0, local.output
    spark_funnel, local_funnel = (json.loads(r.output)[0]["funnel"] for r in (on_spark, local))
    for key in ("read", "quarantined", "filters", "eligible", "selected", "held_out", "written"):
        assert spark_funnel[key] == local_funnel[key], key
    assert spark_funnel["written"] == 2
    again = cli.invoke(app, ["run", "big_carts", "--json"])
    assert json.loads(again.output)[0]["funnel"]["written"] == 0


def test_an_unknown_engine_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cli = cli_project(tmp_path, monkeypatch, "local")
    result = cli.invoke(app, ["run", "big_carts", "--engine", "flink"])
    assert result.exit_code == 2
    assert "unknown engine 'flink' (known: local, spark)" in result.output


def test_a_failure_inside_a_partition_surfaces_as_the_local_engine_reports_it(
        spark: Any, tmp_path: Path) -> None:
    """A filter that only fails on the data (a cast of text to a number) fails the run with
    the same error as the local engine, naming the filter, and writes nothing."""
    write_csv(tmp_path / "orders.csv", ORDERS_HEADER, ORDERS)
    spec = parse_program(base_program(filters=[{"id": "numeric_country",
                                                "expr": "CAST(country AS INTEGER) > 0"}]))
    ctx = PluginContext(base_dir=tmp_path)
    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
    with pytest.raises(SourceError) as local:
        run_program(spec, store, ctx, now=NOW)
    with pytest.raises(SourceError) as on_spark:
        run_program(spec, store, ctx, now=NOW, engine=SPARK)
    assert str(local.value).startswith("filters[0] (numeric_country): Conversion Error")
    assert str(on_spark.value) == str(local.value)
    assert [r.status for r in store.runs("default")] == ["failed", "failed"]
    with store.tx() as tx:
        assert tx.execute("SELECT count(*) FROM candidates").fetchone()[0] == 0
