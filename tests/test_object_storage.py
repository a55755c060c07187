"""File sources in object storage: s3:// against a real S3 API over HTTP (moto's server).

What these prove: CSV, JSON Lines and Parquet read from ``s3://`` globs with the
credentials and endpoint taken from the environment; Hive partitions become
columns and a ``where`` on them skips whole objects; an unreachable endpoint or
a missing object fails the run naming the source, writes no candidate and shows
no credential.
"""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from ceap.connectors.files import CsvConnector, JsonlConnector, ParquetConnector
from ceap.errors import CeapError, SourceError
from ceap.model import CandidateQuery
from ceap.plugin import PluginContext
from ceap.runtime import run_program
from ceap.spec import parse_program
from ceap.store import open_store

ROWS = [{"customer_id": f"c{i}", "spend": float(i * 10), "visits": i} for i in range(6)]


@pytest.fixture
def bucket(aws: str) -> str:
    name = f"ceap-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def put(bucket: str, key: str, body: bytes) -> None:
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=body)


def parquet_bytes(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue()


def read_all(connector: Any) -> pa.Table:
    return pa.Table.from_batches(list(connector.batches()), schema=connector.schema())


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_each_format_reads_an_s3_glob(bucket: str, fmt: str) -> None:
    halves = (ROWS[:3], ROWS[3:])
    for i, rows in enumerate(halves):
        if fmt == "parquet":
            body = parquet_bytes(rows)
        elif fmt == "jsonl":
            body = "".join(json.dumps(r) + "\n" for r in rows).encode()
        else:
            body = ("customer_id,spend,visits\n"
                    + "".join(f"{r['customer_id']},{r['spend']},{r['visits']}\n" for r in rows)).encode()
        put(bucket, f"in/part-{i}.{fmt}", body)
    put(bucket, "in/README.txt", b"not data")  # the glob must not pick it up
    cls = {"csv": CsvConnector, "jsonl": JsonlConnector, "parquet": ParquetConnector}[fmt]
    connector = cls.from_dict({"type": fmt, "path": f"s3://{bucket}/in/*.{fmt}"})
    assert connector.files() == [f"s3://{bucket}/in/part-0.{fmt}", f"s3://{bucket}/in/part-1.{fmt}"]
    table = read_all(connector).sort_by("customer_id")
    assert table.column("customer_id").to_pylist() == [r["customer_id"] for r in ROWS]
    assert table.column("spend").to_pylist() == [r["spend"] for r in ROWS]


def test_hive_partitions_are_columns_and_a_where_skips_objects(bucket: str) -> None:
    put(bucket, "events/day=2026-01-01/part.parquet", parquet_bytes(ROWS[:3]))
    put(bucket, "events/day=2026-01-02/part.parquet", parquet_bytes(ROWS[3:]))
    # not Parquet at all: reading it fails, so a run that succeeds never opened it
    put(bucket, "events/day=2026-01-03/part.parquet", b"this is not a parquet file")
    config = {"type": "parquet", "path": f"s3://{bucket}/events/*/*.parquet",
              "where": "day = DATE '2026-01-02'", "union_by_name": False}
    table = read_all(ParquetConnector.from_dict(config))
    assert sorted(table.column("customer_id").to_pylist()) == ["c3", "c4", "c5"]
    assert {str(d) for d in table.column("day").to_pylist()} == {"2026-01-02"}
    # without the condition the broken object is read, and the error names the source
    with pytest.raises(SourceError, match=r"events/\*/\*\.parquet"):
        read_all(ParquetConnector.from_dict({**config, "where": None}))


def program(path: str, **source: Any) -> Any:
    return parse_program({
        "name": "s3_spenders",
        "source": {"type": "parquet", "path": path, **source},
        "filters": [{"id": "spent", "expr": "spend >= 20"}],
        "selection": {"threshold": None},
        "action": {"type": "offer", "channels": ["inapp"]},
    })


def test_a_program_runs_over_s3_end_to_end(bucket: str, tmp_path: Path) -> None:
    put(bucket, "customers/part-0.parquet", parquet_bytes(ROWS))
    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
    result = run_program(program(f"s3://{bucket}/customers/*.parquet"), store,
                         PluginContext(base_dir=tmp_path))
    assert result.funnel.read == 6 and result.funnel.selected == 4
    found = store.candidates(CandidateQuery(limit=10))
    assert sorted(c.customer_id for c in found) == ["c2", "c3", "c4", "c5"]


def test_no_matching_object_fails_the_run_naming_the_url(bucket: str, tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
    with pytest.raises(SourceError, match=rf"no file matches 's3://{bucket}/missing/\*\.parquet'"):
        run_program(program(f"s3://{bucket}/missing/*.parquet"), store, PluginContext(base_dir=tmp_path))
    assert store.candidates(CandidateQuery(limit=10)) == []
    assert [r.status for r in store.runs("default")] == ["failed"]


def test_an_unreachable_endpoint_fails_clearly_without_credentials(
        aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
    with pytest.raises(CeapError) as caught:
        run_program(program("s3://ceap-nowhere/x/*.parquet", storage_options={"retries": 0}),
                    store, PluginContext(base_dir=tmp_path))
    message = str(caught.value)
    assert "s3://ceap-nowhere/x/*.parquet" in message and "cannot list objects" in message
    failed = store.runs("default")[0]
    assert failed.status == "failed"
    for text in (message, failed.error or ""):
        assert "ceap-test-secret-value" not in text and "AKIACEAPTEST" not in text
    assert store.candidates(CandidateQuery(limit=10)) == []


def test_secrets_in_storage_options_are_refused() -> None:
    with pytest.raises(ValidationError, match="secrets come from the environment"):
        ParquetConnector.from_dict({"type": "parquet", "path": "s3://b/x.parquet",
                                    "storage_options": {"secret": "abc"}})
