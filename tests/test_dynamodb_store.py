"""The DynamoDB candidate store on moto's server (a real DynamoDB API over HTTP),
alone and in the mixed configuration (SQL store + ``candidate_store``). The
store conformance suite runs on the mixed store in test_conformance.py."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ceap.api import create_app
from ceap.api.auth import create_key
from ceap.cli import app
from ceap.errors import PluginError
from ceap.model import CandidateQuery, RunRecord, utcnow
from ceap.store import open_store
from ceap.store.dynamodb import DynamoDbStore
from ceap.store.schema import CANDIDATE_SCHEMA
from ceap.testing import make_candidates
from tests.helpers import ORDERS, ORDERS_HEADER, base_program, write_csv, write_program


def table_items(url: str) -> list[dict[str, Any]]:
    name = url.split("://", 1)[1].split("?", 1)[0]
    client = boto3.client("dynamodb", region_name="us-east-1")
    return [item for page in client.get_paginator("scan").paginate(TableName=name)
            for item in page["Items"]]


def mixed_project(root: Path, dynamodb_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A project in ``root`` (the working folder) with a SQLite store, DynamoDB candidates
    and the big_carts program over a CSV of orders."""
    monkeypatch.chdir(root)
    monkeypatch.delenv("CEAP_STORE", raising=False)
    write_csv(root / "orders.csv", ORDERS_HEADER, ORDERS)
    (root / "programs").mkdir()
    write_program(root / "programs" / "big_carts.yaml", base_program())
    (root / "ceap.yaml").write_text(f"store: sqlite:///ceap.db\ncandidate_store: {dynamodb_url}\n")


def test_ttl_is_on_and_set_from_expires_at_except_for_the_control_group(dynamodb_url: str) -> None:
    store = open_store(dynamodb_url)
    name = dynamodb_url.split("://", 1)[1].split("?", 1)[0]
    ttl = boto3.client("dynamodb", region_name="us-east-1").describe_time_to_live(TableName=name)
    assert ttl["TimeToLiveDescription"] == {"TimeToLiveStatus": "ENABLED", "AttributeName": "ttl"}
    assert isinstance(store, DynamoDbStore)
    table = make_candidates(2, holdout=lambda i: i == 1)
    assert store.write_candidates(table).inserted == 2
    items = {i["sk"]["S"]: i for i in table_items(dynamodb_url)}
    expires = table.column("expires_at")[0].as_py()
    assert int(items["dedup-0"]["ttl"]["N"]) == int(expires.timestamp())
    assert "ttl" not in items["dedup-1"]  # held out: kept for the uplift measurement


def test_a_known_dedup_key_is_a_duplicate_and_is_not_overwritten(dynamodb_url: str) -> None:
    store = open_store(dynamodb_url)
    first = make_candidates(150, score=0.5)  # more than one transaction of 100
    assert store.write_candidates(first).inserted == 150
    again = make_candidates(151, score=0.9)  # 150 known keys, one new
    result = store.write_candidates(again)
    assert (result.inserted, result.duplicates) == (1, 150)
    scores = {c.dedup_key: c.score for c in store.candidates(
        CandidateQuery(include_expired=True, limit=1000))}
    assert scores["dedup-0"] == 0.5 and scores["dedup-150"] == 0.9


