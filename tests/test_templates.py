"""Templates: per-channel parts in the immutable sandbox, locale fallback,
autoescaping, size and time limits, unsubscribe headers, validation of
missing variables, preview, and rendering through the Dispatcher."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal

import pyarrow as pa
import pytest

from ceap.channels.base import Channel, ChannelConfig, Message, SendResult
from ceap.delivery.delivery_config import DeliveryConfig
from ceap.delivery.dispatcher import Dispatcher
from ceap.delivery.model import Profile
from ceap.delivery.profiles import upsert_profiles
from ceap.delivery.templates import (
    Known,
    TemplateError,
    TemplateRenderer,
    check_source,
    locale_chain,
    preview,
    validate_program_templates,
    validate_template,
)
from ceap.delivery.unsubscribe import SECRET_ENV, verify
from ceap.model import Candidate, RunRecord
from ceap.spec import load_programs, parse_program
from ceap.store import Store
from ceap.testing.doubles import make_candidates

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SECRET = "test-signing-secret-0123456789"
ROOT = Path(__file__).resolve().parents[1]

OFFER = """
description: test offer
default_locale: en
email:
  subject: "{{ payload.discount_pct }}% off, {{ profile.attributes.first_name | default('friend') }}"
  text: |
    Code {{ payload.code }} for {{ candidate.customer_id }}.
    Unsubscribe: {{ unsubscribe_url }}
  html: "<p>Code <b>{{ payload.code }}</b></p><a href=\\"{{ unsubscribe_url }}\\">unsubscribe</a>"
sms:
  text: "Code {{ payload.code }}. Reply STOP to opt out."
push:
  title: "{{ payload.discount_pct }}% off"
  body: "Code {{ payload.code }}"
inapp:
  title: "Offer"
  body: "Code {{ payload.code }}"
default:
  body: "Code {{ payload.code }} ({{ channel }})"
locales:
  fr:
    email:
      subject: "{{ payload.discount_pct }} % de réduction"
      text: "Code {{ payload.code }}. Désabonnement : {{ unsubscribe_url }}"
    sms:
      text: "Code {{ payload.code }}. STOP pour arrêter."
  fr-CA:
    sms:
      text: "Code {{ payload.code }} (Québec). STOP pour arrêter."
