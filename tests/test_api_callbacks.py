"""Callbacks over HTTP: one-click unsubscribe, inbound STOP, delivery receipts."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from ceap.api import create_app
from ceap.api.auth import create_key
from ceap.channels.receipts import twilio_signature
from ceap.delivery.consent_store import list_consent, list_suppressions
from ceap.delivery.dispatcher import Dispatcher
from ceap.delivery.outbox import Outbox
from ceap.delivery.profiles import upsert_profiles
from ceap.delivery.unsubscribe import make_token
from ceap.model import RunRecord, utcnow
from ceap.store import Store, open_store
from ceap.testing.doubles import CaptureConfig, CapturingChannel, make_candidates

SECRET = "a-signing-secret-for-tests-only"


@pytest.fixture
def store(store_url: str, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("CEAP_SIGNING_SECRET", SECRET)
    s = open_store(store_url)
    yield s
    s.close()


def test_one_click_unsubscribe_revokes_at_once(store: Store) -> None:
    api = TestClient(create_app(store))
    token = make_token("default", "alice", "email", "win_back")
    page = api.get("/v1/unsubscribe", params={"token": token})
    assert page.status_code == 200 and 'method="post"' in page.text
    assert list_consent(store, "default", "alice") == []  # a GET (link scanner) changes nothing
    done = api.post("/v1/unsubscribe", params={"token": token})
    assert done.status_code == 200
    [record] = list_consent(store, "default", "alice")
    assert (record.channel, record.topic, record.granted) == ("email", "win_back", False)
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert api.post("/v1/unsubscribe", params={"token": tampered}).status_code == 403  # forged


def test_inbound_stop_needs_a_valid_signature(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "twilio-secret")
    upsert_profiles(store, pa.table({"customer_id": ["bob"], "phone": ["+15550001111"]}), "default")
    api = TestClient(create_app(store))
    url = "http://testserver/v1/webhooks/twilio/sms/default"
    form = {"From": "+15550001111", "Body": "Stop"}
    forged = api.post(url, data=form, headers={"X-Twilio-Signature": "nope"})
    assert forged.status_code == 403 and list_consent(store, "default", "bob") == []
    signed = api.post(url, data=form,
                      headers={"X-Twilio-Signature": twilio_signature(url, form, "twilio-secret")})
    assert signed.status_code == 200
    assert [(r.channel, r.granted) for r in list_consent(store, "default", "bob")] == [("sms", False)]


def sent_delivery(store: Store) -> Any:
    store.write_run(RunRecord("r", "default", "p", "succeeded", utcnow()),
                    make_candidates(1, channels=["sms"], customer_id="carol"))
    upsert_profiles(store, pa.table({"customer_id": ["carol"], "phone": ["+15550002222"]}), "default")
    channel = CapturingChannel(CaptureConfig(outbox="callbacks"))
    CapturingChannel.reset()
    channel.address = "phone"  # type: ignore[misc]
    Dispatcher(store, {"sms": channel}).run()
    [delivery] = Outbox(store, "t").deliveries("default")
    assert delivery.status == "sent" and delivery.provider_id
    return delivery


def test_twilio_bounce_receipt_suppresses_the_number(store: Store,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "twilio-secret")
    delivery = sent_delivery(store)
    api = TestClient(create_app(store))
    url = "http://testserver/v1/webhooks/twilio/status/default"
    form = {"MessageSid": delivery.provider_id, "MessageStatus": "undelivered",
            "ErrorCode": "30003", "To": "+15550002222"}
    answer = api.post(url, data=form,
                      headers={"X-Twilio-Signature": twilio_signature(url, form, "twilio-secret")})
    assert answer.json() == {"status": "bounced"}
    [after] = Outbox(store, "t").deliveries("default")
    assert after.status == "bounced"
    [suppressed] = list_suppressions(store, "default")
    assert suppressed.reason == "hard_bounce"


def test_generic_receipt_needs_a_key_and_finds_the_delivery(store: Store) -> None:
    delivery = sent_delivery(store)
    api = TestClient(create_app(store))
    body = {"idempotency_key": delivery.idempotency_key, "status": "delivered"}
    assert api.post("/v1/receipts", json=body).status_code == 401
    auth = {"Authorization": f"Bearer {create_key(store, 'default', 'relay')}"}
    assert api.post("/v1/receipts", json=body, headers=auth).json() == {"status": "delivered"}
    assert Outbox(store, "t").deliveries("default")[0].status == "delivered"
    missing = api.post("/v1/receipts", json={"provider_id": "nope", "status": "delivered"}, headers=auth)
    assert missing.status_code == 404