def test_the_item_mapping_follows_the_candidate_schema(dynamodb_url: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A column added to CANDIDATE_SCHEMA (say, a future one) is written as is."""
    schema = CANDIDATE_SCHEMA.append(pa.field("cohort", pa.string()))
    monkeypatch.setattr("ceap.store.dynamodb.CANDIDATE_SCHEMA", schema)
    store = open_store(dynamodb_url)
    table = make_candidates(1)
    store.write_candidates(table.append_column("cohort", pa.array(["B"])))
    assert table_items(dynamodb_url)[0]["cohort"] == {"S": "B"}


def test_alone_it_refuses_what_lives_in_sql_and_says_where(dynamodb_url: str) -> None:
    store = open_store(dynamodb_url)
    with pytest.raises(PluginError, match="candidates only; runs and quarantined rows live in the SQL"):
        store.write_run(RunRecord("r", "default", "p", "succeeded", utcnow()), make_candidates(1))
    with pytest.raises(PluginError, match="outbox"):
        store.tx()


def test_credentials_are_refused_in_the_url(aws: str) -> None:
    with pytest.raises(PluginError, match="credentials do not belong"):
        open_store("dynamodb://AKIA:secret@table")


def test_mixed_configuration_end_to_end(dynamodb_url: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """ceap.yaml with a SQLite store and DynamoDB candidates: `ceap run` writes the
    candidates to both, the serving API answers from DynamoDB, a re-run writes nothing
    new, runs and the dispatcher's tables stay in SQL, and a sweep removes the expired."""
    mixed_project(tmp_path, dynamodb_url, monkeypatch)
    cli = CliRunner()
    first = cli.invoke(app, ["run", "big_carts", "--json"])
    assert first.exit_code == 0, first.output
    items = table_items(dynamodb_url)
    assert sorted(i["customer_id"]["S"] for i in items) == ["c1", "c5"]

    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}", candidates=dynamodb_url)
    try:
        sql_only = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
        assert len(sql_only.candidates(CandidateQuery(limit=10))) == 2  # the dispatcher's copy
        assert sql_only.runs("default")[0].funnel["written"] == 2
        api = TestClient(create_app(store))
        key = create_key(store, "default", "tests")  # API keys: SQL
        got = api.get("/v1/customers/c1/candidates", headers={"Authorization": f"Bearer {key}"})
        assert got.status_code == 200
        served = got.json()
        assert [c["customer_id"] for c in served] == ["c1"] and served[0]["payload"]["discount"] == 10
        assert served[0]["id"] == int(next(i for i in items if i["customer_id"]["S"] == "c1")["id"]["N"])

        again = cli.invoke(app, ["run", "big_carts", "--json"])
        assert again.exit_code == 0, again.output
        assert len(table_items(dynamodb_url)) == 2
        assert sql_only.runs("default")[0].funnel["already_present"] == 2

        removed = store.sweep_expired(utcnow() + timedelta(days=400))
        assert removed == 2 and table_items(dynamodb_url) == []
    finally:
        store.close()


def test_several_customers_at_once_as_the_batch_api_asks(dynamodb_url: str) -> None:
    store = open_store(dynamodb_url)
    store.write_candidates(make_candidates(6, customer_id=lambda i: f"u{i % 3}",
                                           score=lambda i: i / 10))
    found = store.candidates(CandidateQuery(customer_ids=("u0", "u2", "nobody"), limit=10))
    assert [(c.customer_id, c.score) for c in found] == [("u2", 0.5), ("u0", 0.3), ("u2", 0.2),
                                                         ("u0", 0.0)]


def test_a_customer_deleted_is_gone_from_the_dynamodb_candidate_store(
        dynamodb_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ceap customer delete` in the mixed configuration removes the customer's serving
    items from DynamoDB as well as the SQL rows; other customers keep theirs."""
    mixed_project(tmp_path, dynamodb_url, monkeypatch)
    cli = CliRunner()
    assert cli.invoke(app, ["run", "big_carts", "--json"]).exit_code == 0
    assert sorted(i["customer_id"]["S"] for i in table_items(dynamodb_url)) == ["c1", "c5"]

    deleted = cli.invoke(app, ["customer", "delete", "c1", "--yes", "--json"])
    assert deleted.exit_code == 0, deleted.output
    assert [i["customer_id"]["S"] for i in table_items(dynamodb_url)] == ["c5"]
    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}", candidates=dynamodb_url)
    try:
        assert store.candidates(CandidateQuery(customer_id="c1", limit=10)) == []
        assert [c.customer_id for c in store.candidates(CandidateQuery(customer_id="c5", limit=10))] == ["c5"]
    finally:
        store.close()
