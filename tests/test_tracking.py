"""Open and click tracking end to end: the renderer rewrites links and adds the
pixel, the dispatcher sends them, the public endpoints answer and record, on
SQLite and PostgreSQL. Bad tokens never redirect and never fail with a 500."""

from __future__ import annotations

import html
import random
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from ceap.api import create_app
from ceap.delivery.consent_store import grant_consent, revoke_consent
from ceap.delivery.delivery_config import DeliveryConfig
from ceap.delivery.dispatcher import Dispatcher
from ceap.delivery.model import Profile
from ceap.delivery.templates import TemplateRenderer
from ceap.delivery.unsubscribe import SECRET_ENV
from ceap.outcomes.config import TrackingConfig
from ceap.outcomes.links import purge_links
from ceap.outcomes.tokens import link_hash, make_token
from ceap.outcomes.track import GIF
from ceap.store import Store, open_store
from ceap.testing.doubles import CaptureConfig, CapturingChannel, FakeClock
from tests.outcome_helpers import SECRET, rows, seed

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
BASE = "https://t.example.com"
UNSUB = "https://shop.example/v1/unsubscribe"
TEMPLATE = """
email:
  subject: "Spring offer"
  text: |
    Shop now: https://shop.example/spring?code={{ payload.code }}&utm=mail.
    Unsubscribe: {{ unsubscribe_url }}
  html: |
    <html><body><p>Hi</p>
    <a class="btn" href="https://shop.example/spring?code={{ payload.code }}&amp;utm=mail">Shop</a>
    <a href='https://shop.example/help' data-ceap-notrack>Help</a>
    <a href="mailto:help@shop.example">Mail us</a>
    <a href="https://partner.example/x">Partner</a>
    <a href="{{ unsubscribe_url }}">Unsubscribe</a>
    </body></html>
sms:
  text: "Spring code {{ payload.code }}: https://shop.example/s/{{ payload.code }} (Reply STOP to opt out)"
push: {title: "Spring", body: "See https://shop.example/app, or not"}
inapp: {title: "Spring", body: "[Open](https://shop.example/inbox) now"}
voice: {text: "Call us at https://shop.example/voice"}
"""


@pytest.fixture
def store(store_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    s = open_store(store_url)
    yield s
    s.close()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "spring.yaml").write_text(TEMPLATE)
    return tmp_path


def renderer(project: Path, store: Store | None, clock: FakeClock, **tracking: Any) -> TemplateRenderer:
    cfg = DeliveryConfig.model_validate({"templates": {"unsubscribe_url": UNSUB}})
    config = TrackingConfig(**{"base_url": BASE, "exclude": ["https://partner.example/"], **tracking})
    return TemplateRenderer.from_config(cfg, project, tracking=config, store=store, clock=clock)


def candidate(store: Store, **overrides: Any) -> Any:
    [cid] = seed(store, T0, template="spring", payload={"code": "S1"}, category="marketing",
                 channels=["email", "sms", "push", "inapp"], **overrides)
    from ceap.delivery.outbox import Outbox

    return Outbox(store, "test").candidates([cid])[cid]


def links(text: str, kind: str) -> list[str]:
    return re.findall(rf"{re.escape(BASE)}/t/{kind}/[A-Za-z0-9_-]+", text)


def token_of(url: str) -> str:
    return urlsplit(url).path.rsplit("/", 1)[1]


def test_links_are_rewritten_per_channel_and_the_pixel_added(store: Store, project: Path) -> None:
    clock = FakeClock(T0)
    r = renderer(project, store, clock)
    c = candidate(store)
    email = r.render(c, "email", Profile("default", "c0", email="c0@example.com"))
    assert email.html is not None
    assert len(links(email.html, "c")) == 1          # the offer only
    assert 'href="https://shop.example/help" data-ceap-notrack' not in email.html  # quote style kept:
    assert "href='https://shop.example/help' data-ceap-notrack" in email.html      # untouched
    assert 'href="mailto:help@shop.example"' in email.html
    assert 'href="https://partner.example/x"' in email.html                        # excluded prefix
    assert f'href="{UNSUB}?token=' in email.html                                   # never tracked
    [pixel] = links(email.html, "o")
    assert email.html.index(pixel) < email.html.index("</body>")
    assert f'<img src="{pixel}" width="1" height="1"' in email.html
    # the text part: the bare URL is tracked, the sentence's full stop stays outside the link
    [text_link] = links(email.body, "c")
    assert f"Shop now: {text_link}." in email.body and f"Unsubscribe: {UNSUB}?token=" in email.body
    assert token_of(text_link) == token_of(links(email.html, "c")[0])   # the same destination
    stored = dict(rows(store, "SELECT url, hash FROM tracked_links"))
    assert stored == {"https://shop.example/spring?code=S1&utm=mail":
                      link_hash("https://shop.example/spring?code=S1&utm=mail")}
    sms = r.render(c, "sms", None)
    assert len(links(sms.body, "c")) == 1
    assert sms.body.startswith("Spring code S1: ") and sms.body.endswith(" (Reply STOP to opt out)")
    assert links(r.render(c, "push", None).body, "c") and links(r.render(c, "inapp", None).body, "c")
    assert r.render(c, "inapp", None).body.startswith(f"[Open]({BASE}/t/c/")
    assert "https://shop.example/voice" in r.render(c, "voice", None).body   # voice is never tracked
    assert len(rows(store, "SELECT url FROM tracked_links")) == 4  # spring, s/S1, app, inbox


