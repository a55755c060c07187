"""Snowflake and Athena as Arrow sources.

Snowflake: the official connector, unpatched, over HTTP against fakesnow's server
(DuckDB behind Snowflake's REST protocol, results as Arrow). Athena: PyAthena's
ArrowCursor against moto's server. Limits of the Athena test: moto runs no SQL;
the test queues the result moto returns for the next query, and moto writes it
to S3 as Athena's CSV. So what is tested is ours and PyAthena's side (start the
query, wait, read the column types, read the result from S3 over HTTP into Arrow,
errors); Athena's SQL and the UNLOAD (Parquet) path are not.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import httpx
import pyarrow as pa
import pytest

from ceap.errors import CeapError, SourceError
from ceap.model import CandidateQuery
from ceap.plugin import PluginContext
from ceap.runtime import run_program
from ceap.spec import parse_program
from ceap.store import open_store

NOW = datetime(2026, 2, 1, tzinfo=UTC)


def snowflake_sql(url: str, *statements: str) -> None:
    import snowflake.connector

    from ceap.connectors.warehouse import ParsedUrl

    p = ParsedUrl(url, "snowflake")
    conn = snowflake.connector.connect(user=p.user, password=p.password, account=p.host,
                                       database="ANALYTICS", schema="CRM", **{
                                           k: int(v) if k == "port" else v for k, v in p.options.items()})
    try:
        for sql in statements:
            conn.cursor().execute(sql)
    finally:
        conn.close()


def spec(source: dict[str, Any]) -> Any:
    return parse_program({
        "name": f"wh_{uuid.uuid4().hex[:6]}",
        "source": source,
        "filters": [{"id": "spenders", "expr": "spend >= 20"}],
        "selection": {"threshold": None, "dedup_window": "1h"},
        "action": {"type": "offer", "channels": ["inapp"], "payload_columns": ["spend"]},
    })


def test_snowflake_program_reads_arrow_and_follows_its_cursor(snowflake_url: str, tmp_path: Path) -> None:
    table = f"EVENTS_{uuid.uuid4().hex[:8].upper()}"
    snowflake_sql(snowflake_url,
                  f"CREATE TABLE {table} (CUSTOMER_ID VARCHAR, SPEND FLOAT, UPDATED_AT TIMESTAMP_NTZ)",
                  f"INSERT INTO {table} VALUES ('c1', 10, '2026-01-01 10:00:00'), "
                  "('c2', 25.5, '2026-01-01 11:00:00'), ('c3', 40, '2026-01-01 12:00:00')")
    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
    ctx = PluginContext(base_dir=tmp_path, connections={"warehouse": snowflake_url})
    program = spec({"type": "snowflake", "connection": "warehouse", "table": table,
                    "cursor": "updated_at", "columns": {"spend": "float"}})
    first = run_program(program, store, ctx, now=NOW)
    assert (first.funnel.read, first.funnel.selected) == (3, 2)
    found = store.candidates(CandidateQuery(include_expired=True, limit=10))
    assert sorted((c.customer_id, c.payload["spend"]) for c in found) == [("c2", 25.5), ("c3", 40.0)]
    snowflake_sql(snowflake_url, f"INSERT INTO {table} VALUES ('c4', 99, '2026-01-02 09:00:00'), "
                                 "('c5', 99, '2026-01-01 09:00:00')")
    second = run_program(program, store, ctx, now=NOW + timedelta(hours=2))
    assert (second.funnel.read, second.funnel.selected) == (1, 1)  # only c4: past the mark


def test_snowflake_errors_name_the_source_and_hide_the_password(snowflake_url: str,
                                                                 tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
    ctx = PluginContext(base_dir=tmp_path, connections={"warehouse": snowflake_url})
    with pytest.raises(SourceError, match="source 'NO_SUCH_TABLE'") as caught:
        run_program(spec({"type": "snowflake", "connection": "warehouse", "table": "NO_SUCH_TABLE"}),
                    store, ctx, now=NOW)
    assert store.candidates(CandidateQuery(include_expired=True)) == []
    unreachable = "snowflake://ceap:hunter2-secret@acct/ANALYTICS/CRM?host=127.0.0.1&port=9&protocol=http"
    ctx = PluginContext(base_dir=tmp_path, connections={"warehouse": unreachable})
    with pytest.raises(CeapError, match="cannot connect") as caught:
        run_program(spec({"type": "snowflake", "connection": "warehouse", "table": "T"}),
                    store, ctx, now=NOW)
    assert "hunter2" not in str(caught.value)
    assert all("hunter2" not in (r.error or "") for r in store.runs("default"))


# -- Athena ------------------------------------------------------------------------
def queue_athena_result(endpoint: str, columns: list[tuple[str, str]], rows: list[list[Any]],
                        times: int = 1) -> None:
    """What moto's Athena answers to the next ``times`` queries (moto runs no SQL); a None
    value is a null (an empty unquoted CSV field, as Athena writes it)."""
    header = {"Data": [{"VarCharValue": name} for name, _ in columns]}
    data = [{"Data": [{} if v is None else {"VarCharValue": str(v)} for v in row]} for row in rows]
    info = [{"CatalogName": "hive", "SchemaName": "", "TableName": "", "Name": name, "Label": name,
             "Type": kind, "Precision": 0, "Scale": 0, "Nullable": "UNKNOWN", "CaseSensitive": False}
            for name, kind in columns]
    body = {"account_id": "123456789012", "region": "us-east-1",
            "results": [{"rows": [header, *data], "column_info": info}] * times}
    httpx.post(f"{endpoint}/moto-api/static/athena/query-results", json=body).raise_for_status()


@pytest.fixture
def athena_url(aws: str) -> str:
    bucket = f"athena-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"athena://us-east-1/analytics?s3_staging_dir=s3://{bucket}/results/"


def test_athena_result_reaches_the_program_as_typed_arrow(aws: str, athena_url: str,
                                                          tmp_path: Path) -> None:
    queue_athena_result(aws, [("customer_id", "varchar"), ("spend", "double"), ("visits", "integer")],
                        [["c1", "12.5", "1"], ["c2", "30.0", "4"], ["c3", "55.25", "2"]])
    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
    ctx = PluginContext(base_dir=tmp_path, connections={"lake": athena_url})
    program = spec({"type": "athena", "connection": "lake",
                    "query": "SELECT customer_id, spend, visits FROM events"})
    result = run_program(program, store, ctx, now=NOW)
    assert (result.funnel.read, result.funnel.selected) == (3, 2)
    found = store.candidates(CandidateQuery(include_expired=True, limit=10))
    assert sorted((c.customer_id, c.payload["spend"]) for c in found) == [("c2", 30.0), ("c3", 55.25)]


def test_athena_schema_types_come_from_athena(aws: str, athena_url: str) -> None:
    from ceap.connectors.athena import AthenaConnector

    queue_athena_result(aws, [("CUSTOMER_ID", "varchar"), ("n", "bigint"), ("ok", "boolean")],
                        [["c1", "7", "true"]])
    connector = AthenaConnector.from_dict({"type": "athena", "connection": athena_url, "table": "t"})
    assert connector.schema() == pa.schema([("customer_id", pa.string()), ("n", pa.int64()),
                                            ("ok", pa.bool_())])
    assert pa.Table.from_batches(list(connector.batches())).to_pylist() == [
        {"customer_id": "c1", "n": 7, "ok": True}]


def test_athena_unreachable_fails_naming_the_source(aws: str, monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
    ctx = PluginContext(base_dir=tmp_path)
    with pytest.raises(SourceError, match="source 'events'") as caught:
        run_program(spec({"type": "athena", "table": "events",
                          "connection": "athena://us-east-1/db?s3_staging_dir=s3://x-results/"}),
                    store, ctx, now=NOW)
    assert "ceap-test-secret-value" not in str(caught.value)
    assert [r.status for r in store.runs("default")] == ["failed"]


def test_validate_sources_does_not_print_the_password(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from ceap.cli import app
    from tests.helpers import write_program

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SF_PASSWORD", "s3cr3t-snowflake-pw")
    (tmp_path / "ceap.yaml").write_text(
        "connections:\n  warehouse: snowflake://ceap:${SF_PASSWORD}@acct/DB/S"
        "?host=127.0.0.1&port=9&protocol=http\n")
    (tmp_path / "programs").mkdir()
    write_program(tmp_path / "programs" / "p.yaml", {
        "name": "p", "source": {"type": "snowflake", "connection": "warehouse", "table": "events"},
        "action": {"type": "offer", "channels": ["inapp"]}})
    result = CliRunner().invoke(app, ["validate", "--sources", "programs"])
    assert result.exit_code != 0
    assert "source 'events': cannot connect" in result.output
    assert "s3cr3t" not in result.output
