"""Every source of engagement records once per delivery and type: provider
receipts, in-app reads, unsubscribe links, SMS replies, reports over the API and
events from the ingestion path; replays add nothing."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from ceap.api import create_app
from ceap.api.auth import create_key
from ceap.channels.inapp import InAppChannel, InAppConfig
from ceap.channels.receipts import twilio_signature
from ceap.delivery.dispatcher import Dispatcher
from ceap.delivery.outbox import Outbox
from ceap.delivery.profiles import upsert_profiles
from ceap.delivery.templates import TemplateRenderer
from ceap.delivery.unsubscribe import SECRET_ENV, make_token
from ceap.model import utcnow
from ceap.plugin import PluginContext
from ceap.realtime.replay import ReplayConnector
from ceap.realtime.worker import Worker
from ceap.store import Store, open_store
from ceap.testing.doubles import FakeClock
from tests.outcome_helpers import SECRET, add_delivery, rows, seed

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def store(store_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    s = open_store(store_url)
    yield s
    s.close()


def engagements(store: Store) -> list[tuple[Any, ...]]:
    return rows(store, "SELECT type, source, delivery_id, candidate_id, program, customer_id, channel "
                       "FROM engagements ORDER BY id")


def keyed(store: Store, tenant: str = "default") -> dict[str, str]:
    return {"Authorization": f"Bearer {create_key(store, tenant, 'tests')}"}


def test_receipts_record_each_outcome_once(store: Store) -> None:
    [cid] = seed(store, T0)
    delivery = add_delivery(store, cid, sent_at=T0, key="default:r1:email")
    api = TestClient(create_app(store))
    auth = keyed(store)
    body = {"idempotency_key": "default:r1:email", "status": "delivered"}
    for _ in range(3):  # a provider retrying its callback
        assert api.post("/v1/receipts", json=body, headers=auth).status_code == 200
    assert api.post("/v1/receipts", json={**body, "status": "complained"}, headers=auth).status_code == 200
    assert engagements(store) == [("delivered", "receipt", delivery, cid, "offer", "c0", "email"),
                                  ("complained", "receipt", delivery, cid, "offer", "c0", "email")]


def test_a_twilio_bounce_is_a_bounced_engagement(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "twilio-secret")
    [cid] = seed(store, T0, channels=["sms"])
    delivery = add_delivery(store, cid, channel="sms", sent_at=T0)
    with store.tx() as tx:
        tx.execute("UPDATE deliveries SET provider_id = 'SM1' WHERE id = ?", (delivery,))
    url = "http://testserver/v1/webhooks/twilio/status/default"
    form = {"MessageSid": "SM1", "MessageStatus": "undelivered", "ErrorCode": "30003", "To": "+15550002222"}
    answer = TestClient(create_app(store)).post(
        url, data=form, headers={"X-Twilio-Signature": twilio_signature(url, form, "twilio-secret")})
    assert answer.json() == {"status": "bounced"}
    assert engagements(store) == [("bounced", "receipt", delivery, cid, "offer", "c0", "sms")]


def test_reading_an_inbox_message_records_read_on_its_delivery(store: Store) -> None:
    [cid] = seed(store, T0, channels=["inapp"])
    clock = FakeClock(T0)
    inapp = InAppChannel(InAppConfig(), PluginContext(store=store))
    assert Dispatcher(store, {"inapp": inapp}, clock=clock).run().sent == 1
    [(delivery,)] = rows(store, "SELECT id FROM deliveries")
    [item] = store.inbox_list("default", "c0")
    api = TestClient(create_app(store, auth=False))
    other = api.post("/v1/customers/c1/inbox/read", json={"ids": [item.id]})
    assert other.json() == {"marked": 0} and engagements(store) == []  # not c1's message
    for expected in (1, 0):
        answer = api.post("/v1/customers/c0/inbox/read", json={"ids": [item.id]})
        assert answer.json() == {"marked": expected}
    assert engagements(store) == [("read", "inapp", delivery, cid, "offer", "c0", "inapp")]


def test_an_unsubscribe_link_records_unsubscribed_on_the_message_that_held_it(store: Store, tmp_path: Path
                                                                               ) -> None:
    [cid] = seed(store, T0, category="marketing", template=None)
    delivery = add_delivery(store, cid, sent_at=T0)
    renderer = TemplateRenderer.from_config(
        {"templates": {"unsubscribe_url": "https://shop.example/v1/unsubscribe"}}, tmp_path)
    [c] = Outbox(store, "t").candidates([cid]).values()
    body = renderer.render(c, "email", None).body
    link = re.search(r"https://shop\.example/v1/unsubscribe\?token=\S+", body)
    assert link is not None
    token = parse_qs(urlsplit(link.group(0)).query)["token"][0]
    api = TestClient(create_app(store))
    for _ in range(2):
        assert api.post("/v1/unsubscribe", params={"token": token}).status_code == 200
    assert engagements(store) == [("unsubscribed", "unsubscribe", delivery, cid, "offer", "c0", "email")]
    # a link naming no message (an older link, a preference page) records the customer only
    assert api.post("/v1/unsubscribe", params={"token": make_token("default", "c9", "email")}
                    ).status_code == 200
    assert engagements(store)[-1] == ("unsubscribed", "unsubscribe", None, None, None, "c9", "email")


def test_an_sms_reply_is_replied_and_stop_also_unsubscribed(store: Store,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "twilio-secret")
    now = utcnow()
    old, recent = seed(store, now, 2, channels=["sms"], customer_id="carol")
    add_delivery(store, old, channel="sms", sent_at=now - timedelta(days=3))
    latest = add_delivery(store, recent, channel="sms", sent_at=now - timedelta(hours=1))
    upsert_profiles(store, pa.table({"customer_id": ["carol"], "phone": ["+1 555 000 3333"]}), "default")
    api = TestClient(create_app(store))
    url = "http://testserver/v1/webhooks/twilio/sms/default"
    for text in ("thanks!", "STOP", "STOP"):
        form = {"From": "+15550003333", "Body": text}
        answer = api.post(url, data=form, headers={"X-Twilio-Signature": twilio_signature(url, form,
                                                                                          "twilio-secret")})
        assert answer.status_code == 200
    assert engagements(store) == [("replied", "event", latest, recent, "offer", "carol", "sms"),
                                  ("unsubscribed", "event", latest, recent, "offer", "carol", "sms")]


def test_reports_over_the_api_name_a_delivery_of_the_callers_tenant(store: Store) -> None:
    [cid] = seed(store, T0)
    delivery = add_delivery(store, cid, sent_at=T0, key="default:k1:email")
    [foreign] = seed(store, T0, tenant_id="other", run="r2")
    foreign_delivery = add_delivery(store, foreign, sent_at=T0, key="other:k1:email")
    app = create_app(store)
    app.state.clock = FakeClock(T0 + timedelta(hours=1))
    api = TestClient(app)
    reports = [{"delivery_id": delivery, "type": "opened"},
               {"idempotency_key": "default:k1:email", "type": "clicked", "url": "https://shop.example/a",
                "ts": "2026-05-01T09:30:00Z"},
               {"delivery_id": foreign_delivery, "type": "opened"},
               {"delivery_id": 999999, "type": "read"}]
    assert api.post("/v1/engagements", json=reports).status_code == 401
    auth = keyed(store)
    answer = api.post("/v1/engagements", json=reports, headers=auth)
    assert answer.status_code == 200 and answer.json() == {"recorded": 2, "unknown": [2, 3]}
    assert api.post("/v1/engagements", json=reports, headers=auth).json() == {"recorded": 0,
                                                                              "unknown": [2, 3]}
    assert rows(store, "SELECT type, source, delivery_id, url, ts FROM engagements ORDER BY id") == [
        ("opened", "api", delivery, None, store_ts(store, T0 + timedelta(hours=1))),
        ("clicked", "api", delivery, "https://shop.example/a", store_ts(store, T0 + timedelta(minutes=30)))]
    for bad in ([{"type": "opened"}], [{"delivery_id": 1, "idempotency_key": "k", "type": "opened"}],
                [{"delivery_id": 1, "type": "converted"}], []):
        assert api.post("/v1/engagements", json=bad, headers=auth).status_code == 422


def store_ts(store: Store, value: datetime) -> Any:
    with store.tx() as tx:
        return tx.ts(value)


def test_engagement_events_from_the_ingestion_path_are_recorded_once(store: Store, tmp_path: Path) -> None:
    [cid] = seed(store, T0)
    delivery = add_delivery(store, cid, sent_at=T0, key="default:k1:email")
    (tmp_path / "programs").mkdir()
    events = [{"id": "e1", "type": "opened", "ts": "2026-05-01T10:00:00Z", "customer_id": "c0",
               "attributes": {"delivery_id": delivery}},
              {"id": "e2", "type": "clicked", "ts": "2026-05-01T10:01:00Z", "customer_id": "c0",
               "attributes": {"idempotency_key": "default:k1:email", "url": "https://shop.example/a"}},
              {"id": "e3", "type": "opened", "ts": "2026-05-01T10:02:00Z", "customer_id": "c0",
               "attributes": {"note": "no delivery named: an ordinary event"}},
              {"id": "e4", "type": "opened", "ts": "2026-05-01T10:03:00Z", "customer_id": "c0",
               "attributes": {"delivery_id": "not a number"}}]
    (tmp_path / "events.jsonl").write_text("\n".join(json.dumps(e) for e in events))
    context = PluginContext(base_dir=tmp_path, store=store)
    for _ in range(2):  # a replay of the same events
        source = ReplayConnector.from_dict({"type": "replay", "path": "events.jsonl"}, context)
        Worker(store, source, tmp_path / "programs", context, batch=2).run(until_idle=True)
    assert rows(store, "SELECT type, source, delivery_id, url, ts FROM engagements ORDER BY id") == [
        ("opened", "event", delivery, None, store_ts(store, datetime(2026, 5, 1, 10, tzinfo=UTC))),
        ("clicked", "event", delivery, "https://shop.example/a",
         store_ts(store, datetime(2026, 5, 1, 10, 1, tzinfo=UTC)))]
