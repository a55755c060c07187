"""A client app reports what the customer did with an in-app card or a push by the
key the message carried: dispatched, listed (inbox) or received (push data), then
``POST /v1/engagements`` with that key records the engagement on the right delivery
and candidate (so on its arm and variant), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from ceap.api import create_app
from ceap.api.auth import create_key
from ceap.channels.base import PUSH_KEY_FIELD
from ceap.channels.inapp import InAppChannel, InAppConfig
from ceap.channels.push_fcm import FcmChannel
from ceap.delivery.dispatcher import Dispatcher
from ceap.delivery.profiles import upsert_profiles
from ceap.plugin import PluginContext
from ceap.store import Store, open_store
from ceap.testing.doubles import FakeClock
from tests.outcome_helpers import rows, seed
from tests.provider_server import ProviderServer, Reply, serve

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
FCM_SEND = "/v1/projects/demo-proj/messages:send"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    yield s
    s.close()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ProviderServer]:
    monkeypatch.setenv("FCM_TOKEN", "ya29.static-token")
    yield from serve()


def two_variants(store: Store, channel: str) -> list[int]:
    """Candidates for c0 (variant A) and c1 (variant B) on ``channel``."""
    return seed(store, T0, 2, channels=[channel], variant=lambda i: "AB"[i])


def recorded(store: Store) -> list[tuple[Any, ...]]:
    """Each engagement with its delivery's key and its candidate's arm and variant."""
    return rows(store, "SELECT e.type, e.source, e.customer_id, d.idempotency_key, c.id, c.arm, c.variant "
                       "FROM engagements e JOIN deliveries d ON d.id = e.delivery_id "
                       "JOIN candidates c ON c.id = e.candidate_id ORDER BY e.id")


def reporter(store: Store) -> tuple[TestClient, dict[str, str]]:
    app = create_app(store)
    app.state.clock = FakeClock(T0 + timedelta(hours=1))
    return TestClient(app), {"Authorization": f"Bearer {create_key(store, 'default', 'app')}"}


def test_an_inbox_card_is_reported_by_the_key_the_inbox_lists(store: Store) -> None:
    _, second = two_variants(store, "inapp")
    inapp = InAppChannel(InAppConfig(), PluginContext(store=store))
    assert Dispatcher(store, {"inapp": inapp}, clock=FakeClock(T0)).run().sent == 2
    api, auth = reporter(store)
    [card] = api.get("/v1/customers/c1/inbox", headers=auth).json()
    [key] = [k for (k,) in rows(store, "SELECT idempotency_key FROM deliveries WHERE candidate_id = ?",
                                (second,))]
    assert card["idempotency_key"] == key
    reports = [{"idempotency_key": card["idempotency_key"], "type": "opened"},
               {"idempotency_key": card["idempotency_key"], "type": "clicked", "url": "https://x.test/a"}]
    answer = api.post("/v1/engagements", json=reports, headers=auth)
    assert answer.status_code == 200 and answer.json() == {"recorded": 2, "unknown": []}
    assert api.post("/v1/engagements", json=reports, headers=auth).json() == {"recorded": 0, "unknown": []}
    assert recorded(store) == [("opened", "api", "c1", key, second, "treatment", "B"),
                               ("clicked", "api", "c1", key, second, "treatment", "B")]


def test_a_push_is_reported_by_the_key_its_data_carries(store: Store, server: ProviderServer) -> None:
    first, _ = two_variants(store, "push")
    upsert_profiles(store, pa.table({"customer_id": ["c0", "c1"], "push_token": ["tok-0", "tok-1"]}),
                    "default")
    server.default = lambda r: Reply(200, {"name": "projects/demo-proj/messages/1"})
    fcm = FcmChannel.from_dict({"type": "fcm", "base_url": server.url, "project_id": "demo-proj",
                                "token_env": "FCM_TOKEN", "credentials_env": None, "allow_private": True})
    try:
        assert Dispatcher(store, {"push": fcm}, clock=FakeClock(T0)).run().sent == 2
    finally:
        fcm.close()
    pushes = {m["token"]: m for m in (json.loads(c.body)["message"] for c in server.calls(FCM_SEND))}
    key = pushes["tok-0"]["data"][PUSH_KEY_FIELD]  # what the app reads from the notification's data
    assert rows(store, "SELECT idempotency_key FROM deliveries WHERE candidate_id = ?", (first,)) == [(key,)]
    api, auth = reporter(store)
    answer = api.post("/v1/engagements", json=[{"idempotency_key": key, "type": "opened"}], headers=auth)
    assert answer.json() == {"recorded": 1, "unknown": []}
    assert recorded(store) == [("opened", "api", "c0", key, first, "treatment", "A")]
