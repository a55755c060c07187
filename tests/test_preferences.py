"""The preference center: a signed link shows and changes a customer's channels and topics,
as JSON and as a page; one-click unsubscribe keeps working. Both stores."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ceap import audit
from ceap.api import create_app
from ceap.delivery.consent_store import consent_history, grant_consent
from ceap.delivery.preferences import make_preferences_link
from ceap.delivery.unsubscribe import SECRET_ENV, make_token
from ceap.store import Store
from tests.outcome_helpers import SECRET

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def signing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


def prepared(store: Store) -> TestClient:
    with store.tx() as tx:
        tx.execute("INSERT INTO profiles (tenant_id, customer_id, email, updated_at) VALUES (?,?,?,?)",
                   ("default", "c1", "c1@example.org", tx.ts(T0)))
    grant_consent(store, "default", "c1", "email", "news", source="signup", now=T0)
    return TestClient(create_app(store))


def test_json_shows_and_changes_preferences(store: Store) -> None:
    api = prepared(store)
    token = make_preferences_link("https://x/p", "default", "c1").split("token=")[1]
    shown = api.get("/v1/preferences", params={"token": token}).json()
    assert shown == {"changed": 0, "preferences": [
        {"channel": "email", "topic": "*", "granted": None},
        {"channel": "email", "topic": "news", "granted": True},
        {"channel": "inapp", "topic": "*", "granted": None}]}
    changed = api.post("/v1/preferences", params={"token": token}, json={"changes": [
        {"channel": "email", "topic": "news", "granted": False},
        {"channel": "inapp", "granted": False}]}).json()
    assert changed["changed"] == 2
    assert {(p["channel"], p["topic"]): p["granted"] for p in changed["preferences"]} == {
        ("email", "*"): None, ("email", "news"): False, ("inapp", "*"): False}
    [*_, last] = consent_history(store, "default", "c1")
    assert (last.channel, last.source, last.actor) == ("inapp", "preference_center", "customer")
    entries = audit.query(store, "default", action="consent.revoke")
    assert {e.source for e in entries} == {"testclient"}
    assert api.get("/v1/preferences", params={"token": token[:-2] + "AA"}).status_code == 403


def test_the_page_shows_a_form_and_saves_it(store: Store) -> None:
    api = prepared(store)
    link = make_preferences_link("http://testserver/v1/preferences/page", "default", "c1")
    page = api.get(link)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<script" not in page.text and "http" not in page.text.split("<body>")[1]  # nothing external
    assert 'name="key1" value="email\tnews"' in page.text
    saved = api.post(link, data={"key1": "email\tnews", "value1": "no", "key0": "email\t*", "value0": ""})
    assert saved.status_code == 200 and "Saved (1 change(s))" in saved.text
    assert [(c.topic, c.new_granted) for c in consent_history(store, "default", "c1")][-1] == ("news", False)
    assert api.get("/v1/preferences/page").status_code == 400


def test_one_click_unsubscribe_stays_and_a_preference_link_does_not_unsubscribe(store: Store) -> None:
    api = prepared(store)
    one_click = make_token("default", "c1", "email", "news")
    assert api.post("/v1/unsubscribe", params={"token": one_click}).status_code == 200
    assert [(c.topic, c.new_granted, c.source) for c in consent_history(store, "default", "c1")][-1] == (
        "news", False, "unsubscribe_link")
    # an unsubscribe link opens the preference center too; a preference link unsubscribes nothing
    assert api.get("/v1/preferences", params={"token": one_click}).status_code == 200
    prefs = make_preferences_link("https://x/p", "default", "c1").split("token=")[1]
    assert api.post("/v1/unsubscribe", params={"token": prefs}).status_code == 403


def test_templates_get_a_signed_preferences_url(store: Store, tmp_path: Path) -> None:
    from tests.test_templates import candidate, renderer, write

    write(tmp_path / "templates", "offer", """
        sms:
          text: "Deals! Manage: {{ preferences_url }}"
        """)
    r = renderer(tmp_path, {"templates": {"unsubscribe_url": "https://u.example/x",
                                          "preferences_url": "http://testserver/v1/preferences/page"}},
                 secret=SECRET)
    link = r.render(candidate(channels=["sms"], customer_id="c1"), "sms", None).body.split("Manage: ")[1]
    page = prepared(store).get(link)
    assert page.status_code == 200 and "email: “news”" in page.text
