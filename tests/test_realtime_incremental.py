"""State features computed without a window query (``ceap.realtime.incremental``) give
the rows the window query gives (``ceap.realtime.features``), on random streams with
ties in event time, late and out-of-order events, customers with no id, two tenants and
timer rows; and a worker gives the same candidates either way."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import pyarrow as pa
import pytest

from ceap.model import CandidateQuery
from ceap.realtime import engine, incremental
from ceap.realtime.events import EVENT_SCHEMA
from ceap.realtime.features import FRESH, rows_for
from ceap.realtime.spec import StateFeature
from ceap.sqlexpr import BATCH
from ceap.store import open_store
from tests.test_realtime_eventtime import ListStream, _message, _project

T0 = datetime(2026, 11, 20, 10, 0)
TYPES = ["app_crash", "password_changed", "phone_changed", "purchase", "page_view", "__timer"]

TIED = {  # features whose frames include events at the same time: ties allowed
    "crashes": StateFeature(count="app_crash", window="30m"),
    "crashes_1m": StateFeature(count="app_crash", window="1m"),
    "phones": StateFeature(count="phone_changed", window="2h"),
    "pw_then_phone": StateFeature(sequence={"first": "password_changed", "then": "phone_changed"},
                                  within="10m"),
    "no_order": StateFeature(absence={"after": "page_view", "missing": "purchase"}, within="20m"),
}
#: ``time_since`` leaves events at one instant in the window query's sort order: distinct times
DISTINCT = {**TIED, "since_purchase": StateFeature(time_since="purchase"),
            "since_crash": StateFeature(time_since="app_crash"),
            # ``capture``: of two ``first`` events at one instant the window query takes either
            "pw_phone_from": StateFeature(sequence={"first": "password_changed", "then": "phone_changed"},
                                          within="30m", capture=["country", "app", "absent"])}
ON = ["app_crash", "phone_changed", "page_view"]
COLUMNS = {"app": "string", "build": "int"}


def _stream(seed: int, distinct_times: bool) -> pa.Table:
    """History (not fresh) and a micro-batch (fresh): events of a few customers over one to
    three hours, the fresh ones anywhere in time (late and out of order), some at one instant."""
    rng = random.Random(seed)
    n = rng.randrange(150, 400)
    used: set[int] = set()
    rows: dict[str, list[Any]] = {name: [] for name in [*EVENT_SCHEMA.names, FRESH]}
    for k in range(n):
        if distinct_times:
            micros = rng.randrange(3600 * 10**6)
            while micros in used:
                micros = rng.randrange(3600 * 10**6)
            used.add(micros)
        else:  # on whole minutes (many ties), windows' edges exactly hit
            micros = rng.randrange(180) * 60 * 10**6
        etype = rng.choice(TYPES)
        attrs: dict[str, Any] = {"app": rng.choice(["ios", "web"]), "build": rng.randrange(90, 120)}
        if k % 4:  # absent from some events: a capture takes the latest event that has it
            attrs["country"] = ["US", "GB", "D\u00e9", None][k % 7 % 4]
        if etype == "__timer":
            attrs |= {"__timer": True, "__absence_no_order": True}
        elif rng.random() < 0.05:  # a user's attribute named like the timer's marker
            attrs["__timer"] = "x"
        rows["event_id"].append(f"e{k:04d}")
        rows["tenant_id"].append(rng.choice(["t1", "t1", "t1", "t2"]))
        rows["customer_id"].append(None if rng.random() < 0.05 else f"C{rng.randrange(6)}")
        rows["type"].append(etype)
        rows["ts"].append(T0 + timedelta(microseconds=micros))
        text = json.dumps(attrs)
        if etype != "__timer" and rng.random() < 0.05:  # the marker's name spelled with an escape
            text = text[:-1] + ', "\\u005f_timer": 1}'
        rows["attributes"].append(text)
        rows[FRESH].append(rng.random() < 0.3)
    schema = EVENT_SCHEMA.append(pa.field(FRESH, pa.bool_()))
    return pa.table(rows, schema=schema)


def _fast(con: duckdb.DuckDBPyConnection, combined: pa.Table, state: dict[str, StateFeature]) -> pa.Table:
    ready = incremental.rows_input(combined, state, ON)
    assert ready is not None
    con.register(BATCH, ready)
    try:
        return con.sql(incremental.rows_sql(state, ON, COLUMNS)).to_arrow_table()
    finally:
        con.unregister(BATCH)


@pytest.mark.parametrize("distinct_times", [False, True])
@pytest.mark.parametrize("seed", range(8))
def test_rows_without_a_window_query_equal_the_window_querys(seed: int, distinct_times: bool) -> None:
    state = DISTINCT if distinct_times else TIED
    combined = _stream(seed, distinct_times)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    expected = rows_for(con, combined, state, ON, COLUMNS)
    got = _fast(con, combined, state)
    assert got.schema == expected.schema
    assert got.num_rows > 0
    assert got.to_pylist() == expected.to_pylist()
    rows = got.to_pylist()  # the windows found something
    assert any(r["crashes"] >= 2 for r in rows) and any(r["pw_then_phone"] for r in rows)
    if distinct_times:
        assert any(r["since_crash"] is not None for r in rows)
        assert {r["pw_phone_from_country"] for r in rows} >= {None, "US", "GB", "D\u00e9"}
        assert any(r["pw_phone_from_app"] is not None and not r["pw_phone_from"] for r in rows)


@pytest.mark.parametrize("value", [7, 1.5, True, ["x"], {"a": "b"}])
def test_a_capture_of_a_value_not_text_keeps_the_window_query(value: Any) -> None:
    combined = _stream(0, True)
    texts = combined.column("attributes").to_pylist()
    first = combined.column("type").to_pylist().index("password_changed")
    texts[first] = json.dumps(json.loads(texts[first]) | {"country": value})
    combined = combined.set_column(5, "attributes", pa.array(texts, pa.string()))
    assert incremental.rows_input(combined, DISTINCT, ON) is None
    assert incremental.rows_input(combined, TIED, ON) is not None


def test_features_needing_attribute_values_keep_the_window_query() -> None:
    assert incremental.supported(TIED) and incremental.supported(DISTINCT)
    assert incremental.supported({"s": StateFeature(sequence={"first": "a", "then": "b"}, within="5m",
                                                    capture=["x"])})
    for feature in (StateFeature(sum="purchase.amount", window="1h"),
                    StateFeature(distinct="login.device", window="1h"),
                    StateFeature(last="login.country"),
                    StateFeature(count="app_crash", window="1h", where="attributes->>'app' = 'ios'")):
        assert not incremental.supported({**TIED, "other": feature})


PROGRAM: dict[str, Any] = {
    "source": {"type": "events", "on": ["app_crash", "phone_changed"], "lateness": "60m",
               "columns": {"build": "int"}},
    "state": {"crashes": {"count": "app_crash", "window": "20m"},
              "pw_then_phone": {"sequence": {"first": "password_changed", "then": "phone_changed"},
                                "within": "10m"},
              "since_crash": {"time_since": "app_crash"},
              "pw_from": {"sequence": {"first": "password_changed", "then": "phone_changed"},
                          "within": "30m", "capture": ["device"]}},
    "filters": [{"id": "risky", "expr": "crashes >= 2 OR pw_then_phone"},
                {"id": "build", "expr": "build > 95"}],
    "scorer": {"type": "expression", "expr": "least(1.0, 0.2 + crashes / 4.0)"},
    "selection": {"threshold": 0.3, "dedup_window": "15m"},
    "experiment": {"holdout": 0.2},
    "action": {"type": "alert", "channels": ["email"],
               "payload_columns": ["crashes", "since_crash", "pw_from_device"]},
}


class LogStream(ListStream):
    """History read from the event log, not kept in memory (as with Redis Streams)."""

    owns_partitions: ClassVar[bool] = False


def _candidates(root: Path, polls: list[list[Any]], stream: type[ListStream]
                ) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
    from ceap.realtime.worker import Worker

    store = open_store(f"sqlite:///{root / 'c.db'}")
    worker = Worker(store, stream(polls), root / "programs", _project(root, store, {"p": PROGRAM}))
    try:
        worker.run(until_idle=True)
    finally:
        worker.close()
    found = sorted((c.customer_id, c.dedup_key, c.score, c.arm, c.status, c.created_at,
                    json.dumps(c.payload, sort_keys=True))
                   for c in store.candidates(CandidateQuery(limit=10_000, include_expired=True)))
    funnel = {k: v for k, v in store.runs("default", "p", limit=1)[0].funnel.items()
              if k not in ("written", "already_present")}
    store.close()
    return found, funnel


@pytest.mark.parametrize("stream", [ListStream, LogStream])
@pytest.mark.parametrize("seed", range(3))
def test_a_worker_writes_the_same_candidates_with_and_without_the_window_query(
        seed: int, stream: type[ListStream], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    events = []
    for k in range(300):  # mostly in order, some up to 30 minutes late; distinct times
        minute = k // 3 - (rng.randrange(30) if rng.random() < 0.2 else 0)
        etype = rng.choice(["app_crash", "app_crash", "password_changed", "phone_changed", "page_view"])
        events.append({"id": f"e{k}", "customer_id": f"C{rng.randrange(8)}", "type": etype,
                       "ts": (T0 + timedelta(minutes=max(minute, 0), microseconds=k)).isoformat() + "Z",
                       "attributes": {"build": rng.randrange(90, 100),
                                      **({"device": f"d{k % 5}"} if k % 3 else {})}})
    cuts = sorted(rng.sample(range(1, len(events)), 12))
    bounds = zip([0, *cuts], [*cuts, len(events)], strict=True)
    polls = [[_message(e, "") for e in events[a:b]] for a, b in bounds]
    calls = []
    original = incremental.rows_input

    def spy(*args: Any) -> Any:
        got = original(*args)
        calls.append(got is not None)
        return got

    monkeypatch.setattr(incremental, "rows_input", spy)
    (tmp_path / "fast").mkdir()
    fast = _candidates(tmp_path / "fast", polls, stream)
    assert calls and all(calls), "the fast path was not taken"
    monkeypatch.setattr(engine.incremental, "supported", lambda state: False)
    (tmp_path / "window").mkdir()
    window = _candidates(tmp_path / "window", polls, stream)
    assert fast[0] and fast == window
    assert any('"pw_from_device": "d' in c[6] for c in fast[0])  # a capture made it to a payload
