"""The real-time path: state over event time, dedup, lateness, cancellation,
sequences, absence timers, fan-out, escalation, hot reload and HTTP ingest."""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from fastapi.testclient import TestClient

from ceap.api import create_app
from ceap.model import CandidateQuery
from ceap.plugin import PluginContext
from ceap.realtime.embedded import EmbeddedStream
from ceap.realtime.replay import ReplayConnector
from ceap.realtime.worker import Worker
from ceap.store import Store, open_store

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


class Project:
    def __init__(self, root: Path, store: Store):
        self.root, self.store = root, store
        (root / "programs").mkdir(exist_ok=True)
        self.events: list[dict[str, Any]] = []
        self.context = PluginContext(base_dir=root, store=store)
        self.state: dict[str, Any] = {}

    def program(self, name: str, **spec: Any) -> Path:
        path = self.root / "programs" / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"name": name, **spec}))
        return path

    def event(self, eid: str, customer: str | None, etype: str, minutes: float, **attributes: Any) -> None:
        self.events.append({"id": eid, "customer_id": customer, "type": etype,
                            "ts": (T0 + timedelta(minutes=minutes)).isoformat(),
                            "attributes": attributes})

    def replay(self, batch: int = 3, ordered: bool = True) -> Worker:
        events = sorted(self.events, key=lambda e: e["ts"]) if ordered else self.events
        (self.root / "events.jsonl").write_text("\n".join(json.dumps(e) for e in events))
        source = ReplayConnector.from_dict({"type": "replay", "path": "events.jsonl"}, self.context)
        worker = Worker(self.store, source, self.root / "programs", self.context, batch=batch,
                        **self.state)
        worker.run(until_idle=True)
        return worker

    def candidates(self, program: str | None = None) -> dict[str, Any]:
        found = self.store.candidates(CandidateQuery(program=program, limit=1000, include_expired=True))
        return {c.customer_id: c for c in found}