def test_opens_or_clicks_can_be_switched_off(store: Store, project: Path) -> None:
    c = candidate(store)
    no_clicks = renderer(project, store, FakeClock(T0), clicks=False).render(c, "email", None)
    assert no_clicks.html is not None and links(no_clicks.html, "o") and not links(no_clicks.html, "c")
    no_opens = renderer(project, store, FakeClock(T0), opens=False).render(c, "email", None)
    assert no_opens.html is not None and links(no_opens.html, "c") and not links(no_opens.html, "o")


def test_consent_decides_whether_a_customer_is_tracked(store: Store, project: Path) -> None:
    c = candidate(store)
    revoke_consent(store, "default", "c0", "email", "tracking")
    untracked = renderer(project, store, FakeClock(T0)).render(c, "email", None)
    assert untracked.html is not None and not links(untracked.html, "o") and not links(untracked.body, "c")
    assert links(renderer(project, store, FakeClock(T0)).render(c, "sms", None).body, "c")  # sms: no record
    # opt_in: nobody without a grant; a grant on any channel ('*') or on the channel enables it
    strict = renderer(project, store, FakeClock(T0), consent="opt_in")
    assert not links(strict.render(c, "sms", None).body, "c")
    grant_consent(store, "default", "c0", "*", "tracking")
    assert links(strict.render(c, "sms", None).body, "c")
    assert not links(strict.render(c, "email", None).body, "c")  # the channel's own revocation wins


# -- the endpoints ------------------------------------------------------------------------


def send_email(store: Store, project: Path, clock: FakeClock) -> tuple[CapturingChannel, Any]:
    """Dispatch one marketing e-mail through the tracking renderer; returns the channel."""
    seed(store, T0, template="spring", payload={"code": "S1"}, category="marketing", channels=["email"])
    channel = CapturingChannel(CaptureConfig(outbox=uuid.uuid4().hex))
    Dispatcher(store, {"email": channel}, renderer=renderer(project, store, clock), clock=clock).run()
    assert len(channel.messages) == 1
    return channel, channel.messages[0]


def api(store: Store, clock: FakeClock, **tracking: Any) -> TestClient:
    app = create_app(store)
    app.state.clock = clock
    app.state.tracking = TrackingConfig(base_url=BASE, **tracking)
    return TestClient(app, follow_redirects=False)


def engagements(store: Store) -> list[tuple[Any, ...]]:
    return rows(store, "SELECT type, source, url, program, customer_id, channel FROM engagements "
                       "ORDER BY id")


def test_a_sent_email_records_its_open_once_and_each_link_click_once(store: Store, project: Path) -> None:
    clock = FakeClock(T0)
    _, message = send_email(store, project, clock)
    [pixel] = links(message.html, "o")
    [click] = links(message.html, "c")
    client = api(store, clock)
    clock.advance(minutes=10)
    for _ in range(3):  # repeated opens: the same image, one record
        answer = client.get(urlsplit(pixel).path)
        assert answer.status_code == 200 and answer.content == GIF
        assert answer.headers["content-type"] == "image/gif"
        assert "no-store" in answer.headers["cache-control"]
        assert answer.headers["referrer-policy"] == "no-referrer"
    for _ in range(2):
        answer = client.get(urlsplit(click).path)
        assert answer.status_code == 302
        assert answer.headers["location"] == "https://shop.example/spring?code=S1&utm=mail"
    [(delivery,)] = rows(store, "SELECT id FROM deliveries")
    assert engagements(store) == [
        ("opened", "pixel", None, "offer", "c0", "email"),
        ("clicked", "link", "https://shop.example/spring?code=S1&utm=mail", "offer", "c0", "email")]
    assert [r[0] for r in rows(store, "SELECT delivery_id FROM engagements")] == [delivery, delivery]


def test_head_requests_and_early_clicks_are_not_counted(store: Store, project: Path) -> None:
    clock = FakeClock(T0)
    _, message = send_email(store, project, clock)
    client = api(store, clock, scanner_window="30s")
    [pixel], [click] = links(message.html, "o"), links(message.html, "c")
    assert client.head(urlsplit(pixel).path).status_code == 200
    assert client.head(urlsplit(click).path).status_code == 302
    clock.advance(seconds=5)  # a link scanner follows the link seconds after the send
    assert client.get(urlsplit(click).path).status_code == 302
    assert engagements(store) == []
    clock.advance(seconds=60)
    assert client.get(urlsplit(click).path).status_code == 302
    assert [e[0] for e in engagements(store)] == ["clicked"]


