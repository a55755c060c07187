"""Hostile inputs get a 4xx that names what is wrong, never a 500 (issue 8 §2)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from ceap.api import create_app
from ceap.api.auth import create_key
from ceap.delivery.consent_store import list_consent
from ceap.delivery.unsubscribe import make_token
from ceap.model import InboxItem
from ceap.plugin import PluginContext
from ceap.realtime.embedded import EmbeddedStream
from ceap.store import Store, open_store

SECRET = "a-signing-secret-for-tests-only"
GOOD = {"id": "e1", "type": "app_crash", "ts": "2026-11-25T10:00:00Z", "customer_id": "C1"}
DEEP = b"[" * 10_000 + b"]" * 10_000


@pytest.fixture
def store(store_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.setenv("CEAP_SIGNING_SECRET", SECRET)
    s = open_store(store_url)
    yield s
    s.close()


@pytest.fixture
def stream(store: Store, tmp_path) -> EmbeddedStream:  # type: ignore[no-untyped-def]
    return EmbeddedStream.from_dict({"type": "embedded", "stream": "ingest"},
                                    PluginContext(base_dir=tmp_path, store=store))


@pytest.fixture
def api(store: Store, stream: EmbeddedStream) -> TestClient:
    key = create_key(store, "default", "tests")
    client = TestClient(create_app(store, ingest=stream), raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {key}"
    return client


def post_json(api: TestClient, path: str, text: str | bytes) -> object:
    return api.post(path, content=text, headers={"Content-Type": "application/json"})


def test_ids_beyond_int64_are_a_422_not_an_overflow(api: TestClient, store: Store) -> None:
    store.inbox_add([InboxItem("default", "c1", "k", "recs", "t", "b")])
    for ids in ([9223372036854775808], [-9223372036854775809], [10 ** 30], [2 ** 53], [0]):
        answer = api.post("/v1/customers/c1/inbox/read", json={"ids": ids})
        assert answer.status_code == 422, (ids, answer.text)
        assert answer.json()["detail"][0]["loc"] == ["body", "ids", 0]
    top = api.post("/v1/customers/c1/inbox/read", json={"ids": [2 ** 53 - 1]})  # JSON's exact integers
    assert top.status_code == 200 and top.json() == {"marked": 0}


def test_booleans_are_not_numbers(api: TestClient) -> None:
    assert api.post("/v1/customers/c1/inbox/read", json={"ids": [False]}).status_code == 422
    assert api.post("/v1/customers/c1/inbox/read", json={"ids": ["1"]}).status_code == 422
    answer = api.post("/v1/candidates:batch", json={"customer_ids": ["a"], "limit": True})
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["body", "limit"]
    assert api.post("/v1/candidates:batch", json={"customer_ids": ["a"], "limit": 2.5}).status_code == 422
    for limit in (2, 2.0):   # JSON Schema's integer: 2.0 is one
        answer = api.post("/v1/candidates:batch", json={"customer_ids": ["a"], "limit": limit})
        assert answer.status_code == 200


def test_lone_surrogate_in_a_body_is_a_422_naming_the_field(api: TestClient) -> None:
    batch = post_json(api, "/v1/candidates:batch", '{"customer_ids": ["ok", "\\ud800"]}')
    assert batch.status_code == 422
    [issue] = batch.json()["detail"]
    assert issue["loc"] == ["body", "customer_ids", 1] and "surrogate" in issue["msg"]
    receipt = post_json(api, "/v1/receipts", '{"provider_id": "\\udfff", "status": "delivered"}')
    assert receipt.status_code == 422 and receipt.json()["detail"][0]["loc"] == ["body", "provider_id"]
    pair = post_json(api, "/v1/candidates:batch", '{"customer_ids": ["\\ud83d\\ude00"]}')  # an emoji
    assert pair.status_code == 200 and pair.json() == {"\U0001f600": []}


def test_lone_surrogate_rejects_its_event_only(api: TestClient, stream: EmbeddedStream) -> None:
    bad_id = json.dumps({**GOOD, "id": "\ud800"})
    bad_attr = json.dumps({**GOOD, "id": "e3", "attributes": {"note": ["x", "\udc00"]}})
    body = f'[{json.dumps(GOOD)}, {bad_id}, {bad_attr}, {json.dumps({**GOOD, "id": "e4"})}]'
    answer = post_json(api, "/v1/events", body)
    assert answer.status_code == 202, answer.text
    got = answer.json()
    assert got["accepted"] == 2
    assert [r["index"] for r in got["rejected"]] == [1, 2]
    assert got["rejected"][0]["error"].startswith("id: ") and "surrogate" in got["rejected"][0]["error"]
    assert got["rejected"][1]["error"].startswith("attributes.note.1: ")
    assert [json.loads(m.body)["id"] for m in stream.poll(10, 0)] == ["e1", "e4"]


@pytest.mark.parametrize("path", ["/v1/events", "/v1/events/eventbridge"])
def test_deeply_nested_json_is_a_400(api: TestClient, path: str) -> None:
    answer = post_json(api, path, DEEP)
    assert answer.status_code == 400 and "nested deeper than" in answer.json()["detail"]
    deep_attribute = json.dumps({**GOOD, "attributes": {}}).replace("{}", "[" * 100 + "]" * 100)
    assert post_json(api, path, deep_attribute).status_code == 400


def test_ingest_body_that_is_not_utf8_is_a_400(api: TestClient) -> None:
    answer = post_json(api, "/v1/events", json.dumps(GOOD).encode().replace(b"C1", b"C\xed\xa0\x80"))
    assert answer.status_code == 400 and "UTF-8" in answer.json()["detail"]


def test_eventbridge_item_without_detail_type_is_rejected_alone(api: TestClient) -> None:
    envelope = {"id": "eb-1", "detail-type": "app_crash", "time": "2026-11-25T10:00:00Z",
                "detail": {"customer_id": "B"}}
    answer = api.post("/v1/events/eventbridge", json=[envelope, GOOD])
    assert answer.status_code == 202
    assert answer.json() == {"accepted": 1, "rejected": [
        {"index": 1, "error": "not an EventBridge envelope: no 'detail-type'"}]}


def test_time_out_of_range_after_the_offset_is_rejected_not_a_crash(api: TestClient) -> None:
    answer = api.post("/v1/events", json=[GOOD, {**GOOD, "id": "e2", "ts": "0001-01-01T00:00:00+01:00"},
                                          {**GOOD, "id": "e3", "ts": "9999-12-31T23:59:59-01:00"}])
    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] == 1
    assert all(r["error"].startswith("ts: ") for r in answer.json()["rejected"])


@pytest.mark.parametrize("query", ["v1.abc.%C3%A9", "v1.%C3%A9.abc", "%C3%A9", "v1.abc.%ED%A0%80",
                                   "v1.abc.%FF", "v1.abc.%00"])
def test_non_ascii_unsubscribe_token_is_refused_not_a_crash(api: TestClient, store: Store,
                                                            query: str) -> None:
    for method in ("GET", "POST"):
        answer = api.request(method, f"/v1/unsubscribe?token={query}")
        assert answer.status_code == 400, (method, answer.status_code)
        assert answer.headers["content-type"].startswith("text/plain")
    assert list_consent(store, "default", "alice") == []


def test_forged_but_well_formed_unsubscribe_token_is_a_403(api: TestClient) -> None:
    token = make_token("default", "alice", "email", "win_back")
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert api.post("/v1/unsubscribe", params={"token": forged}).status_code == 403
    assert api.post("/v1/unsubscribe", params={"token": token}).status_code == 200


def test_non_ascii_twilio_signature_is_a_403(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "twilio-secret")
    api = TestClient(create_app(store), raise_server_exceptions=False)
    answer = api.post("/v1/webhooks/twilio/sms/default", data={"From": "+1", "Body": "STOP"},
                      headers={"X-Twilio-Signature": "\u00e9t\u00e9".encode()})
    assert answer.status_code == 403


def test_an_unexpected_error_is_a_json_500_without_a_traceback(store: Store) -> None:
    app = create_app(store, auth=False)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret detail /home/x/file.py")

    answer = TestClient(app, raise_server_exceptions=False).get("/boom")
    assert answer.status_code == 500
    assert answer.json() == {"detail": "internal error"}
    assert "Traceback" not in answer.text and "secret" not in answer.text


def test_nul_in_text_is_a_422_on_every_route(api: TestClient) -> None:
    """PostgreSQL text cannot hold a NUL: refused where it comes in, on both stores."""
    for method, path, body in [("GET", "/v1/customers/a%00b/candidates", None),
                               ("GET", "/v1/customers/a/candidates?program=x%00", None),
                               ("GET", "/v1/customers/a%00b/inbox", None),
                               ("POST", "/v1/customers/a%00/inbox/read", {"ids": [1]}),
                               ("POST", "/v1/candidates:batch", {"customer_ids": ["a\x00"]}),
                               ("POST", "/v1/receipts", {"provider_id": "a\x00", "status": "delivered"})]:
        answer = api.request(method, path, json=body)
        assert answer.status_code == 422, (path, answer.text)
        assert answer.json()["detail"][0]["msg"].endswith("text with a NUL character cannot be stored")
    events = api.post("/v1/events", json=[GOOD, {**GOOD, "id": "e2", "attributes": {"k": "v\x00"}},
                                          {**GOOD, "id": "e\x00"}])
    assert events.status_code == 202 and events.json()["accepted"] == 1
    assert [r["error"] for r in events.json()["rejected"]] == [
        "attributes.k: text with a NUL character cannot be stored",
        "id: text with a NUL character cannot be stored"]
