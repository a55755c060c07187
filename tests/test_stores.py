"""The SQLite and PostgreSQL stores behave the same: every test runs on both."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pyarrow as pa
import pytest

from ceap.errors import PluginError
from ceap.model import CandidateQuery, InboxItem, RunRecord, utcnow
from ceap.store.base import Store, open_store
from ceap.store.postgres import PostgresStore
from ceap.store.schema import CANDIDATE_SCHEMA, QUARANTINE_SCHEMA, empty_candidates
from ceap.store.sqlite import SqliteStore
from ceap.testing import FakeClock, make_candidates

T0 = datetime(2024, 6, 1, 9, 30, 15, 123456, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    store = open_store(url)
    yield store
    store.close()


def run(run_id: str, tenant: str = "default", program: str = "winback", **fields: object) -> RunRecord:
    return RunRecord(run_id, tenant, program, "succeeded", fields.pop("started_at", utcnow()),  # type: ignore[arg-type]
                     **fields)  # type: ignore[arg-type]


def everything(store: Store, tenant: str = "default", **query: object) -> list:
    return store.candidates(CandidateQuery(tenant_id=tenant, include_expired=True, limit=10_000,
                                           **query))  # type: ignore[arg-type]


def test_open_store_picks_the_store_by_scheme(url: str, store: Store) -> None:
    assert isinstance(store, SqliteStore if url.startswith("sqlite") else PostgresStore)
    known = r"\(known: dynamodb, postgres, postgresql, sqlite\)"
    with pytest.raises(PluginError, match=rf"no store for scheme 'mysql' {known}"):
        open_store("mysql://localhost/db")


def test_candidate_round_trip_of_every_field(store: Store) -> None:
    paris = timezone(timedelta(hours=2))
    created = datetime(2024, 6, 1, 11, 30, 15, 123456, tzinfo=paris)  # 09:30:15.123456 UTC
    table = pa.table({
        "tenant_id": ["acme"], "program": ["winback"], "run_id": ["r1"], "customer_id": ["cust, \"7\""],
        "subject_id": ["order\n42"], "context": [json.dumps({"region": "eu", "tier": 2})],
        "action_type": ["offer"], "channels": [json.dumps(["inapp", "email"])], "template": [None],
        "category": ["retention"], "score": [0.8125], "model": ["churn@abc123"],
        "reasons": [json.dumps({"top": [{"feature": "spend", "weight": -0.5}]})],
        "payload": [json.dumps({"discount": 15, "text": "Ça va? \"yes\", 'no'", "none": None})],
        "status": ["pending"], "priority": [3], "created_at": [created],
        "not_before": [created + timedelta(hours=1)], "expires_at": [created + timedelta(days=30)],
        "dedup_key": ["winback:cust7"], "holdout": [True], "version": [2],
        "arm": ["global_control"], "variant": ["b\"2"], "features": [json.dumps({"spend": 1.5})],
    }, schema=CANDIDATE_SCHEMA)
    assert store.write_run(run("r1", "acme"), table).inserted == 1
    [c] = everything(store, "acme")
    assert isinstance(c.id, int)
    assert (c.tenant_id, c.program, c.run_id, c.customer_id, c.subject_id) == \
        ("acme", "winback", "r1", "cust, \"7\"", "order\n42")
    assert c.context == {"region": "eu", "tier": 2}
    assert (c.action_type, c.channels, c.template, c.category) == \
        ("offer", ["inapp", "email"], None, "retention")
    assert (c.score, c.model, c.status, c.priority, c.version) == (0.8125, "churn@abc123", "pending", 3, 2)
    assert c.reasons == {"top": [{"feature": "spend", "weight": -0.5}]}
    assert c.payload == {"discount": 15, "text": "Ça va? \"yes\", 'no'", "none": None}
    assert c.holdout is True
    for value, expected in ((c.created_at, T0), (c.not_before, T0 + timedelta(hours=1)),
                            (c.expires_at, T0 + timedelta(days=30))):
        assert value == expected
        assert value.utcoffset() == timedelta(0)
    assert c.dedup_key == "winback:cust7"
    assert (c.arm, c.variant, c.features) == ("global_control", "b\"2", {"spend": 1.5})


def test_empty_strings_and_nulls_stay_distinct(store: Store) -> None:
    table = make_candidates(2, subject_id=lambda i: "" if i == 0 else None,
                            template=lambda i: None if i == 0 else "", reasons=None, context=None,
                            payload=None)
    store.write_run(run("r1"), table)
    got = {c.dedup_key: c for c in everything(store)}
    assert (got["dedup-0"].subject_id, got["dedup-0"].template) == ("", None)
    assert (got["dedup-1"].subject_id, got["dedup-1"].template) == (None, "")
    assert got["dedup-0"].reasons is None
    assert (got["dedup-0"].context, got["dedup-0"].payload) == ({}, {})


def test_customer_lookup_orders_by_priority_then_score(store: Store) -> None:
    order = [("low-prio-high-score", 0, 0.99), ("tie-first", 1, 0.5), ("high-prio", 5, 0.1),
             ("tie-second", 1, 0.5), ("mid-score", 1, 0.7)]
    table = make_candidates(len(order), customer_id="alice", dedup_key=lambda i: order[i][0],
                            priority=lambda i: order[i][1], score=lambda i: order[i][2])
    store.write_run(run("r1"), table)
    store.write_run(run("r2"), make_candidates(2, customer_id="bob", dedup_key=lambda i: f"bob-{i}"))
    got = [c.dedup_key for c in store.candidates(CandidateQuery(customer_id="alice"))]
    assert got == ["high-prio", "mid-score", "tie-first", "tie-second", "low-prio-high-score"]
    assert [c.dedup_key for c in store.candidates(CandidateQuery(customer_id="alice", limit=2))] == \
        ["high-prio", "mid-score"]


def test_lookups_by_program_channel_and_status(store: Store) -> None:
    table = make_candidates(4, program=lambda i: ["p1", "p2"][i % 2],
                            channels=lambda i: [["inapp"], ["email"], ["inapp", "sms"], ["sms"]][i],
                            status=lambda i: ["pending", "held_out", "pending", "shadow"][i])
    store.write_run(run("r1"), table)

    def keys(**query: object) -> list[str]:
        return sorted(c.dedup_key for c in store.candidates(CandidateQuery(**query)))  # type: ignore[arg-type]

    assert keys(program="p1") == ["dedup-0", "dedup-2"]
    assert keys(channel="sms") == ["dedup-2", "dedup-3"]
    assert keys(channel="inapp", program="p1", status="pending") == ["dedup-0", "dedup-2"]
    assert keys(status="held_out") == ["dedup-1"]
    assert keys(status="sent") == []
    assert keys(channel="email", tenant_id="other") == []


def test_dedup_per_tenant_and_key(store: Store) -> None:
    first = store.write_run(run("r1"), make_candidates(3, score=0.1))
    assert (first.inserted, first.duplicates) == (3, 0)
    again = run("r2")
    second = store.write_run(again, make_candidates(4, score=0.9, run_id="r2"))
    assert (second.inserted, second.duplicates) == (1, 3)
    assert again.funnel["written"] == 1 and again.funnel["already_present"] == 3
    recorded = {r.run_id: r for r in store.runs("default")}["r2"]
    assert (recorded.funnel["written"], recorded.funnel["already_present"]) == (1, 3)
    scores = {c.dedup_key: c.score for c in everything(store)}
    assert scores == {"dedup-0": 0.1, "dedup-1": 0.1, "dedup-2": 0.1, "dedup-3": 0.9}
    other = store.write_run(run("r3", "other"), make_candidates(3, tenant_id="other"))
    assert (other.inserted, other.duplicates) == (3, 0)


def test_write_run_is_atomic(store: Store) -> None:
    store.write_run(run("ok"), make_candidates(2))
    bad = make_candidates(4, dedup_key=lambda i: f"new-{i}", category=lambda i: None if i == 3 else "x")
    with pytest.raises(Exception):  # noqa: B017 - whichever error the database raises
        store.write_run(run("broken"), bad)
    quarantine = pa.table({"tenant_id": ["default"] * 2, "run_id": ["broken2"] * 2, "program": ["p"] * 2,
                           "row": ["{}", None], "reason": ["x", "y"]}, schema=QUARANTINE_SCHEMA)
    with pytest.raises(Exception):  # noqa: B017
        store.write_run(run("broken2"), make_candidates(2, dedup_key=lambda i: f"q-{i}"), quarantine)
    assert sorted(c.dedup_key for c in everything(store)) == ["dedup-0", "dedup-1"]
    assert [r.run_id for r in store.runs("default")] == ["ok"]
    assert store.quarantined("default", "broken2") == []
    assert store.write_run(run("after"), make_candidates(1, dedup_key="after")).inserted == 1


def test_empty_write_records_the_run(store: Store) -> None:
    result = store.write_run(run("empty"), empty_candidates())
    assert (result.inserted, result.duplicates, result.quarantined) == (0, 0, 0)
    assert [r.run_id for r in store.runs("default")] == ["empty"]


def test_runs_and_quarantine(store: Store) -> None:
    quarantine = pa.table({"tenant_id": ["default"] * 2, "run_id": ["r1"] * 2, "program": ["winback"] * 2,
                           "row": ['{"spend": "abc"}', '{"customer_id": null}'],
                           "reason": ["spend: not a float", "customer_id: missing"]},
                          schema=QUARANTINE_SCHEMA)
    result = store.write_run(run("r1", started_at=T0, funnel={"read": 5}), make_candidates(1), quarantine)
    assert result.quarantined == 2
    assert store.quarantined("default", "r1") == [
        {"row": '{"spend": "abc"}', "reason": "spend: not a float"},
        {"row": '{"customer_id": null}', "reason": "customer_id: missing"}]
    store.record_run(RunRecord("r2", "default", "other", "failed", T0 + timedelta(minutes=1),
                               error="source 'x': boom"))
    runs = store.runs("default")
    assert [(r.run_id, r.status) for r in runs] == [("r2", "failed"), ("r1", "succeeded")]
    assert runs[1].started_at == T0 and runs[1].funnel["read"] == 5
    assert runs[0].error == "source 'x': boom"
    assert runs[0].finished_at is not None and runs[0].finished_at.utcoffset() == timedelta(0)
    assert [r.run_id for r in store.runs("default", program="winback")] == ["r1"]
    assert store.runs("other-tenant") == []


def test_sweep_expired_removes_only_expired(store: Store) -> None:
    now = utcnow()
    table = make_candidates(5, now=now - timedelta(days=3), expires_at=lambda i: (
        now - timedelta(seconds=1) if i < 2 else now + timedelta(hours=1)))
    store.write_run(run("r1"), table)
    assert len(store.candidates(CandidateQuery())) == 3  # expired ones are hidden from lookups
    assert len(everything(store)) == 5
    assert store.sweep_expired(now) == 2
    assert sorted(c.dedup_key for c in everything(store)) == ["dedup-2", "dedup-3", "dedup-4"]
    assert store.sweep_expired(now) == 0
    assert store.sweep_expired(now + timedelta(hours=2)) == 3


def test_expiry_and_due_times_follow_the_process_clock(store: Store) -> None:
    """The store judges "now" by its ``clock`` (the process's), never by the database
    server's now(), so it agrees with the dispatcher whatever the server's clock says."""
    now = utcnow()
    store.write_run(run("r1"), make_candidates(
        2, now=now, not_before=lambda i: now + timedelta(days=i),
        expires_at=lambda i: now + timedelta(days=1 + 2 * i)))   # dedup-0: 1 day, dedup-1: 3 days

    def keys(**query: object) -> list[str]:
        return sorted(c.dedup_key for c in store.candidates(CandidateQuery(**query)))  # type: ignore[arg-type]

    assert keys() == ["dedup-0", "dedup-1"] and keys(servable=True) == ["dedup-0"]
    store.clock = FakeClock(now + timedelta(days=2))
    assert keys() == ["dedup-1"] and keys(servable=True) == ["dedup-1"]
    store.clock = FakeClock(now + timedelta(days=4))
    assert keys() == [] and len(everything(store)) == 2


def test_inbox_times_come_from_the_process_clock(store: Store) -> None:
    store.clock = clock = FakeClock(T0)
    store.inbox_add([InboxItem("default", "alice", "k1", "p", "Hi", "Body")])
    [item] = store.inbox_list("default", "alice")
    clock.advance(minutes=5)
    assert store.inbox_mark_read("default", "alice", [item.id]) == 1  # type: ignore[list-item]
    [read] = store.inbox_list("default", "alice")
    assert (read.created_at, read.read_at) == (T0, T0 + timedelta(minutes=5))


def test_tenant_isolation(store: Store) -> None:
    store.write_run(run("a1", "a"), make_candidates(2, tenant_id="a", customer_id="alice"))
    assert everything(store, "b") == []
    assert everything(store, "b", customer_id="alice") == []
    assert store.runs("b") == []
    assert len(everything(store, "a", customer_id="alice")) == 2


def test_migrate_is_idempotent_and_data_survives_reopening(url: str, store: Store) -> None:
    store.write_run(run("r1"), make_candidates(3))
    store.migrate()
    store.migrate()
    store.close()
    reopened = open_store(url)
    try:
        assert len(everything(reopened)) == 3
        assert [r.run_id for r in reopened.runs("default")] == ["r1"]
    finally:
        reopened.close()


def test_bulk_write(store: Store) -> None:
    n = 3000
    table = make_candidates(n, customer_id=lambda i: f"c{i % 500}",
                            payload=lambda i: {"i": i, "s": "a,b\n\"c\""})
    result = store.write_run(run("bulk"), table)
    assert (result.inserted, result.duplicates) == (n, 0)
    assert len(everything(store)) == n
    assert len(store.candidates(CandidateQuery(customer_id="c7"))) == 6
    assert store.candidates(CandidateQuery(customer_id="c7"))[0].payload["s"] == "a,b\n\"c\""
