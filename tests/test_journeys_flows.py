"""Journeys end to end: events through the real worker enter customers, ``tick`` moves them
on a fake clock, the real dispatcher (consent, quiet hours, caps) sends their messages to a
local SMTP server and a local stand-in for Twilio, and engagement and goal events move them
again. Three journeys: the e-mail -> SMS fallback, an onboarding series, a cart series."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ceap.store import Store
from tests.journey_helpers import JourneyProject, events_program, smtpd, twilio  # noqa: F401
from tests.provider_server import ProviderServer
from tests.test_channel_email import Smtpd

FALLBACK = {
    "exit_on": ["clicked"],
    "steps": [
        {"id": "email", "send": {"channels": ["email"]}},
        {"id": "wait_open", "wait_for": {"events": {"opened": "end"}, "within": "24h",
                                         "timeout": "sms"}},
        {"id": "sms", "send": {"channels": ["sms"]}},
    ],
}


@pytest.fixture
def project(tmp_path: Path, store: Store, smtpd: Smtpd, twilio: ProviderServer  # noqa: F811
            ) -> Iterator[JourneyProject]:
    found = JourneyProject(tmp_path, store, smtpd, twilio)
    yield found
    found.close()


def test_email_then_sms_when_not_opened_within_24h_and_stop_on_click(project: JourneyProject) -> None:
    p = project
    p.write(events_program("trial_nudge", "trial_started", FALLBACK))
    p.customers("opens", "ignores", "clicks")
    p.customers("no_sms_consent", sms_consent=False)
    p.events(*[(f"t-{c}", c, "trial_started", {}) for c in ("opens", "ignores", "clicks", "no_sms_consent")])
    stats = p.step()
    assert (stats.entered, stats.messages) == (4, 4)
    assert {c: p.sent(c) for c in ("opens", "ignores", "clicks", "no_sms_consent")} == {
        "opens": ["email"], "ignores": ["email"], "clicks": ["email"], "no_sms_consent": ["email"]}
    assert len(p.smtpd.handler.received) == 4
    # within the day: one opens the e-mail, one clicks in it (client-reported engagements)
    p.later(hours=2)
    p.events(("o1", "opens", "opened", {"delivery_id": p.delivery_id("opens", "email")}),
             ("k1", "clicks", "clicked", {"delivery_id": p.delivery_id("clicks", "email"),
                                          "url": "https://shop.example/"}))
    p.step()
    assert p.entries("opens", "trial_nudge")[0].status == "completed"
    clicked = p.entries("clicks", "trial_nudge")[0]
    assert (clicked.status, clicked.reason) == ("exited", "exit_on clicked")
    # not yet 24 h: the others still wait, nothing more is sent
    p.later(hours=21)
    assert p.step().messages == 0
    assert p.twilio.sent == []  # type: ignore[attr-defined]
    # past 24 h: the SMS goes to the one who did not open, through the consent policy
    p.later(hours=2)
    assert p.step().messages == 2
    assert p.twilio.sent == [p.phone("ignores")]  # type: ignore[attr-defined]
    assert p.sent("ignores") == ["email", "sms"]
    sms = [m for m in p.messages("trial_nudge")
           if m.customer_id == "no_sms_consent" and m.channels == ["sms"]]
    assert [m.status for m in sms] == ["suppressed"] and "consent" in str(sms[0].status_reason)
    ignored = p.entries("ignores", "trial_nudge")[0]
    assert (ignored.status, [row["what"] for row in ignored.log]) == (
        "completed", ["entered", "sent", "timeout", "sent", "completed"])
    # ticking again changes nothing and sends nothing
    p.later(days=3)
    again = p.step()
    assert (again.moved, again.messages) == (0, 0)
    assert len(p.smtpd.handler.received) == 4 and len(p.twilio.sent) == 1  # type: ignore[attr-defined]
    assert len(p.messages("trial_nudge")) == 6


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_onboarding_series_exits_on_activation(project: JourneyProject) -> None:
    p = project
    p.write(events_program("onboarding", "signed_up", {
        "exit_on": "activated",
        "steps": [
            {"id": "welcome", "send": {"payload": {"part": 1}}},
            {"id": "pause1", "wait_for": {"within": "1d"}},
            {"id": "tips", "send": {"payload": {"part": 2}}},
            {"id": "pause2", "wait_for": {"within": "2d"}},
            {"id": "last_call", "send": {"payload": {"part": 3}}},
        ]}))
    p.customers("early", "late", "never")
    p.events(*[(f"s-{c}", c, "signed_up", {}) for c in ("early", "late", "never")])
    p.step()
    p.later(hours=12)
    p.events(("a-early", "early", "activated", {}))
    p.step()
    p.later(hours=13)  # past the first day
    p.step()
    p.later(days=1)
    p.events(("a-late", "late", "activated", {}))
    p.later(days=1, hours=1)  # past the second pause
    p.step()
    parts = {c: [m.payload["part"] for m in p.messages("onboarding") if m.customer_id == c]
             for c in ("early", "late", "never")}
    assert parts == {"early": [1], "late": [1, 2], "never": [1, 2, 3]}
    assert [p.sent(c) for c in ("early", "late", "never")] == [["email"], ["email"] * 2, ["email"] * 3]
    reasons = {c: (e.status, e.reason) for c in parts for e in p.entries(c, "onboarding")}
    assert reasons == {"early": ("exited", "exit_on activated"), "late": ("exited", "exit_on activated"),
                       "never": ("completed", "completed")}
    # re-entry is never by default: signing up again enters no one
    p.events(("s2-never", "never", "signed_up", {}))
    stats = p.step()
    assert (stats.entered, stats.refused, stats.messages) == (0, 1, 0)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_cart_series_branches_on_value_and_exits_on_purchase(project: JourneyProject) -> None:
    p = project
    p.write(events_program("cart_series", "cart_updated", {
        "exit_on": ["purchase"],
        "reentry": "7d",
        "steps": [
            {"id": "big", "branch": {"if": "cart_value >= 100", "then": "vip", "else": "reminder"}},
            {"id": "vip", "send": {"payload": {"offer": "free shipping"}}, "next": "wait"},
            {"id": "reminder", "send": {"payload": {"offer": "none"}}},
            {"id": "wait", "wait_for": {"within": "1d"}},
            {"id": "nudge", "send": {"channels": ["sms"]}},
        ]}, source={"columns": {"cart_value": "float"}, "context": ["cart_value"]}))
    p.customers("big_buyer", "small", "big_idle")
    p.events(("c1", "big_buyer", "cart_updated", {"cart_value": 250}),
             ("c2", "small", "cart_updated", {"cart_value": 20}),
             ("c3", "big_idle", "cart_updated", {"cart_value": 120}))
    p.step()
    offers = {m.customer_id: m.payload["offer"] for m in p.messages("cart_series")}
    assert offers == {"big_buyer": "free shipping", "small": "none", "big_idle": "free shipping"}
    p.later(hours=3)
    p.events(("b1", "big_buyer", "purchase", {"amount": 250}))
    p.later(hours=22)
    p.step()
    assert [p.sent(c) for c in ("big_buyer", "small", "big_idle")] == [
        ["email"], ["email", "sms"], ["email", "sms"]]
    assert p.entries("big_buyer", "cart_series")[0].reason == "exit_on purchase"
    # back within 7 days: refused; after 7 days: a second entry, with its own messages
    p.events(("c4", "small", "cart_updated", {"cart_value": 30}))
    assert p.step().refused == 1
    p.later(days=7)
    p.events(("c5", "small", "cart_updated", {"cart_value": 30}))
    stats = p.step()
    assert (stats.entered, stats.messages) == (1, 1)
    assert [e.status for e in p.entries("small", "cart_series")] == ["active", "completed"]
    assert p.sent("small") == ["email", "sms", "email"]