@pytest.fixture(params=["sqlite", "postgres", "redis-state"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Project:
    url = (request.getfixturevalue("pg_url") if request.param == "postgres"
           else f"sqlite:///{tmp_path / 'rt.db'}")
    store = open_store(url)
    project = Project(tmp_path, store)
    if request.param == "redis-state":  # state shared through Redis instead of the store
        from tests.conftest import require_service

        require_service("redis")
        project.state = {"state_url": "redis://127.0.0.1:6379/0",
                         "state_namespace": f"test-{uuid.uuid4().hex[:10]}"}
    yield project
    store.close()
    if request.param == "redis-state":
        import redis

        client = redis.Redis.from_url(project.state["state_url"])
        for key in client.scan_iter(f"{project.state['state_namespace']}:*"):
            client.delete(key)


CRASH = {"source": {"type": "events", "on": ["app_crash"]},
         "state": {"crashes_24h": {"count": "app_crash", "window": "24h"}},
         "filters": [{"id": "more_than_3_crashes", "expr": "crashes_24h > 3"}],
         "action": {"type": "alert", "channels": ["sms"], "payload_columns": ["crashes_24h"]}}


def test_windowed_count_over_event_time_with_dedup(project: Project) -> None:
    project.program("crash", **CRASH)
    for k in range(4):
        project.event(f"a{k}", "A", "app_crash", k * 30)      # 4 in 90 minutes
        project.event(f"b{k}", "B", "app_crash", k * 24 * 60)  # 4 over 3 days
    for k in range(3):
        project.event(f"c{k}", "C", "app_crash", k * 10)
    project.event("c2", "C", "app_crash", 40)                 # C's "4th" repeats an id
    worker = project.replay()
    found = project.candidates("crash")
    assert set(found) == {"A"}
    assert found["A"].payload == {"crashes_24h": 4}
    assert found["A"].created_at == T0 + timedelta(minutes=90)  # the 4th crash's event time
    assert worker.stats.duplicates == 1
    run = project.store.runs("default", "crash")[0]
    assert run.funnel["filters"] == {"more_than_3_crashes": 10}  # A's first 3, B's 4, C's 3


def test_repeated_triggers_in_the_dedup_window_yield_one_candidate(project: Project) -> None:
    project.program("crash", **CRASH)
    for k in range(8):
        project.event(f"a{k}", "A", "app_crash", k * 5)  # the 4th..8th crash all qualify
    project.replay()
    assert len(project.store.candidates(CandidateQuery(program="crash", include_expired=True))) == 1


def test_late_events_beyond_the_allowed_lateness_are_dropped(project: Project) -> None:
    spec = {**CRASH, "source": {**CRASH["source"], "lateness": "30m"}}
    project.program("crash", **spec)
    project.event("x1", "X", "app_crash", 600)
    for k in range(3):
        project.event(f"a{k}", "A", "app_crash", 590 + k)   # within 30 minutes: counted
    project.event("a-old", "A", "app_crash", 100)             # 8 hours late: dropped
    worker = project.replay(batch=1, ordered=False)
    assert worker.stats.late == 1
    assert project.candidates("crash") == {}                 # A has 3 counted crashes, not 4


CART = {"source": {"type": "events", "on": ["cart_updated"], "columns": {"cart_value": "float"}},
        "filters": [{"id": "cart_over_50", "expr": "cart_value > 50"}],
        "action": {"type": "offer", "channels": ["email"], "delay": "1h", "cancel_on": ["purchase"],
                   "payload": {"discount_pct": 10}, "payload_columns": ["cart_value"]}}


def test_delay_and_cancellation_by_a_later_event(project: Project) -> None:
    project.program("cart", **CART)
    project.event("c1", "BUYER", "cart_updated", 0, cart_value=80)
    project.event("p1", "BUYER", "purchase", 30)
    project.event("c2", "GONE", "cart_updated", 0, cart_value=80)
    project.event("c3", "SMALL", "cart_updated", 0, cart_value=30)
    project.event("p2", "EARLY", "purchase", 0)
    project.event("c4", "EARLY", "cart_updated", 10, cart_value=90)  # bought before: not cancelled
    project.replay()
    found = project.candidates("cart")
    assert set(found) == {"BUYER", "GONE", "EARLY"}
    assert found["BUYER"].status == "cancelled"
    assert (found["GONE"].status, found["EARLY"].status) == ("pending", "pending")
    assert found["GONE"].not_before == T0 + timedelta(hours=1)
    assert found["GONE"].payload == {"discount_pct": 10, "cart_value": 80.0}


def test_a_late_cancel_event_still_cancels_what_is_pending(project: Project) -> None:
    # the purchase comes after another event moved the watermark 2 h on: late for the program
    # (lateness 1h) and for every program, so it computes nothing; but the offer it makes moot
    # is still pending, and an offer sent after the purchase is what cancel_on is there to stop
    project.program("cart", **CART)
    project.event("c1", "BUYER", "cart_updated", 0, cart_value=80)
    project.event("c2", "GONE", "cart_updated", 0, cart_value=80)
    project.event("v1", "OTHER", "page_view", 120)
    project.event("p1", "BUYER", "purchase", 30)
    project.event("p2", "GONE", "purchase", -10)  # before the cart: cancels nothing
    worker = project.replay(batch=1, ordered=False)
    assert worker.stats.late == 2
    found = project.candidates("cart")
    assert found["BUYER"].status == "cancelled"
    assert found["BUYER"].status_reason == "cancelled by purchase event p1"
    assert found["GONE"].status == "pending"


def test_sequence_within_five_minutes_keeps_the_phone_before_the_change(project: Project) -> None:
    project.program("takeover", source={"type": "events", "on": ["email_changed"]},
                    state={"pw_then_email": {"sequence": {"first": "password_changed",
                                                          "then": "email_changed"},
                                             "within": "5m", "capture": ["phone"]}},
                    filters=[{"id": "sequence", "expr": "pw_then_email"}],
                    action={"type": "protect", "channels": ["webhook", "sms"], "deliver": "all",
                            "category": "security", "payload_columns": ["pw_then_email_phone"]})
    project.event("f1", "FAST", "password_changed", 0, phone="+15550001")
    project.event("f2", "FAST", "email_changed", 2)
    project.event("s1", "SLOW", "password_changed", 0, phone="+15550002")
    project.event("s2", "SLOW", "email_changed", 10)
    project.event("o1", "ONLY", "email_changed", 0)
    project.replay()
    found = project.candidates("takeover")
    assert set(found) == {"FAST"}
    assert found["FAST"].payload == {"pw_then_email_phone": "+15550001"}


def test_absence_timer_fires_when_the_goal_event_does_not_come(project: Project) -> None:
    project.program("abandoned", source={"type": "events", "on": []},
                    state={"no_purchase_1h": {"absence": {"after": "cart_updated", "missing": "purchase"},
                                              "within": "1h"}},
                    filters=[{"id": "abandoned", "expr": "no_purchase_1h"}],
                    action={"type": "offer", "channels": ["email"]})
    project.event("c1", "BUYER", "cart_updated", 0)
    project.event("p1", "BUYER", "purchase", 20)
    project.event("c2", "LEAVER", "cart_updated", 0)
    project.event("z", "OTHER", "page_view", 180)  # time moves on past both timers
    project.replay(batch=2)
    found = project.candidates("abandoned")
    assert set(found) == {"LEAVER"}
    assert found["LEAVER"].created_at == T0 + timedelta(hours=1)


def test_item_event_fans_out_to_the_customers_who_wished_for_it(project: Project) -> None:
    pq.write_table(pa.table({"item_id": ["I1", "I1", "I2"], "customer_id": ["X", "Y", "Z"],
                             "source": ["wishlist", "search", "wishlist"]}), project.root / "wish.parquet")
    project.program("restock", source={"type": "events", "on": ["restock"],
                                       "fan_out": {"lookup": {"type": "parquet", "path": "wish.parquet"},
                                                   "attribute": "item_id", "key": "item_id"}},
                    action={"type": "inform", "channels": ["push"], "payload_columns": ["lookup_source"]})
    project.event("r1", None, "restock", 0, item_id="I1")
    project.replay()
    found = project.candidates("restock")
    assert set(found) == {"X", "Y"}
    assert found["Y"].payload == {"lookup_source": "search"}


def test_escalation_chain_stops_once_the_goal_happens(project: Project) -> None:
    project.program("kyc", source={"type": "events", "on": ["kyc_due"]},
                    action={"type": "alert", "channels": ["email"], "cancel_on": ["kyc_completed"],
                            "escalation": [{"after": "2d", "channels": ["sms"]},
                                           {"after": "5d", "channels": ["inapp"]}]})
    project.event("k1", "DONE", "kyc_due", 0)
    project.event("k2", "LATE", "kyc_due", 0)
    project.event("k3", "DONE", "kyc_completed", 60 * 24 * 3)  # after the SMS, before the banner
    project.replay()
    steps = project.store.candidates(CandidateQuery(program="kyc", limit=100, include_expired=True))
    late = sorted((c.not_before - T0, c.channels, c.status) for c in steps if c.customer_id == "LATE")
    assert late == [(timedelta(0), ["email"], "pending"), (timedelta(days=2), ["sms"], "pending"),
                    (timedelta(days=5), ["inapp"], "pending")]
    done = {c.channels[0]: c.status for c in steps if c.customer_id == "DONE"}
    assert done == {"email": "cancelled", "sms": "cancelled", "inapp": "cancelled"}


def test_programs_added_edited_and_paused_without_a_restart(project: Project) -> None:
    source = EmbeddedStream.from_dict({"type": "embedded", "stream": "live"}, project.context)
    worker = Worker(project.store, source, project.root / "programs", project.context, reload_every=0,
                    **project.state)

    def send(*events: dict[str, Any]) -> None:
        source.publish([json.dumps(e).encode() for e in events])
        while worker.step():
            pass

    def crash(eid: str, customer: str, minutes: int) -> dict[str, Any]:
        return {"id": eid, "customer_id": customer, "type": "app_crash",
                "ts": (T0 + timedelta(minutes=minutes)).isoformat()}

    send(*(crash(f"a{k}", "A", k) for k in range(4)))
    assert project.candidates() == {}                      # no program yet
    path = project.program("crash", **CRASH)
    send(*(crash(f"b{k}", "B", 10 + k) for k in range(4)))
    assert set(project.candidates("crash")) == {"B"}       # added: takes effect
    edited = {**CRASH, "filters": [{"id": "two_or_more", "expr": "crashes_24h >= 2"}]}
    path.write_text(yaml.safe_dump({"name": "crash", **edited}))
    os.utime(path, (time.time() + 5, time.time() + 5))
    send(*(crash(f"c{k}", "C", 20 + k) for k in range(2)))
    assert set(project.candidates("crash")) == {"B", "C"}  # edited: the new filter applies
    path.write_text(yaml.safe_dump({"name": "crash", "mode": "paused", **edited}))
    os.utime(path, (time.time() + 10, time.time() + 10))
    send(*(crash(f"d{k}", "D", 30 + k) for k in range(2)))
    assert set(project.candidates("crash")) == {"B", "C"}  # paused: nothing new
    path.unlink()
    send(crash("e0", "E", 40))                             # removed while paused: nothing to stop
    assert source.lag() == 0                                # every message was committed


def test_http_ingest_accepts_good_events_and_names_bad_ones(project: Project) -> None:
    stream = EmbeddedStream.from_dict({"type": "embedded", "stream": "ingest"}, project.context)
    api = TestClient(create_app(project.store, auth=False, ingest=stream))
    good = {"id": "e1", "type": "app_crash", "ts": T0.isoformat(), "customer_id": "A"}
    answer = api.post("/v1/events", json=[good, {"id": "e2", "ts": "yesterday", "type": "x"},
                                          {"id": "e3", "type": "x", "ts": T0.isoformat(), "extra": 1}])
    assert answer.status_code == 202
    assert answer.json()["accepted"] == 1
    assert [r["index"] for r in answer.json()["rejected"]] == [1, 2]
    assert "ts" in answer.json()["rejected"][0]["error"] and "extra" in answer.json()["rejected"][1]["error"]
    envelope = {"version": "0", "id": "eb-1", "detail-type": "app_crash", "source": "app",
                "time": T0.isoformat(), "detail": {"customer_id": "B", "app": "ios"}}
    assert api.post("/v1/events/eventbridge", json=envelope).json() == {"accepted": 1, "rejected": []}
    bodies = [json.loads(r.body) for r in stream.poll(10, 0)]
    assert [b["id"] for b in bodies] == ["e1", "eb-1"]
    assert {b["tenant_id"] for b in bodies} == {"default"}  # stamped with the caller's tenant
    assert bodies[1]["customer_id"] == "B" and bodies[1]["attributes"]["app"] == "ios"