def test_a_revoked_tracking_consent_stops_recording_but_not_the_link(store: Store, project: Path) -> None:
    clock = FakeClock(T0)
    _, message = send_email(store, project, clock)
    revoke_consent(store, "default", "c0", "email", "tracking")
    client = api(store, clock)
    clock.advance(minutes=5)
    assert client.get(urlsplit(links(message.html, "o")[0]).path).status_code == 200
    answer = client.get(urlsplit(links(message.html, "c")[0]).path)
    assert answer.status_code == 302 and answer.headers["location"].startswith("https://shop.example/")
    assert engagements(store) == []


def test_bad_tokens_get_4xx_and_never_a_redirect(store: Store, project: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(T0)
    _, message = send_email(store, project, clock)
    client = api(store, clock)
    [click] = links(message.html, "c")
    token = token_of(click)
    rng = random.Random(7)
    tries = [token[:-1] + ("A" if token[-1] != "A" else "B"), token[:10], token + "A", "", "x" * 3000,
             "..%2F..%2Fetc", "%00", token.upper(), "https%3A%2F%2Fevil.example"]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for _ in range(300):  # random one-character edits of a genuine token, the last one included
        chars = list(token)
        chars[rng.randrange(len(chars))] = rng.choice(alphabet)
        tries.append("".join(chars))
    tries += [token[:-1] + c for c in alphabet]
    for bad in tries:
        if bad == token:
            continue
        for kind in ("c", "o"):
            answer = client.get(f"/t/{kind}/{bad}")
            assert 400 <= answer.status_code < 500, (bad, answer.status_code)
            assert "location" not in answer.headers
    # a genuine token for a link the store does not hold: no redirect
    unknown = make_token("click", "default", 1, "email", T0 + timedelta(days=1),
                         link=link_hash("https://evil.example/"))
    answer = client.get(f"/t/c/{unknown}")
    assert answer.status_code == 404 and "location" not in answer.headers
    # the pixel's token is not a click token, and the other way round
    assert client.get(f"/t/c/{token_of(links(message.html, 'o')[0])}").status_code == 404
    assert client.get(f"/t/o/{token}").status_code == 404
    # expired: 410, no redirect
    clock.advance(days=91)
    answer = client.get(urlsplit(click).path)
    assert answer.status_code == 410 and "location" not in answer.headers and "expired" in answer.text
    # no signing key on the server: 503, not a 500
    monkeypatch.delenv(SECRET_ENV)
    assert client.get(urlsplit(click).path).status_code == 503
    assert engagements(store) == []


def test_expired_destinations_are_purged(store: Store, project: Path) -> None:
    clock = FakeClock(T0)
    r = renderer(project, store, clock)
    r.render(candidate(store), "sms", None)
    assert purge_links(store, T0) == 0
    assert purge_links(store, T0 + timedelta(days=91)) == 1
    assert rows(store, "SELECT count(*) FROM tracked_links") == [(0,)]


def test_the_openapi_document_declares_the_tracking_answers(store: Store) -> None:
    paths = create_app(store).openapi()["paths"]
    assert {"200", "404", "410", "503"} <= set(paths["/t/o/{token}"]["get"]["responses"])
    assert {"302", "404", "410", "503"} <= set(paths["/t/c/{token}"]["get"]["responses"])
    assert "security" not in paths["/t/c/{token}"]["get"]


def test_html_entities_in_hrefs_are_decoded_once(store: Store, project: Path) -> None:
    c = candidate(store)
    out = renderer(project, store, FakeClock(T0)).render(c, "email", None)
    assert out.html is not None
    page_link = html.unescape(links(out.html, "c")[0])
    assert rows(store, "SELECT url FROM tracked_links WHERE hash = ?",
                (link_hash("https://shop.example/spring?code=S1&utm=mail"),)) == \
        [("https://shop.example/spring?code=S1&utm=mail",)]
    assert page_link.startswith(BASE)


def test_preview_shows_tracked_links_and_records_nothing(store: Store, project: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from ceap.delivery.templates import preview
    from tests.helpers import base_program, write_program

    (project / "ceap.yaml").write_text(yaml.safe_dump({"tracking": {"base_url": BASE}}))
    (project / "programs").mkdir()
    write_program(project / "programs" / "offer.yaml", base_program(
        name="offer", action={"type": "offer", "channels": ["sms"], "template": "spring",
                              "payload": {"code": "P1"}}))
    shown = preview(project, "offer", "c0", store)
    [link] = links(shown["sms"].body, "c")
    assert token_of(link) != "PREVIEW"          # signed with the key in the environment
    monkeypatch.delenv(SECRET_ENV)
    [placeholder] = links(preview(project, "offer", "c0", store)["sms"].body, "c")
    assert token_of(placeholder) == "PREVIEW"   # no key: a placeholder, not an error
    assert rows(store, "SELECT count(*) FROM tracked_links") == [(0,)]