"""


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def candidate(**kw: Any) -> Candidate:
    base = dict(id=7, tenant_id="default", program="promo", run_id="r", customer_id="c0",
                subject_id=None, context={}, action_type="offer", channels=["email"], template="offer",
                category="marketing", score=0.5, model="m", reasons=None,
                payload={"discount_pct": 20, "code": "<SAVE20>"}, status="pending", priority=0,
                created_at=T0, not_before=T0, expires_at=T0 + timedelta(days=1), dedup_key="k",
                holdout=False, version=1)
    return Candidate(**{**base, **kw})


def renderer(tmp_path: Path, config: dict[str, Any] | None = None, **kw: Any) -> TemplateRenderer:
    cfg = DeliveryConfig.model_validate(
        {"templates": {"unsubscribe_url": "https://ceap.example.com/unsubscribe"}, **(config or {})})
    kw.setdefault("secret", SECRET)
    return TemplateRenderer(tmp_path / "templates", cfg, clock=lambda: T0, **kw)


@pytest.fixture
def offer(tmp_path: Path) -> TemplateRenderer:
    write(tmp_path / "templates", "offer", OFFER)
    return renderer(tmp_path)


# -- rendering ---------------------------------------------------------------------------------


def test_renders_each_channel_part(offer: TemplateRenderer) -> None:
    profile = Profile("default", "c0", attributes={"first_name": "Ann"})
    email = offer.render(candidate(), "email", profile)
    assert email.title == "20% off, Ann"
    assert email.body.startswith("Code <SAVE20> for c0.\nUnsubscribe: https://ceap.example.com/unsubscribe?token=v1.")
    assert email.html is not None and "<b>&lt;SAVE20&gt;</b>" in email.html       # autoescaped HTML
    sms = offer.render(candidate(), "sms", profile)
    assert (sms.title, sms.body) == ("", "Code <SAVE20>. Reply STOP to opt out.")  # text: not escaped
    push = offer.render(candidate(), "push", None)
    assert (push.title, push.body) == ("20% off", "Code <SAVE20>")
    slack = offer.render(candidate(), "slack", None)
    assert (slack.title, slack.body) == ("", "Code <SAVE20> (slack)")


def test_marketing_email_gets_one_click_unsubscribe_headers(offer: TemplateRenderer) -> None:
    email = offer.render(candidate(), "email", None)
    assert email.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = email.headers["List-Unsubscribe"]
    assert link.startswith("<https://ceap.example.com/unsubscribe?token=") and link.endswith(">")
    claims = verify(link[1:-1].split("token=")[1], secret=SECRET)
    assert (claims.customer_id, claims.channel, claims.topic) == ("c0", "email", "promo")
    news = candidate(payload={"discount_pct": 5, "code": "x", "topic": "news"})
    topical = offer.render(news, "email", None)
    assert verify(topical.headers["List-Unsubscribe"][1:-1].split("token=")[1], secret=SECRET).topic == "news"
    assert offer.render(candidate(category="security"), "email", None).headers == {}
    assert offer.render(candidate(), "sms", None).headers == {}


def test_marketing_email_without_an_unsubscribe_link_is_refused(tmp_path: Path, monkeypatch: Any) -> None:
    write(tmp_path / "templates", "offer", OFFER)
    monkeypatch.delenv(SECRET_ENV, raising=False)
    no_url = TemplateRenderer(tmp_path / "templates", DeliveryConfig(), clock=lambda: T0)
    with pytest.raises(TemplateError, match="unsubscribe_url"):
        no_url.render(candidate(), "email", None)
    no_key = renderer(tmp_path, secret=None)
    with pytest.raises(TemplateError, match=SECRET_ENV):
        no_key.render(candidate(), "email", None)
    assert no_key.render(candidate(category="transactional"), "sms", None).body.startswith("Code")
    relaxed = renderer(tmp_path, {"templates": {"require_unsubscribe": False}}, secret=None)
    with pytest.raises(TemplateError, match="'unsubscribe_url' is undefined"):
        relaxed.render(candidate(), "email", None)     # the template uses it: never a blank
    assert relaxed.render(candidate(), "sms", None).body.startswith("Code")


def test_titles_are_one_line_so_a_payload_cannot_inject_headers(offer: TemplateRenderer) -> None:
    evil = candidate(payload={"discount_pct": "5\r\nBcc: everyone@example.com\n", "code": "x"})
    assert offer.render(evil, "email", None).title == "5 Bcc: everyone@example.com % off, friend"
    assert offer.render(evil, "push", None).title == "5 Bcc: everyone@example.com % off"


def test_locale_falls_back_from_region_to_language_to_default(offer: TemplateRenderer) -> None:
    assert locale_chain("fr_CA") == ["fr-ca", "fr", None]
    quebec = Profile("default", "c0", locale="fr-CA")
    assert offer.render(candidate(), "sms", quebec).body == "Code <SAVE20> (Québec). STOP pour arrêter."
    assert offer.render(candidate(), "email", quebec).title == "20 % de réduction"      # from fr
    assert offer.render(candidate(), "push", quebec).title == "20% off"                 # default
    assert offer.render(candidate(), "sms", Profile("default", "c0", locale="FR")).body.endswith(
        "STOP pour arrêter.")
    assert offer.render(candidate(), "sms", Profile("default", "c0", locale="de-DE")).body.endswith(
        "Reply STOP to opt out.")


def test_missing_variable_is_an_error_not_a_blank(offer: TemplateRenderer) -> None:
    with pytest.raises(TemplateError, match=r"offer\.yaml: sms\.text: 'dict object' has no attribute 'code'"):
        offer.render(candidate(payload={"discount_pct": 1}), "sms", None)


def test_plain_fallback_without_a_template(offer: TemplateRenderer) -> None:
    out = offer.render(candidate(template=None, payload={"amount": 3}), "email", None)
    assert out.title == "Promo" and out.body.startswith("amount: 3\n\nUnsubscribe: https://")
    assert "List-Unsubscribe" in out.headers


def test_unknown_template_and_channel_part(offer: TemplateRenderer, tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="not found"):
        offer.render(candidate(template="nope"), "sms", None)
    with pytest.raises(TemplateError, match="invalid template name"):
        offer.render(candidate(template="../secrets"), "sms", None)
    write(tmp_path / "templates", "sms_only", "sms: {text: hi}\n")
    with pytest.raises(TemplateError, match="no part for channel 'push'"):
        offer.render(candidate(template="sms_only"), "push", None)


def test_template_files_are_checked(tmp_path: Path) -> None:
    folder = tmp_path / "templates"
    write(folder, "bad", """
        email: {subject: hi}
        sms: {text: hi, title: no}
        push: {title: 3, body: x}
        locales: {"not a locale!": {sms: {text: x}}}
    """)
    r = renderer(tmp_path)
    with pytest.raises(TemplateError) as err:
        r.render(candidate(template="bad"), "sms", None)
    text = str(err.value)
    for expected in ("email.text: required field is missing", "sms.title: unknown field for a sms part",
                     "push.title: expected text, got int", "locales.not a locale!: expected a locale"):
        assert expected in text


def test_channel_kinds_map_channel_names_to_parts(tmp_path: Path) -> None:
    write(tmp_path / "templates", "offer", OFFER)
    r = renderer(tmp_path, {"templates": {"unsubscribe_url": "https://u.example/x",
                                          "channel_kinds": {"ses": "email"}}})
    out = r.render(candidate(), "ses", None)
    assert out.title == "20% off, friend" and "List-Unsubscribe" in out.headers


def test_reloads_a_changed_file(tmp_path: Path) -> None:
    path = write(tmp_path / "templates", "t", "sms: {text: one}\n")
    r = renderer(tmp_path)
    assert r.render(candidate(template="t"), "sms", None).body == "one"
    path.write_text("sms: {text: two}\n")
    import os

    os.utime(path, ns=(10**18, 10**18))
    assert r.render(candidate(template="t"), "sms", None).body == "two"


# -- limits and the sandbox -------------------------------------------------------------------


def test_size_limits_per_channel(tmp_path: Path) -> None:
    write(tmp_path / "templates", "long", """
        sms: {text: "{{ 'x' * 1601 }}"}
        push: {title: "{{ 'x' * 101 }}", body: ok}
        inapp: {title: ok, body: "{{ 'x' * 5000 }}"}
    """)
    r = renderer(tmp_path)
    with pytest.raises(TemplateError, match="body is 1601 characters, over the 1600 limit"):
        r.render(candidate(template="long", category="security"), "sms", None)
    with pytest.raises(TemplateError, match="title is 101 characters, over the 100 limit"):
        r.render(candidate(template="long"), "push", None)
    assert len(r.render(candidate(template="long"), "inapp", None).body) == 5000
    tight = renderer(tmp_path, {"templates": {"limits": {"inapp": {"body": 100}}}})
    with pytest.raises(TemplateError, match="over the 100 limit"):
        tight.render(candidate(template="long"), "inapp", None)
    assert tight.config.limits["sms"].body == 1600          # the other defaults stay


def test_email_total_size_limit(tmp_path: Path) -> None:
    write(tmp_path / "templates", "big", """
        email:
          subject: hi
          text: "{{ 'x' * 200000 }} {{ unsubscribe_url }}"
          html: "{{ 'y' * 100000 }}"
    """)
    with pytest.raises(TemplateError, match=r"over the 262144 limit"):
        renderer(tmp_path).render(candidate(template="big"), "email", None)


@pytest.mark.parametrize("source", [
    "{{ candidate.__class__ }}",
    "{{ payload.__class__.__mro__ }}",
    "{{ ''.__class__.__subclasses__() }}",
    "{{ payload.update({'a': 1}) }}",
    "{{ payload['items'].append(1) if false else payload.clear() }}",
    "{{ now.__class__.__init__.__globals__ }}",
    "{{ cycler }}",
    "{{ lipsum(1000000) }}",
])
def test_the_sandbox_refuses_python_internals_and_mutation(tmp_path: Path, source: str) -> None:
    write(tmp_path / "templates", "evil", f"sms: {{text: {source!r}}}\n".replace("'{{", '"{{').replace(
        "}}'", '}}"'))
    with pytest.raises(TemplateError):
        renderer(tmp_path).render(candidate(template="evil"), "sms", None)


@pytest.mark.parametrize("source", [
    "{{ 'x' * 100000000 }}",
    "{{ 'x' | center(100000000) }}",
    "{{ '%0999999999d' | format(1) }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ ('x' * 1000).replace('', 'y' * 1000) }}",
    "{{ (['x' * 100000] * 1000) | join }}",
    "{{ 10 ** 100000000 }}",
    "{% set s = 'x' * 999999 %}{{ s ~ s }}",
    "{% for i in range(100000) %}{{ 'x' * 999 }}{% endfor %}",
    "{{ [1] | batch(100000000, 0) | list }}",
])
def test_rendering_is_size_limited(tmp_path: Path, source: str) -> None:
    write(tmp_path / "templates", "bomb", "sms:\n  text: |\n    " + source + "\n")
    with pytest.raises(TemplateError, match="refused|over"):
        renderer(tmp_path).render(candidate(template="bomb"), "sms", None)


@pytest.mark.skipif(sys.gettrace() is not None, reason="another tracer (coverage, debugger) is active")
def test_rendering_is_time_limited(tmp_path: Path) -> None:
    write(tmp_path / "templates", "slow", """
        sms:
          text: "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}done"
    """)
    r = renderer(tmp_path, {"templates": {"render_timeout": 0.2}})
    with pytest.raises(TemplateError, match="longer than 0.2 s"):
        r.render(candidate(template="slow"), "sms", None)
    assert sys.gettrace() is None
    write(tmp_path / "templates", "fast", "sms: {text: ok}\n")
    assert r.render(candidate(template="fast"), "sms", None).body == "ok"


# -- validation ---------------------------------------------------------------------------------


def test_check_source_names_unknown_variables_and_keys() -> None:
    known = Known(frozenset({"code", "items"}))
    assert check_source("{{ payload.code }} {{ profile.email }} {{ candidate.score }}", known) == []
    assert check_source("{{ payload.nope }}", known) == [
        "payload has no key 'nope' (the program's payload has: code, items)"]
    assert check_source("{{ payload['nope'] | default('') }}", known) == []
    assert check_source("{% if payload.maybe is defined %}{{ payload.maybe }}{% endif %}", known) == []
    assert check_source("{{ payload.nope.deeper | default('') }}", known) == [
        "payload has no key 'nope' (the program's payload has: code, items)"]
    assert check_source("{{ custmer }}", known)[0].startswith("unknown variable 'custmer'")
    assert check_source("{{ profile.first_name }}", known)[0].startswith("profile has no field 'first_name'")
    assert check_source("{{ profile.attributes.first_name }}", known) == []
    assert check_source("{{ candidate.scor }}", known) == ["candidate has no field 'scor'"]
    assert check_source("{% for i in payload.items %}{% endfor %}", known) == [
        "write payload['items']: payload.items is the mapping's method"]
    assert check_source("{% for k, v in payload.items() %}{{ k }}{% endfor %}", Known(frozenset())) == []
    assert check_source("{% for it in payload['items'] %}{{ it.name }}{% endfor %}", known) == []
    assert check_source("{% set x = 1 %}{{ x }}{{ range(3) | list }}", known) == []
    assert check_source("{{ payload.code ", known)[0].startswith("line 1: unexpected end")


def test_validate_program_templates_names_the_file_and_the_variable(tmp_path: Path) -> None:
    write(tmp_path / "templates", "offer", OFFER)
    program = parse_program({"name": "promo", "source": {"type": "csv", "path": "x.csv"},
                             "action": {"type": "offer", "channels": ["email", "sms", "webhook"],
                                        "template": "offer", "payload": {"discount_pct": 20},
                                        "payload_columns": ["customer_tier"]}})
    issues = validate_program_templates(program, tmp_path, DeliveryConfig())
    path = tmp_path / "templates" / "offer.yaml"
    assert ("action.template", f"{path}: email.text: payload has no key 'code' (the program's payload "
                               "has: customer_tier, discount_pct)") in issues
    assert all(field == "action.template" and str(path) in msg for field, msg in issues)
    assert any("locales.fr.sms.text: payload has no key 'code'" in msg for _, msg in issues)
    good = parse_program({"name": "promo", "source": {"type": "csv", "path": "x.csv"},
                          "action": {"type": "offer", "channels": ["email", "sms", "webhook"],
                                     "template": "offer", "payload": {"discount_pct": 20, "code": "A"}}})
    assert validate_program_templates(good, tmp_path, DeliveryConfig()) == []
    write(tmp_path / "templates", "mail_only", "email:\n  subject: Hi\n  text: \"{{ unsubscribe_url }}\"\n")
    escalating = parse_program({"name": "promo", "source": {"type": "csv", "path": "x.csv"},
                                "action": {"type": "offer", "channels": ["email"], "template": "mail_only",
                                           "escalation": [{"after": "3d", "channels": ["sms"]}]}})
    mail_only = tmp_path / "templates" / "mail_only.yaml"
    assert validate_program_templates(escalating, tmp_path, DeliveryConfig()) == [
        ("action.template", f"{mail_only}: no part for channel 'sms' (add 'sms:' or 'default:')")]
    missing = parse_program({"name": "promo", "source": {"type": "csv", "path": "x.csv"},
                             "action": {"type": "offer", "channels": ["email"], "template": "gone"}})
    [(_, message)] = validate_program_templates(missing, tmp_path, DeliveryConfig())
    assert message.startswith("template 'gone' not found")


def test_validation_wants_channel_parts_and_a_visible_unsubscribe_link(tmp_path: Path) -> None:
    folder = tmp_path / "templates"
    write(folder, "bare", """
        email: {subject: hi, text: "no link here"}
    """)
    known = Known(frozenset())
    problems = validate_template(folder, "bare", known, ["email", "push"])
    assert any("no part for channel 'push'" in p for p in problems)
    assert any("marketing e-mail must show the unsubscribe link" in p for p in problems)
    assert validate_template(folder, "bare", Known(frozenset(), "security"), ["email"]) == []
    write(folder, "broken", "sms: {text: '{% if %}'}\n")
    [problem] = validate_template(folder, "broken", known, ["sms"])
    assert problem.startswith(f"{folder / 'broken.yaml'}: sms.text: line 1:")


SAMPLE_COLUMNS = {"plan": "pro", "lifetime_value": 1200.0, "engagement_drop": 0.5, "high_value": True,
                  "contract": "month-to-month", "tenure": 14, "monthly_charges": 70.5,
                  "product_id": "sku-1", "category": "shoes", "price": 49.9, "liked": 12,
                  "mean_rating": 4.1, "days_since_churn": 40, "churn_reason": "price",
                  "device_id": "d-9", "ip_type": "datacenter", "home_country": "FR",
                  "login_at": "2026-11-25 03:12",
                  # review_request, late_order_credit, appointment_reminder*, kyc_reminder,
                  # cross_sell, community_engagement, user_generated_content
                  # comment_replies (a digest: its items carry these)
                  "author": "member7", "thread": "thread-3",
                  "order_id": "O0000042", "days_since_delivery": 5, "days_late": 7, "carrier": "DHL",
                  "promised_at": "2026-11-18", "booking_id": "B0000042", "service": "physiotherapy",
                  "location": "Riverside", "appointment_at": "2026-11-26 14:30:00", "hours_until": 6.5,
                  "kyc_deadline": "2026-12-02", "kyc_status": "documents_requested",
                  "documents_missing": 1, "account_type": "personal",
                  "product_name": "Mirrorless camera M50",
                  "recommendations": [{"product_id": "P-LENS", "name": "50 mm f/1.8 prime lens",
                                       "price": 249.0, "affinity": 0.45}],
                  "favourite_topic": "coffee", "comments_30d": 12,
                  "trending": [{"title": "Dialling in a new grinder",
                                "url": "https://community.shop.example/t/dialling-in", "replies": 157}],
                  # the real-time programs (1, 4, 5, 6, 9, 11, 13)
                  "action_taken": "notice", "app_version": "5.2.1", "cart_id": "cart-42",
                  "cart_value": 75.0, "content_id": "m-17", "country": "RO", "crashes_24h": 4,
                  "error_code": "E_SYNC", "event_ts": "2026-11-25 10:00:00", "finished_7d": 3,
                  "item_count": 2, "item_id": "I1", "item_name": "Trail shoes", "lookup_source": "wishlist",
                  "next_genre": "drama", "next_item_id": "m-18", "next_title": "The Sequel",
                  "offence_level": 2, "phone_before_change": "+15550001111", "platform": "ios",
                  "policy": "harassment", "restriction_days": 7, "seconds_since_password_change": 120,
                  "session_id": "s-1", "severity": "high", "title": "The Original", "top_item": "m-18",
                  "violations_30d": 2, "to_phone": "+15550001111"}


def test_shipped_templates_validate_and_render_for_the_demo_programs(monkeypatch: Any) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    programs = load_programs(ROOT / "programs")
    assert programs
    cfg = DeliveryConfig.model_validate({"templates": {"unsubscribe_url": "https://u.example/unsub"}})
    r = TemplateRenderer.from_config(cfg, ROOT)
    for program in programs:
        assert program.action.template, program.name
        assert validate_program_templates(program, ROOT, DeliveryConfig()) == [], program.name
        action = program.action
        payload = {**{c: SAMPLE_COLUMNS[c] for c in action.payload_columns}, **action.payload}
        if action.items:
            payload["items"] = [{"item": "1", "score": 0.9, "name": "Alien"}, {"item": "2", "score": 0.8}]
        if action.digest is not None:  # a digest message: its items carry the payload columns
            item = {"payload": payload, "context": {}, "subject_id": None, "program": program.name,
                    "created_at": "2026-11-25T10:00:00+00:00", "score": 0.5, "candidate_id": 1}
            payload = {**action.payload, "digest": {
                "key": program.name, "count": 4, "items": [item] * 3, "more": 1,
                "window_start": "2026-11-25T10:00:00+00:00", "window_end": "2026-11-25T11:00:00+00:00"}}
        c = candidate(program=program.name, template=action.template, category=action.category,
                      channels=list(action.channels), payload=payload)
        for locale in (None, "fr-CA"):
            for channel in {*action.channels, "inapp", "push"}:
                out = r.render(c, channel, Profile("default", "c0", locale=locale))
                assert out.body and "None" not in out.body, (program.name, channel)


# -- preview and dispatch ---------------------------------------------------------------------


PROGRAM = """
name: promo
priority: 50
source: {type: csv, path: data/x.csv}
action:
  type: offer
  channels: [email, sms]
  template: offer
  payload: {discount_pct: 20}
  payload_columns: [code]
