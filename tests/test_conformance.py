"""Every built-in plugin and every shipped test double passes the conformance
suite; the suite itself catches broken plugins; registration refuses
malformed ones."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightgbm as lgb
import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel, ConfigDict

from ceap.channels.base import Channel, ChannelConfig, Message, SendResult
from ceap.channels.external import ExternalChannel, ExternalConfig
from ceap.channels.http_common import HttpChannel
from ceap.connectors.base import Connector, ConnectorConfig
from ceap.errors import PluginError
from ceap.filters.base import Filter, FilterConfig
from ceap.model import WriteResult
from ceap.plugin import PluginConfig, PluginContext
from ceap.registry import Registry, default_registry
from ceap.scorers.base import Scorer, ScorerConfig
from ceap.store.base import open_store
from ceap.store.schema import CANDIDATE_SCHEMA
from ceap.store.sqlite import SqliteStore
from ceap.testing import (
    CapturingChannel,
    MemoryConnector,
    check_channel,
    check_config,
    check_connector,
    check_filter,
    check_registration,
    check_scorer,
    check_store,
    make_candidates,
    make_messages,
)

ROWS = [{"customer_id": f"c{i}", "spend": [10.5, 80.0, None, 55.25, 120.0, 3.0, 60.0][i],
         "visits": i * 3, "country": ["US", "US", "FR", "US", None, "DE", "US"][i],
         "active": i % 2 == 0} for i in range(7)]
FEATURES = ["x1", "x2", "x3"]


def builtins(kind: str) -> list[str]:
    return sorted(i.name for i in default_registry().info() if i.kind == kind and i.distribution == "ceap")


@pytest.fixture(scope="module")
def training() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 3))
    y = (x[:, 0] + 0.5 * x[:, 1] - 0.3 * x[:, 2] + rng.normal(scale=0.5, size=300) > 0).astype(int)
    return x, y


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, training: tuple[np.ndarray, np.ndarray]) -> Path:
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType as MlFloat
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    x, y = training
    root = tmp_path_factory.mktemp("models")
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 7},
                        lgb.Dataset(x, y, feature_name=FEATURES), num_boost_round=10)
    booster.save_model(str(root / "churn.txt"))
    lr = LogisticRegression().fit(x.astype(np.float32), y)
    onnx_lr = convert_sklearn(lr, initial_types=[("input", FloatTensorType([None, 3]))],
                              options={id(lr): {"zipmap": False}}, target_opset=17)
    (root / "lr.onnx").write_bytes(onnx_lr.SerializeToString())
    onnx_gbm = convert_lightgbm(booster, initial_types=[("input", MlFloat([None, 3]))], zipmap=False,
                                target_opset=15)
    (root / "gbm.onnx").write_bytes(onnx_gbm.SerializeToString())
    _more_models(root, x, y)
    return root


def _more_models(root: Path, x: np.ndarray, y: np.ndarray) -> None:
    """Models for the scorers that need an optional library (xgboost, skops, river)."""
    import pickle

    import skops.io as sio
    import xgboost as xgb
    from river import linear_model
    from sklearn.ensemble import HistGradientBoostingClassifier

    xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
              xgb.DMatrix(x, y, feature_names=FEATURES), num_boost_round=10).save_model(root / "churn.json")
    sio.dump(HistGradientBoostingClassifier(max_iter=10).fit(x, y), root / "hgb.skops")
    online = linear_model.LogisticRegression()
    for row, label in zip(x[:100], y[:100], strict=True):
        online.learn_one(dict(zip(FEATURES, row, strict=True)), bool(label))
    (root / "online.pkl").write_bytes(pickle.dumps(online))
    rng = np.random.default_rng(1)
    np.savez(root / "affinity.npz", customer_ids=np.array([f"c{i}" for i in range(7)]),
             item_ids=np.array(["i1", "i2", "i3", "i4"]), user_factors=rng.normal(size=(7, 2)),
             item_factors=rng.normal(size=(4, 2)), seen_indptr=np.array([0, 1, 1, 2, 2, 2, 2, 2]),
             seen_indices=np.array([0, 3]))


def feature_sample() -> pa.Table:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(9, 3))
    x2 = pa.array([None if i == 4 else float(v) for i, v in enumerate(x[:, 1])], pa.float64())
    return pa.table({"customer_id": [f"c{i}" for i in range(9)], "x1": x[:, 0], "x2": x2,
                     "x3": pa.array((x[:, 2] * 10).round().astype(np.int64)),
                     "country": ["US", "FR"] * 4 + ["DE"]})


# -- samples of every built-in -------------------------------------------------------
# Each returns (config, context); a built-in without a sample fails the test below.

Sample = Callable[[Path, pytest.FixtureRequest], tuple[dict[str, Any], PluginContext]]


def _write_files(root: Path) -> None:
    table = pa.Table.from_pylist(ROWS)
    pq.write_table(table, root / "rows.parquet")
    (root / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    lines = ["customer_id,spend,visits,country,active"] + [
        ",".join("" if v is None else str(v).lower() if isinstance(v, bool) else str(v) for v in r.values())
        for r in ROWS]
    (root / "rows.csv").write_text("\n".join(lines) + "\n")


def _file(kind: str) -> Sample:
    def sample(root: Path, request: pytest.FixtureRequest) -> tuple[dict[str, Any], PluginContext]:
        _write_files(root)
        return {"type": kind, "path": f"rows.{kind}"}, PluginContext(base_dir=root)
    return sample


def _sql_sqlite(root: Path, request: pytest.FixtureRequest) -> tuple[dict[str, Any], PluginContext]:
    with sqlite3.connect(root / "src.db") as conn:
        conn.execute("CREATE TABLE customers (customer_id TEXT, spend REAL, visits INTEGER, country TEXT)")
        conn.executemany("INSERT INTO customers VALUES (?, ?, ?, ?)",
                         [(r["customer_id"], r["spend"], r["visits"], r["country"]) for r in ROWS])
    context = PluginContext(base_dir=root, connections={"warehouse": "sqlite:///src.db"})
    return {"type": "sql", "connection": "warehouse", "table": "customers"}, context


def _sql_postgres(root: Path, request: pytest.FixtureRequest) -> tuple[dict[str, Any], PluginContext]:
    url = request.getfixturevalue("pg_url")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (customer_id TEXT, spend DOUBLE PRECISION, visits BIGINT, "
                     "country TEXT, active BOOLEAN, seen TIMESTAMPTZ DEFAULT now())")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO customers (customer_id, spend, visits, country, active) "
                            "VALUES (%s, %s, %s, %s, %s)",
                            [(r["customer_id"], r["spend"], r["visits"], r["country"], r["active"])
                             for r in ROWS])
    return ({"type": "sql", "connection": url, "query": "SELECT * FROM customers ORDER BY customer_id"},
            PluginContext(base_dir=root))


def _parquet_s3(root: Path, request: pytest.FixtureRequest) -> tuple[dict[str, Any], PluginContext]:
    import boto3

    request.getfixturevalue("aws")
    bucket = f"conf-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    _write_files(root)
    s3.upload_file(str(root / "rows.parquet"), bucket, "rows/part-0.parquet")
    return {"type": "parquet", "path": f"s3://{bucket}/rows/*.parquet"}, PluginContext(base_dir=root)


def _snowflake(root: Path, request: pytest.FixtureRequest) -> tuple[dict[str, Any], PluginContext]:
    from tests.test_warehouses import snowflake_sql

    url = request.getfixturevalue("snowflake_url")
    table = f"ROWS_{uuid.uuid4().hex[:8].upper()}"
    values = ", ".join("(" + ", ".join("NULL" if v is None else repr(v) if not isinstance(v, bool)
                                       else str(v).upper() for v in r.values()) + ")" for r in ROWS)
    snowflake_sql(url, f"CREATE TABLE {table} (CUSTOMER_ID VARCHAR, SPEND FLOAT, VISITS INT, "
                       "COUNTRY VARCHAR, ACTIVE BOOLEAN)", f"INSERT INTO {table} VALUES {values}")
    return ({"type": "snowflake", "connection": "wh", "query": f"SELECT * FROM {table} ORDER BY 1"},
            PluginContext(base_dir=root, connections={"wh": url}))


def _athena(root: Path, request: pytest.FixtureRequest) -> tuple[dict[str, Any], PluginContext]:
    import boto3

    from tests.test_warehouses import queue_athena_result

    endpoint = request.getfixturevalue("aws")
    bucket = f"conf-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    columns = [("customer_id", "varchar"), ("spend", "double"), ("visits", "integer"),
               ("country", "varchar"), ("active", "boolean")]
    queue_athena_result(endpoint, columns, [[str(v).lower() if isinstance(v, bool) else v
                                             for v in r.values()] for r in ROWS], times=3)
    return ({"type": "athena", "table": "customers",
             "connection": f"athena://us-east-1/db?s3_staging_dir=s3://{bucket}/results/"},
            PluginContext(base_dir=root))


CONNECTOR_SAMPLES: dict[str, dict[str, Sample]] = {
    "csv": {"file": _file("csv")}, "jsonl": {"file": _file("jsonl")},
    "parquet": {"file": _file("parquet"), "s3": _parquet_s3},
    "sql": {"sqlite": _sql_sqlite, "postgres": _sql_postgres},
    "snowflake": {"fakesnow": _snowflake},
    "athena": {"moto": _athena},
}
FILTER_SAMPLES = {"expression": {"type": "expression", "id": "big_us",
                                 "expr": "x1 > 0 AND country = 'US'"}}
SCORER_SAMPLES: dict[str, dict[str, dict[str, Any]]] = {
    "expression": {
        "expr": {"type": "expression", "expr": "x1 * 2 + COALESCE(x2, 0) - x3 / 10"},
        "weights": {"type": "expression", "weights": {"x1": 0.7, "x2": -1.2, "x3": 0.05}, "bias": 0.1},
    },
    "lightgbm": {"native": {"type": "lightgbm", "model": "churn.txt"}},
    "onnx": {"sklearn": {"type": "onnx", "model": "lr.onnx", "features": FEATURES},
             "lightgbm": {"type": "onnx", "model": "gbm.onnx", "features": FEATURES}},
    "xgboost": {"json": {"type": "xgboost", "model": "churn.json"}},
    "sklearn": {"skops": {"type": "sklearn", "model": "hgb.skops", "features": FEATURES}},
    "river": {"pickle": {"type": "river", "model": "online.pkl", "features": FEATURES,
                         "allow_pickle": True}},
    "item_affinity": {"npz": {"type": "item_affinity", "model": "affinity.npz"}},
}
#: fixtures giving a fresh database (dynamodb: a fresh table next to a fresh SQLite file)
STORE_URLS = {"sqlite": "sqlite_url", "postgres": "pg_url", "dynamodb": "dynamodb_url"}
#: provider channels run the suite in their own test files, against a local server speaking
#: the provider's API: channel name -> (test module, test function that calls check_channel)
CHANNELS_TESTED_WITH_A_PROVIDER = {
    "smtp": ("tests.test_channel_email", "test_conformance"),
    "ses": ("tests.test_channel_email", "test_ses_conformance_and_request_shape_on_a_local_endpoint"),
    "webhook": ("tests.test_channel_webhooks", "test_conformance"),
    "slack": ("tests.test_channel_webhooks", "test_conformance"),
    "chat_webhook": ("tests.test_channel_webhooks", "test_conformance"),
    "apprise": ("tests.test_channel_apprise", "test_conformance"),
    "twilio_sms": ("tests.test_channel_sms_voice", "test_conformance"),
    "twilio_voice": ("tests.test_channel_sms_voice", "test_conformance"),
    "fcm": ("tests.test_channel_push", "test_conformance_fcm"),
    "apns": ("tests.test_channel_push", "test_conformance_apns"),
    "webpush": ("tests.test_channel_push", "test_conformance_webpush"),
}
#: stream connectors have no batch read(): their tests drive them through the worker
#: or against the real brokers: connector name -> (test module, test function)
STREAMS_TESTED_ELSEWHERE = {
    "events": ("tests.test_realtime", "test_windowed_count_over_event_time_with_dedup"),
    "replay": ("tests.test_realtime", "test_windowed_count_over_event_time_with_dedup"),
    "embedded": ("tests.test_realtime", "test_programs_added_edited_and_paused_without_a_restart"),
    "redis_streams": ("tests.test_stream_connectors", "test_committed_messages_are_not_delivered_again"),
    "nats_jetstream": ("tests.test_stream_connectors", "test_committed_messages_are_not_delivered_again"),
    "kafka": ("tests.test_stream_connectors", "test_committed_messages_are_not_delivered_again"),
    "rabbitmq": ("tests.test_stream_connectors", "test_committed_messages_are_not_delivered_again"),
    "kinesis": ("tests.test_stream_connectors", "test_committed_messages_are_not_delivered_again"),
}
KINDS_WITH_SAMPLES = {"connector": {**CONNECTOR_SAMPLES, **STREAMS_TESTED_ELSEWHERE},
                      "filter": FILTER_SAMPLES,
                      "scorer": SCORER_SAMPLES,
                      "channel": {"inapp": None, **CHANNELS_TESTED_WITH_A_PROVIDER},
                      "store": STORE_URLS}


@pytest.mark.parametrize("kind", sorted(KINDS_WITH_SAMPLES))
def test_every_builtin_has_a_conformance_sample(kind: str) -> None:
    assert builtins(kind), f"no built-in {kind} plugins discovered"
    assert set(builtins(kind)) == set(KINDS_WITH_SAMPLES[kind]), \
        f"add a conformance sample for every built-in {kind}"


@pytest.mark.parametrize("kind", sorted(KINDS_WITH_SAMPLES))
def test_builtins_register(kind: str) -> None:
    for name in builtins(kind):
        check_registration(kind, name, default_registry().get(kind, name))


@pytest.mark.parametrize("name", sorted(STREAMS_TESTED_ELSEWHERE))
def test_stream_connectors_are_tested_elsewhere(name: str) -> None:
    import importlib
    import inspect

    module, function = STREAMS_TESTED_ELSEWHERE[name]
    assert inspect.isfunction(getattr(importlib.import_module(module), function))
    check_registration("connector", name, default_registry().get("connector", name))


@pytest.mark.parametrize(("name", "variant"), [(n, v) for n in builtins("connector")
                                               if n not in STREAMS_TESTED_ELSEWHERE
                                               for v in CONNECTOR_SAMPLES.get(n, {"missing": None})])
def test_connector_conformance(name: str, variant: str, tmp_path: Path,
                               request: pytest.FixtureRequest) -> None:
    if variant == "missing":
        pytest.fail(f"no conformance sample for built-in connector {name!r}: add one to CONNECTOR_SAMPLES")
    config, context = CONNECTOR_SAMPLES[name][variant](tmp_path, request)
    check_connector(default_registry().get("connector", name), config, context)


@pytest.mark.parametrize("name", builtins("filter"))
def test_filter_conformance(name: str, context: PluginContext) -> None:
    check_filter(default_registry().get("filter", name), FILTER_SAMPLES[name], context, feature_sample())


@pytest.mark.parametrize(("name", "variant"), [(n, v) for n in builtins("scorer")
                                               for v in SCORER_SAMPLES.get(n, {"missing": {}})])
def test_scorer_conformance(name: str, variant: str, models: Path) -> None:
    if variant == "missing":
        pytest.fail(f"no conformance sample for built-in scorer {name!r}: add one to SCORER_SAMPLES")
    check_scorer(default_registry().get("scorer", name), SCORER_SAMPLES[name][variant],
                 PluginContext(base_dir=models), feature_sample())


@pytest.mark.parametrize("name", builtins("store"))
def test_store_conformance(name: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue(STORE_URLS[name])
    if name == "dynamodb":  # it holds candidates only: the suite runs on the mixed store
        from ceap.store.split import SplitStore

        check_store(SplitStore, {"type": "split", "url": request.getfixturevalue("sqlite_url"),
                                 "candidates": url})
        return
    check_store(default_registry().get("store", name), {"type": name, "url": url})


@pytest.mark.parametrize("name", sorted(CHANNELS_TESTED_WITH_A_PROVIDER))
def test_provider_channels_run_the_suite_elsewhere(name: str) -> None:
    import importlib
    import inspect

    module, function = CHANNELS_TESTED_WITH_A_PROVIDER[name]
    test = getattr(importlib.import_module(module), function)
    source = inspect.getsource(test)
    assert "check_channel(" in source, f"{module}.{function} must run check_channel for {name}"
    assert name in inspect.getsource(importlib.import_module(module)), name


@pytest.mark.parametrize("backend", ["sqlite_url", "pg_url"])
@pytest.mark.parametrize("name", [n for n in builtins("channel") if n not in CHANNELS_TESTED_WITH_A_PROVIDER])
def test_channel_conformance(name: str, backend: str, request: pytest.FixtureRequest,
                             tmp_path: Path) -> None:
    assert name == "inapp", "add a sample for the new built-in channel"
    store = open_store(request.getfixturevalue(backend))
    try:
        check_channel(default_registry().get("channel", name), {"type": "inapp"},
                      PluginContext(base_dir=tmp_path, store=store), make_messages(4))
    finally:
        store.close()
    url = f"sqlite:///{tmp_path / 'own.db'}" if backend == "sqlite_url" else request.getfixturevalue(backend)
    check_channel(default_registry().get("channel", name), {"type": "inapp", "store": url},
                  PluginContext(base_dir=tmp_path), make_messages(2, tenant_id="acme"))


# -- the shipped doubles pass too ---------------------------------------------------------


def test_memory_connector_conforms(context: PluginContext) -> None:
    check_registration("connector", "memory", MemoryConnector)
    check_connector(MemoryConnector, {"type": "memory", "rows": ROWS}, context)
    MemoryConnector.publish("conformance-customers", pa.Table.from_pylist(ROWS))
    try:
        check_connector(MemoryConnector, {"type": "memory", "dataset": "conformance-customers"}, context)
    finally:
        MemoryConnector.clear()


def test_capturing_channel_conforms(context: PluginContext) -> None:
    check_registration("channel", "capture", CapturingChannel)
    check_channel(CapturingChannel, {"type": "capture", "outbox": "conformance"}, context, make_messages(3))
    assert [m.idempotency_key for m in CapturingChannel.outbox("conformance").messages][:3] == \
        ["msg-0", "msg-1", "msg-2"]
    CapturingChannel.reset()
    assert CapturingChannel.outbox("conformance").messages == []


def test_capturing_channel_fails_on_request_and_a_retry_goes_through() -> None:
    failing = CapturingChannel.from_dict({"type": "capture", "outbox": "retry", "fail_customers": ["c1"]})
    results = failing.send(make_messages(3))
    assert [r.status for r in results] == ["sent", "failed", "sent"]
    assert results[1].error is not None and "c1" in results[1].error
    healthy = CapturingChannel.from_dict({"type": "capture", "outbox": "retry"})
    assert [r.status for r in healthy.send(make_messages(3))] == ["duplicate", "sent", "duplicate"]
    outbox = CapturingChannel.outbox("retry")
    assert [m.idempotency_key for m in outbox.messages] == ["msg-0", "msg-2", "msg-1"]
    assert [m.idempotency_key for m in outbox.for_customer("c1")] == ["msg-1"]
    assert healthy.messages == outbox.messages
    outbox.clear()


def test_make_candidates_builds_valid_rows() -> None:
    table = make_candidates(4, customer_id="alice", score=lambda i: i / 10, payload={"a": 1})
    assert table.schema == CANDIDATE_SCHEMA
    assert table.column("customer_id").to_pylist() == ["alice"] * 4
    assert table.column("score").to_pylist() == [0.0, 0.1, 0.2, 0.3]
    assert table.column("payload").to_pylist() == ['{"a": 1}'] * 4
    assert len(set(table.column("dedup_key").to_pylist())) == 4
    with pytest.raises(TypeError, match="unknown column"):
        make_candidates(1, customer="x")
    with pytest.raises(TypeError, match="unknown field"):
        make_messages(1, recipient="x")


# -- registration refuses malformed plugins ---------------------------------------------


class _LooseType(ScorerConfig):
    type: str = "loose"


class _ExtraAllowed(ScorerConfig):
    model_config = ConfigDict(extra="allow", frozen=True)
    type: Literal["extra"] = "extra"


class _Good(ScorerConfig):
    type: Literal["good"] = "good"


class _NoLiteral(Scorer[_LooseType]):
    config_model: ClassVar[type[ScorerConfig]] = _LooseType


class _AllowsExtra(Scorer[_ExtraAllowed]):
    config_model: ClassVar[type[ScorerConfig]] = _ExtraAllowed


class _NotAScorer:
    config_model = _Good


class _BorrowedConfig(Scorer[ScorerConfig]):
    pass


class _PlainModel(BaseModel):
    type: Literal["plain"] = "plain"


class _NotPluginConfig(Scorer[Any]):
    config_model = _PlainModel  # type: ignore[assignment]


class _GoodScorer(Scorer[_Good]):
    config_model: ClassVar[type[ScorerConfig]] = _Good


class _DropConfig(ChannelConfig):  # ChannelConfig, not the ExternalConfig that ExternalChannel reads
    type: Literal["drop"] = "drop"


class _ExternalOnChannelConfig(ExternalChannel[Any]):
    config_model: ClassVar[type[ChannelConfig]] = _DropConfig

    def deliver_one(self, m: Message) -> SendResult:
        return SendResult(m.idempotency_key, "sent")


class _HookConfig(ExternalConfig):
    type: Literal["hook"] = "hook"


class _HttpOnExternalConfig(HttpChannel[Any]):
    config_model: ClassVar[type[ChannelConfig]] = _HookConfig


@pytest.mark.parametrize(("kind", "name", "cls", "message"), [
    ("scorer", "loose", _NoLiteral, "config field 'type' must be Literal['loose']"),
    ("scorer", "extra", _AllowsExtra, "config model must forbid extra fields"),
    ("scorer", "good", _NotAScorer, "must subclass ceap.scorers.base.Scorer"),
    ("filter", "good", _GoodScorer, "must subclass ceap.filters.base.Filter"),
    ("scorer", "other", _GoodScorer, "config field 'type' must be Literal['other']"),
    ("scorer", "borrowed", _BorrowedConfig, "must declare its own config_model"),
    ("scorer", "plain", _NotPluginConfig, "config_model must be a PluginConfig subclass"),
    ("widget", "good", _GoodScorer, "unknown plugin kind 'widget'"),
    ("channel", "drop", _ExternalOnChannelConfig, "config_model must subclass "
     "ceap.channels.external.ExternalConfig (the config base of ceap.channels.external.ExternalChannel)"),
    ("channel", "hook", _HttpOnExternalConfig, "config_model must subclass "
     "ceap.channels.http_common.HttpConfig (the config base of ceap.channels.http_common.HttpChannel)"),
])
def test_registration_rejects_malformed_plugins(kind: str, name: str, cls: type[Any], message: str) -> None:
    with pytest.raises(PluginError) as info:
        Registry().register(kind, name, cls)
    assert message in str(info.value)
    with pytest.raises(AssertionError, match="registration refused"):
        check_registration(kind, name, cls)


def test_an_unknown_type_lists_every_installed_plugin_loaded_or_not() -> None:
    registry = Registry.discover()  # lists the entry points, loads none
    with pytest.raises(PluginError) as info:
        registry.get("channel", "smtpp")
    installed = str(info.value).split("installed: ", 1)[1].rstrip(")").split(", ")
    assert {"smtp", "webhook", "twilio_sms", "inapp"} <= set(installed), str(info.value)


def test_registration_accepts_a_well_formed_plugin() -> None:
    registry = Registry()
    registry.register("scorer", "good", _GoodScorer)
    assert registry.get("scorer", "good") is _GoodScorer
    check_registration("scorer", "good", _GoodScorer)


# -- the suite catches broken plugins ---------------------------------------------------------


class _BadRowsConfig(ConnectorConfig):
    type: Literal["bad_rows"] = "bad_rows"
    flaw: Literal["batching", "schema", "order"] = "batching"


class _BadRows(Connector[_BadRowsConfig]):
    config_model: ClassVar[type[ConnectorConfig]] = _BadRowsConfig
    calls = 0

    def schema(self) -> pa.Schema:
        table = pa.Table.from_pylist(ROWS)
        return table.schema if self.config.flaw != "schema" else table.schema.remove(1)

    def read(self):  # type: ignore[no-untyped-def]
        table = pa.Table.from_pylist(ROWS)
        if self.config.flaw == "order":
            type(self).calls += 1
            table = table.take(np.roll(np.arange(table.num_rows), type(self).calls))
        yield from table.to_batches(max_chunksize=None if self.config.flaw == "batching" else 2)


class _PositionalConfig(FilterConfig):
    type: Literal["positional"] = "positional"


class _PositionalFilter(Filter[_PositionalConfig]):
    config_model: ClassVar[type[FilterConfig]] = _PositionalConfig

    def mask(self, table: pa.Table) -> pa.Array:
        return pa.array([i % 2 == 0 for i in range(table.num_rows)], pa.bool_())


class _LyingSqlConfig(FilterConfig):
    type: Literal["lying"] = "lying"


class _LyingSqlFilter(Filter[_LyingSqlConfig]):
    config_model: ClassVar[type[FilterConfig]] = _LyingSqlConfig

    def sql(self) -> str:
        return "x1 > 0"

    def mask(self, table: pa.Table) -> pa.Array:
        return pa.array([v is not None and v < 0 for v in table.column("x1").to_pylist()], pa.bool_())


class _SqlOnlyConfig(FilterConfig):
    type: Literal["sql_only"] = "sql_only"
    column: str = "x1"


class _SqlOnlyFilter(Filter[_SqlOnlyConfig]):
    """Implements only ``sql()``, as docs/plugins.md allows."""

    config_model: ClassVar[type[FilterConfig]] = _SqlOnlyConfig

    def sql(self) -> str:
        return f'"{self.config.column}" > 0'


class _NeitherConfig(FilterConfig):
    type: Literal["neither"] = "neither"


class _NeitherFilter(Filter[_NeitherConfig]):
    config_model: ClassVar[type[FilterConfig]] = _NeitherConfig


def test_a_filter_with_only_sql_passes_the_suite_and_masks_by_its_sql() -> None:
    sample = feature_sample()
    check_filter(_SqlOnlyFilter, {"type": "sql_only", "id": "s"}, None, sample)
    flt = _SqlOnlyFilter.from_dict({"type": "sql_only", "id": "s", "column": "x2"})
    kept = flt.mask(sample).to_pylist()
    assert kept == [v is not None and v > 0 for v in sample.column("x2").to_pylist()]  # null: dropped
    assert kept[4] is False


def test_a_filter_with_neither_sql_nor_mask_names_itself() -> None:
    flt = _NeitherFilter.from_dict({"type": "neither", "id": "n"})
    with pytest.raises(PluginError, match=r"filter 'n' \(.*_NeitherFilter\): implements neither "
                                          r"sql\(\) nor mask\(\)"):
        flt.mask(feature_sample())


class _SloppyScorerConfig(ScorerConfig):
    type: Literal["sloppy"] = "sloppy"
    flaw: Literal["rank", "positional", "float32", "hidden_feature"] = "rank"


class _SloppyScorer(Scorer[_SloppyScorerConfig]):
    config_model: ClassVar[type[ScorerConfig]] = _SloppyScorerConfig

    def features(self) -> list[str]:
        return ["x1"]

    def score(self, table: pa.Table) -> np.ndarray:
        x1 = np.asarray(table.column("x1").to_numpy(zero_copy_only=False), dtype=np.float64)
        if self.config.flaw == "rank":  # depends on the other rows of the batch
            return np.argsort(np.argsort(x1)).astype(np.float64)
        if self.config.flaw == "positional":
            return x1 + np.arange(len(x1))
        if self.config.flaw == "float32":
            return x1.astype(np.float32)
        return x1 + (0.0 if "x3" not in table.column_names else
                     np.asarray(table.column("x3").to_numpy(zero_copy_only=False), dtype=np.float64))


class _ForgetfulConfig(ChannelConfig):
    type: Literal["forgetful"] = "forgetful"
    flaw: Literal["no_dedup", "reversed", "per_instance"] = "no_dedup"


class _ForgetfulChannel(Channel[_ForgetfulConfig]):
    config_model: ClassVar[type[ChannelConfig]] = _ForgetfulConfig

    def __init__(self, config: _ForgetfulConfig, context: Any = None):
        super().__init__(config, context)
        self.seen: set[tuple[str, str]] = set()

    def send(self, messages: Any) -> list[SendResult]:
        results = []
        for m in messages:
            key = (m.tenant_id, m.idempotency_key)
            dup = key in self.seen and self.config.flaw != "no_dedup"
            self.seen.add(key)
            results.append(SendResult(m.idempotency_key, "duplicate" if dup else "sent"))
        return results[::-1] if self.config.flaw == "reversed" else results


class _NonAtomicStore(SqliteStore):
    """Commits the candidates before writing the quarantine."""

    def write_run(self, run, candidates, quarantine=None):  # type: ignore[no-untyped-def]
        first = super().write_run(run, candidates)
        if quarantine is not None and quarantine.num_rows:
            second = super().write_run(run, candidates.slice(0, 0), quarantine)
            return WriteResult(first.inserted, first.duplicates, second.quarantined)
        return first


class _ScoreOrderStore(SqliteStore):
    """Ignores priority when ordering lookups."""

    def candidates(self, query):  # type: ignore[no-untyped-def]
        return sorted(super().candidates(query), key=lambda c: -c.score)


def _messages() -> list[Message]:
    return make_messages(3, channel="forgetful")


@pytest.mark.parametrize(("check", "args", "message"), [
    (check_connector, (_BadRows, {"type": "bad_rows", "batch_rows": 2}), "more than batch_rows=2"),
    (check_connector, (_BadRows, {"type": "bad_rows", "flaw": "schema"}), "but schema() said"),
    (check_connector, (_BadRows, {"type": "bad_rows", "flaw": "order"}), "reading twice gave different data"),
    (check_connector, (_BadRows, {"type": "bad_rows", "nope": 1}), "does not validate"),
    (check_filter, (_PositionalFilter, {"type": "positional", "id": "p"}, None, feature_sample()),
     "permuting the rows did not permute the mask"),
    (check_filter, (_LyingSqlFilter, {"type": "lying", "id": "l"}, None, feature_sample()),
     "keeps different rows than mask()"),
    (check_scorer, (_SloppyScorer, {"type": "sloppy"}, None, feature_sample()),
     "row 0 scores differently alone than in a batch"),
    (check_scorer, (_SloppyScorer, {"type": "sloppy", "flaw": "positional"}, None, feature_sample()),
     "permuting the rows did not permute the scores"),
    (check_scorer, (_SloppyScorer, {"type": "sloppy", "flaw": "float32"}, None, feature_sample()),
     "not float64"),
    (check_scorer, (_SloppyScorer, {"type": "sloppy", "flaw": "hidden_feature"}, None, feature_sample()),
     "features() says ['x1']"),
    (check_channel, (_ForgetfulChannel, {"type": "forgetful"}, None, _messages()),
     "expected all 'duplicate'"),
    (check_channel, (_ForgetfulChannel, {"type": "forgetful", "flaw": "reversed"}, None, _messages()),
     "results must follow the order of the messages"),
    (check_channel, (_ForgetfulChannel, {"type": "forgetful", "flaw": "per_instance"}, None, _messages()),
     "the keys must outlive the instance"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_the_suite_catches_broken_plugins(check: Callable[..., None], args: tuple[Any, ...],
                                          message: str) -> None:
    with pytest.raises(AssertionError) as info:
        check(*args)
    assert message in str(info.value)


@pytest.mark.parametrize(("cls", "message"), [
    (_NonAtomicStore, "left candidates behind: write_run must be atomic"),
    (_ScoreOrderStore, "ordered by priority, then score"),
])
def test_the_suite_catches_broken_stores(cls: type[SqliteStore], message: str, sqlite_url: str) -> None:
    with pytest.raises(AssertionError) as info:
        check_store(cls, {"type": "sqlite", "url": sqlite_url})
    assert message in str(info.value)


def test_check_config_requires_closed_round_tripping_models() -> None:
    class Open(PluginConfig):
        model_config = ConfigDict(extra="ignore", frozen=True)
        type: Literal["open"] = "open"

    class OpenScorer(Scorer[Any]):
        config_model = Open

    with pytest.raises(AssertionError, match="accepts an unknown field"):
        check_config(OpenScorer, {"type": "open"})
    assert check_config(_GoodScorer, {"type": "good"}) == _Good()


def test_suite_rejects_unusable_samples(context: PluginContext) -> None:
    with pytest.raises(AssertionError, match="at least two"):
        check_connector(MemoryConnector, {"type": "memory", "rows": ROWS[:1]}, context)
    with pytest.raises(AssertionError, match="distinct idempotency keys"):
        check_channel(CapturingChannel, {"type": "capture", "outbox": "dupes"}, context,
                      make_messages(2, idempotency_key="same"))
    with pytest.raises(AssertionError, match="lacks feature column"):
        check_scorer(_SloppyScorer, {"type": "sloppy"}, context,
                     pa.table({"y": [1.0, 2.0]}))