"""


def test_preview_renders_what_the_customer_would_get(tmp_path: Path, store: Store) -> None:
    write(tmp_path / "templates", "offer", OFFER)
    write(tmp_path / "programs", "promo", PROGRAM)
    upsert_profiles(store, pa.table({"customer_id": ["c0"], "email": ["c0@example.com"],
                                     "locale": ["fr-FR"], "first_name": ["Zoé"]}), "default")
    sample = preview(tmp_path, "promo", "c0", store)
    assert set(sample) == {"email", "sms"}
    assert sample["sms"].body == "Code <code>. STOP pour arrêter."          # no candidate: placeholders
    assert "unsubscribe.invalid" in sample["email"].body                    # no URL configured
    table = make_candidates(1, now=T0, program="promo", channels=["email", "sms"], template="offer",
                            payload={"discount_pct": 20, "code": "REAL"}, customer_id="c0")
    store.write_run(RunRecord("r1", "default", "promo", "succeeded", T0), table)
    real = preview(tmp_path, "promo", "c0", store)
    assert real["sms"].body == "Code REAL. STOP pour arrêter."
    with pytest.raises(TemplateError, match="program 'nope' not found"):
        preview(tmp_path, "nope", "c0", store)


class RecConfig(ChannelConfig):
    type: Literal["rec"] = "rec"


class EmailRec(Channel[RecConfig]):
    config_model: ClassVar[type[ChannelConfig]] = RecConfig
    address: ClassVar[str | None] = "email"

    def __init__(self) -> None:
        super().__init__(RecConfig())
        self.accepted: list[Message] = []

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        self.accepted.extend(messages)
        return [SendResult(m.idempotency_key, "sent") for m in messages]


def test_dispatcher_renders_at_send_time(tmp_path: Path, store: Store) -> None:
    write(tmp_path / "templates", "offer", OFFER)
    table = make_candidates(2, now=T0, program="promo", channels=["email"], template="offer",
                            category="marketing", customer_id=lambda i: f"c{i}",
                            payload=lambda i: {"discount_pct": 20, "code": f"C{i}"} if i == 0
                            else {"discount_pct": 20})
    store.write_run(RunRecord("r1", "default", "promo", "succeeded", T0), table)
    upsert_profiles(store, pa.table({"customer_id": ["c0", "c1"],
                                     "email": ["c0@example.com", "c1@example.com"]}), "default")
    email = EmailRec()
    stats = Dispatcher(store, {"email": email}, renderer=renderer(tmp_path), clock=lambda: T0).run()
    assert (stats.sent, stats.dead) == (1, 1)
    [m] = email.accepted
    assert m.title == "20% off, friend" and m.html and "C0" in m.html
    assert m.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    with store.tx() as tx:
        [err] = [r[0] for r in tx.execute("SELECT last_error FROM deliveries WHERE status = 'dead'")]
    assert err.startswith("template: ") and "has no attribute 'code'" in err


def test_every_package_name_stays_callable_after_its_submodules_are_imported() -> None:
    """Importing a submodule binds its name on the package: none may shadow a lazy name."""
    import importlib
    import pkgutil
    import subprocess

    import ceap.delivery.templates as package

    modules = [m.name for m in pkgutil.iter_modules(package.__path__)]
    clash = sorted(set(modules) & set(package.__all__))
    assert clash == [], f"submodules named like a package attribute: {clash}"
    code = ("import importlib, pkgutil, ceap.delivery.templates as p\n"
            "for m in pkgutil.iter_modules(p.__path__): importlib.import_module(f'{p.__name__}.{m.name}')\n"
            "from ceap.delivery.templates import preview\n"
            "assert callable(preview), preview\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert importlib.import_module("ceap.delivery.templates").preview.__name__ == "preview"
