"""Delivery policies: consent per channel and topic, unsubscribe links, SMS STOP,
quiet hours, frequency caps with arbitration, suppression lists, and the
transactional/security bypass; driven through the Dispatcher on both stores."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest
from pydantic import ValidationError

from ceap.channels.base import Channel, ChannelConfig, Message, SendResult
from ceap.delivery.consent_store import (
    ALL_TOPICS,
    add_suppression,
    grant_consent,
    handle_inbound_sms,
    list_consent,
    list_suppressions,
    normalize_address,
    remove_suppression,
    revoke_consent,
    sms_keyword,
)
from ceap.delivery.delivery_config import DeliveryConfig, SendingHours
from ceap.delivery.dispatcher import Dispatcher
from ceap.delivery.model import Decision
from ceap.delivery.policies import (
    ConsentPolicy,
    FrequencyCaps,
    QuietHours,
    SuppressionList,
    default_policies,
    topic_of,
)
from ceap.delivery.policies.quiet_hours import next_opening
from ceap.delivery.policy import PolicyContext
from ceap.delivery.profiles import upsert_profiles
from ceap.delivery.unsubscribe import (
    SECRET_ENV,
    UnsubscribeError,
    honour_unsubscribe,
    make_link,
    make_token,
    unsubscribe_response,
    verify,
)
from ceap.model import Candidate, CandidateQuery, RunRecord
from ceap.store import Store
from ceap.testing.doubles import FakeClock, make_candidates

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SECRET = "test-signing-secret-0123456789"


class RecConfig(ChannelConfig):
    type: Literal["rec"] = "rec"


class Recorder(Channel[RecConfig]):
    """Accepts everything and records it; ``address`` set per subclass."""

    config_model: ClassVar[type[ChannelConfig]] = RecConfig

    def __init__(self, config: RecConfig | None = None, context: Any = None):
        super().__init__(config or RecConfig(), context)
        self.accepted: list[Message] = []

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        self.accepted.extend(messages)
        return [SendResult(m.idempotency_key, "sent", provider_id=f"p{len(self.accepted)}")
                for m in messages]


class EmailRec(Recorder):
    address: ClassVar[str | None] = "email"


class SmsRec(Recorder):
    address: ClassVar[str | None] = "phone"


class InboxRec(Recorder):
    address: ClassVar[str | None] = None


_runs = iter(range(1_000_000))


def seed(store: Store, n: int = 1, *, program: str = "promo", channels: list[str] | None = None,
         start: datetime = T0, **kw: Any) -> None:
    """``n`` candidates of ``program`` for customers c0..c(n-1)."""
    table = make_candidates(n, now=start, channels=channels or ["email"], program=program,
                            customer_id=lambda i: f"c{i}", category=kw.pop("category", "marketing"),
                            dedup_key=lambda i: f"{program}-{i}-{next(_runs)}", **kw)
    store.write_run(RunRecord(f"r{next(_runs)}", "default", program, "succeeded", start), table)


def profiles(store: Store, n: int = 1, **columns: list[Any]) -> None:
    data = {"customer_id": [f"c{i}" for i in range(n)],
            "email": [f"C{i}@Example.com" for i in range(n)],
            "phone": [f"+1 (555) 000-000{i}" for i in range(n)], **columns}
    upsert_profiles(store, pa.table(data), "default")


def channels() -> dict[str, Recorder]:
    return {"email": EmailRec(), "sms": SmsRec(), "inapp": InboxRec()}


def dispatcher(store: Store, chans: dict[str, Recorder], clock: FakeClock,
               config: dict[str, Any] | None = None, **kw: Any) -> Dispatcher:
    return Dispatcher(store, chans, policies=default_policies(config), clock=clock, **kw)  # type: ignore[arg-type]


def rows(store: Store) -> list[tuple[str, str, str | None]]:
    with store.tx() as tx:
        return [tuple(r) for r in tx.execute(
            "SELECT program, status, status_reason FROM candidates ORDER BY program, id").fetchall()]


def candidates(store: Store) -> list[Candidate]:
    return store.candidates(CandidateQuery(limit=1000, include_expired=True))


# -- consent ---------------------------------------------------------------------------


def test_revoked_topic_drops_the_channel_and_the_fallback_proceeds(store: Store) -> None:
    seed(store, 2, channels=["email", "inapp"])
    profiles(store, 2)
    revoke_consent(store, "default", "c0", "email", "promo", source="test")
    chans = channels()
    dispatcher(store, chans, FakeClock(T0)).run()
    assert [m.customer_id for m in chans["email"].accepted] == ["c1"]
    assert [m.customer_id for m in chans["inapp"].accepted] == ["c0"]
    assert {c.status for c in candidates(store)} == {"sent"}


def test_topic_comes_from_the_payload_when_it_names_one(store: Store) -> None:
    seed(store, 2, payload={"topic": "newsletter"})
    profiles(store, 2)
    revoke_consent(store, "default", "c0", "email", "newsletter")
    revoke_consent(store, "default", "c1", "email", "promo")  # the program's name: not the topic here
    chans = channels()
    dispatcher(store, chans, FakeClock(T0)).run()
    assert [m.customer_id for m in chans["email"].accepted] == ["c1"]


def test_revoked_everywhere_is_suppressed_with_the_policy(store: Store) -> None:
    seed(store, 1, channels=["email", "sms"])
    profiles(store, 1)
    revoke_consent(store, "default", "c0", "email")      # every topic
    stats = dispatcher(store, channels(), FakeClock(T0.replace(hour=15))).run()  # 10:00 in New York
    assert stats.suppressed == 1
    [(_, status, reason)] = rows(store)
    assert status == "suppressed" and reason.startswith("consent:sms")
    assert "email consent revoked for topic promo" in reason and "sms: no opt-in" in reason


def test_exact_topic_beats_the_channel_wide_row(store: Store) -> None:
    seed(store, 1, channels=["sms"])
    profiles(store, 1)
    grant_consent(store, "default", "c0", "sms", ALL_TOPICS)
    revoke_consent(store, "default", "c0", "sms", "promo")
    chans = channels()
    dispatcher(store, chans, FakeClock(T0)).run()
    assert chans["sms"].accepted == []
    grant_consent(store, "default", "c0", "sms", "promo")
    revoke_consent(store, "default", "c0", "sms", ALL_TOPICS)  # cascades to every topic row
    assert {(r.topic, r.granted) for r in list_consent(store, "default", "c0")} == {
        ("*", False), ("promo", False)}


def test_sms_marketing_needs_opt_in_and_transactional_does_not(store: Store) -> None:
    seed(store, 1, program="promo", channels=["sms"])
    seed(store, 1, program="receipt", channels=["sms"], category="transactional")
    profiles(store, 1)
    chans = channels()
    dispatcher(store, chans, FakeClock(T0)).run()
    assert [m.program for m in chans["sms"].accepted] == ["receipt"]
    assert rows(store)[0][1:] == ("suppressed", "consent:sms: sms: no opt-in for topic promo")
    grant_consent(store, "default", "c0", "sms", source="signup form")
    seed(store, 1, program="promo", channels=["sms"])
    dispatcher(store, chans, FakeClock(T0)).run()
    assert [m.program for m in chans["sms"].accepted] == ["receipt", "promo"]
    assert chans["sms"].accepted[-1].to == "+1 (555) 000-0000"


def test_consent_modes_are_configurable() -> None:
    cfg = DeliveryConfig.model_validate({"consent": {"channels": {"email": {"marketing": "opt_in"}}}})
    assert cfg.consent.modes("email").mode("marketing") == "opt_in"
    assert cfg.consent.modes("sms").mode("marketing") == "opt_in"        # defaults kept
    assert cfg.consent.modes("email").mode("security") == "exempt"
    assert cfg.consent.modes("slack").mode("marketing") == "opt_out"     # the default row
    with pytest.raises(ValidationError):
        DeliveryConfig.model_validate({"consent": {"channels": {"email": {"marketing": "maybe"}}}})


# -- unsubscribe links -------------------------------------------------------------------


def test_unsubscribe_link_round_trip_revokes_at_once(store: Store, monkeypatch: Any) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    seed(store, 1, channels=["email", "inapp"])
    profiles(store, 1)
    link = make_link("https://ceap.example.com/unsubscribe", "default", "c0", "email", "promo")
    assert link.startswith("https://ceap.example.com/unsubscribe?token=v1.")
    token = link.split("token=", 1)[1]
    claims = verify(token)
    assert (claims.tenant_id, claims.customer_id, claims.channel, claims.topic) == (
        "default", "c0", "email", "promo")
    honour_unsubscribe(store, token)
    [record] = list_consent(store, "default", "c0")
    assert (record.channel, record.topic, record.granted, record.source) == (
        "email", "promo", False, "unsubscribe_link")
    chans = channels()
    dispatcher(store, chans, FakeClock(T0)).run()
    assert chans["email"].accepted == [] and len(chans["inapp"].accepted) == 1


def test_tampered_or_foreign_tokens_are_rejected(monkeypatch: Any) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    token = make_token("default", "c0", "email", "promo")
    version, body, sig = token.split(".")
    forged_body = make_token("default", "c1", "email", "promo").split(".")[1]
    for bad in (f"{version}.{forged_body}.{sig}",           # someone else's claims
                f"{version}.{body}.{sig[:-2]}AA",           # a changed signature
                f"v2.{body}.{sig}", "garbage", "", f"{version}.{body}"):
        with pytest.raises(UnsubscribeError):
            verify(bad)
    other = make_token("default", "c0", "email", "promo", secret="another-secret-entirely")
    with pytest.raises(UnsubscribeError, match="signature"):
        verify(other)
    with pytest.raises(UnsubscribeError, match="expired"):
        verify(token, max_age=timedelta(days=1), now=datetime.now(UTC) + timedelta(days=2))


def test_signing_key_comes_from_the_environment_and_rotates(monkeypatch: Any) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    with pytest.raises(UnsubscribeError, match=SECRET_ENV):
        make_token("default", "c0", "email")
    monkeypatch.setenv(SECRET_ENV, "short")
    with pytest.raises(UnsubscribeError, match="at least"):
        make_token("default", "c0", "email")
    monkeypatch.setenv(SECRET_ENV, SECRET)
    old = make_token("default", "c0", "email")
    monkeypatch.setenv(SECRET_ENV, "the-new-signing-secret-abcdef")
    monkeypatch.setenv("CEAP_SIGNING_SECRET_PREVIOUS", SECRET)
    assert verify(old).customer_id == "c0"


def test_endpoint_revokes_on_post_only(store: Store, monkeypatch: Any) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    token = make_token("default", "c0", "email", ALL_TOPICS)
    page = unsubscribe_response(store, "GET", token)
    assert page.status == 200 and 'method="post"' in page.body
    assert list_consent(store, "default", "c0") == []       # a link scanner's GET changes nothing
    done = unsubscribe_response(store, "POST", token)
    assert done.status == 200 and "no longer receive all messages by email" in done.body
    assert [(r.topic, r.granted) for r in list_consent(store, "default", "c0")] == [("*", False)]
    assert unsubscribe_response(store, "POST", token + "x").status == 400
    assert unsubscribe_response(store, "POST", None).status == 400


# -- SMS keywords ------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["STOP", "stop", " Stop. ", "quit", "End", "REVOKE", "opt out",
                                  "Opt-Out", "cancel", "UNSUBSCRIBE", "stop all"])
def test_stop_keywords_are_recognised(text: str) -> None:
    assert sms_keyword(text) is not None and sms_keyword(text) not in ("START", "HELP")


@pytest.mark.parametrize("text", ["please stop sending", "STOPPED", "yes", "", "end of story"])
def test_other_messages_are_not_keywords(text: str) -> None:
    assert sms_keyword(text) is None


def test_stop_revokes_sms_consent_and_start_restores_it(store: Store) -> None:
    profiles(store, 2)
    grant_consent(store, "default", "c0", "sms")
    grant_consent(store, "default", "c0", "sms", "promo")
    result = handle_inbound_sms(store, "default", "+15550000000", "Stop")
    assert (result.action, result.customers) == ("stop", ("c0",))
    assert {(r.topic, r.granted) for r in list_consent(store, "default", "c0")} == {
        ("*", False), ("promo", False)}
    [supp] = list_suppressions(store, "default", "sms")
    assert (supp.address, supp.reason) == ("15550000000", "sms_stop")
    seed(store, 1, channels=["sms"], category="transactional")
    chans = channels()
    dispatcher(store, chans, FakeClock(T0)).run()
    assert chans["sms"].accepted == []        # after STOP nothing goes to the number
    assert handle_inbound_sms(store, "default", "+15550000000", "START").action == "start"
    assert {(r.topic, r.granted) for r in list_consent(store, "default", "c0")} == {
        ("*", True), ("promo", True)}
    assert list_suppressions(store, "default", "sms") == []
    assert handle_inbound_sms(store, "default", "+15550000000", "help").action == "help"
    assert handle_inbound_sms(store, "default", "+15550000000", "thanks!").action == "none"


def test_stop_from_an_unknown_number_is_still_honoured(store: Store) -> None:
    result = handle_inbound_sms(store, "default", "+44 7700 900123", "UNSUBSCRIBE")
    assert result.action == "stop" and result.customers == ()
    profiles(store, 1, phone=["447700900123"])       # stored without the +
    grant_consent(store, "default", "c0", "sms")
    seed(store, 1, channels=["sms"])
    chans = channels()
    dispatcher(store, chans, FakeClock(T0)).run()
    assert chans["sms"].accepted == []
    assert rows(store)[0][1:] == ("suppressed", "suppression:sms: sms address suppressed (sms_stop)")


# -- quiet hours ---------------------------------------------------------------------------


def test_sms_at_night_is_deferred_to_the_morning_in_the_customers_zone(store: Store) -> None:
    night = datetime(2026, 11, 26, 4, 0, tzinfo=UTC)      # 23:00 on the 25th in New York
    seed(store, 1, channels=["sms"])
    profiles(store, 1, timezone=["America/New_York"])
    grant_consent(store, "default", "c0", "sms")
    chans = channels()
    clock = FakeClock(night)
    d = dispatcher(store, chans, clock)
    stats = d.run()
    assert (stats.deferred, stats.sent, chans["sms"].accepted) == (1, 0, [])
    [c] = candidates(store)
    morning = datetime(2026, 11, 26, 8, 0, tzinfo=ZoneInfo("America/New_York"))
    assert c.status == "pending" and c.not_before == morning
    assert rows(store)[0][2] == "quiet_hours:sms deferred to 2026-11-26 08:00 America/New_York"
    clock.now = morning - timedelta(minutes=1)
    assert d.run().claimed == 0
    clock.now = morning
    assert d.run().sent == 1 and len(chans["sms"].accepted) == 1


def test_email_is_not_subject_to_sms_quiet_hours(store: Store) -> None:
    seed(store, 1, channels=["email"])
    profiles(store, 1, timezone=["America/New_York"])
    chans = channels()
    assert dispatcher(store, chans, FakeClock(datetime(2026, 11, 26, 4, 0, tzinfo=UTC))).run().sent == 1


def test_security_alert_bypasses_quiet_hours_and_caps(store: Store) -> None:
    night = datetime(2026, 11, 26, 4, 0, tzinfo=UTC)
    profiles(store, 1, timezone=["America/New_York"])
    grant_consent(store, "default", "c0", "sms")
    config = {"caps": {"per_customer": [{"max": 1, "window": "1d"}]}}
    seed(store, 1, program="promo", channels=["sms"], start=T0)
    chans = channels()
    dispatcher(store, chans, FakeClock(T0.replace(hour=15)), config).run()     # 10:00 NY: sent
    seed(store, 1, program="fraud_alert", channels=["sms"], category="security", start=night)
    seed(store, 1, program="promo2", channels=["sms"], start=night)
    stats = dispatcher(store, chans, FakeClock(night), config).run()
    assert [m.program for m in chans["sms"].accepted] == ["promo", "fraud_alert"]
    assert stats.deferred == 1     # the marketing one waits for the morning (then meets the cap)


def test_quiet_fallback_channel_is_dropped_when_the_first_is_open(store: Store) -> None:
    seed(store, 1, channels=["email", "sms"])
    profiles(store, 1, timezone=["Europe/Paris"])
    grant_consent(store, "default", "c0", "sms")
    chans = channels()
    dispatcher(store, chans, FakeClock(datetime(2026, 11, 25, 22, 30, tzinfo=UTC))).run()
    assert len(chans["email"].accepted) == 1
    assert "fallback sms dropped" in rows(store)[0][2]


def test_next_opening_handles_windows_zones_and_dst() -> None:
    ny = ZoneInfo("America/New_York")
    hours = SendingHours()
    assert next_opening(datetime(2026, 11, 25, 15, 0, tzinfo=UTC), hours, ny) is None  # 10:00
    early = next_opening(datetime(2026, 11, 25, 11, 0, tzinfo=UTC), hours, ny)         # 06:00
    assert early == datetime(2026, 11, 25, 13, 0, tzinfo=UTC)
    late = next_opening(datetime(2026, 3, 8, 2, 30, tzinfo=UTC), hours, ny)            # 21:30 EST
    assert late == datetime(2026, 3, 8, 12, 0, tzinfo=UTC)                              # 08:00 EDT
    wrap = SendingHours(send_from="20:00", send_until="02:00")
    assert next_opening(datetime(2026, 1, 1, 1, 0, tzinfo=UTC), wrap, ZoneInfo("UTC")) is None
    assert next_opening(datetime(2026, 1, 1, 12, 0, tzinfo=UTC), wrap, ZoneInfo("UTC")) == \
        datetime(2026, 1, 1, 20, 0, tzinfo=UTC)
    with pytest.raises(ValidationError):
        SendingHours(send_from="25:00")


def test_unknown_time_zone_falls_back_to_the_default(store: Store) -> None:
    seed(store, 1, channels=["sms"])
    profiles(store, 1, timezone=["Mars/Olympus"])
    grant_consent(store, "default", "c0", "sms")
    config = {"default_timezone": "Asia/Tokyo"}
    stats = dispatcher(store, channels(), FakeClock(datetime(2026, 11, 25, 14, 0, tzinfo=UTC)), config).run()
    assert stats.deferred == 1      # 23:00 in Tokyo
    [c] = candidates(store)
    assert c.not_before == datetime(2026, 11, 25, 23, 0, tzinfo=UTC)   # 08:00 in Tokyo


# -- frequency caps and arbitration ---------------------------------------------------------


def test_cap_arbitration_picks_priority_then_score_and_names_the_winner(store: Store) -> None:
    profiles(store, 1)
    seed(store, 1, program="low_priority", priority=40, score=0.99)
    seed(store, 1, program="high_priority", priority=80, score=0.10)
    seed(store, 1, program="same_priority_low_score", priority=80, score=0.05)
    config = {"caps": {"per_customer": [{"max": 1, "window": "1d"}]}}
    chans = channels()
    caps = FrequencyCaps(DeliveryConfig.model_validate(config))
    stats = Dispatcher(store, chans, policies=[caps], clock=FakeClock(T0)).run()  # type: ignore[arg-type]
    assert [m.program for m in chans["email"].accepted] == ["high_priority"]
    assert stats.suppressed == 2
    by_program = {p: (s, r) for p, s, r in rows(store)}
    status, reason = by_program["low_priority"]
    assert status == "suppressed"
    assert reason.startswith("frequency_cap:per_customer: email: per_customer cap 1/1d reached: "
                             "lost to high_priority (priority 80, score 0.1")
    assert "lost to high_priority" in by_program["same_priority_low_score"][1]
    assert {(loss.program, loss.winner, loss.cap) for loss in caps.losses} == {
        ("low_priority", "high_priority", "per_customer 1/1d"),
        ("same_priority_low_score", "high_priority", "per_customer 1/1d")}


def test_caps_count_deliveries_sent_in_the_rolling_window(store: Store) -> None:
    profiles(store, 1)
    config = {"caps": {"per_customer": [{"max": 2, "window": "7d"}]}}
    chans = channels()
    clock = FakeClock(T0)
    for day in range(3):
        seed(store, 1, program=f"p{day}", start=clock.now)
        dispatcher(store, chans, clock, config).run()
        clock.advance(days=1)
    assert [m.program for m in chans["email"].accepted] == ["p0", "p1"]
    assert "2 already sent or queued in 1w (p0, p1)" in rows(store)[2][2]
    clock.now = T0 + timedelta(days=7, minutes=1)       # p0 has left the window
    seed(store, 1, program="p3", start=clock.now)
    dispatcher(store, chans, clock, config).run()
    assert [m.program for m in chans["email"].accepted] == ["p0", "p1", "p3"]


def test_per_channel_cap_moves_to_the_next_channel(store: Store) -> None:
    profiles(store, 1)
    grant_consent(store, "default", "c0", "sms")
    config = {"caps": {"per_channel": {"sms": [{"max": 1, "window": "1d"}]}}}
    chans = channels()
    clock = FakeClock(T0.replace(hour=15))
    seed(store, 1, program="a", channels=["sms", "email"], start=clock.now)
    dispatcher(store, chans, clock, config).run()
    seed(store, 1, program="b", channels=["sms", "email"], start=clock.now)
    dispatcher(store, chans, clock, config).run()
    assert [m.program for m in chans["sms"].accepted] == ["a"]
    assert [m.program for m in chans["email"].accepted] == ["b"]
    assert "per_channel[sms] cap 1/1d reached" in rows(store)[1][2]


def test_per_program_cap_and_overrides(store: Store) -> None:
    profiles(store, 1)
    config = {"caps": {"per_program": [{"max": 1, "window": "1d"}],
                       "programs": {"digest": [{"max": 2, "window": "1d"}]}}}
    chans = channels()
    for program in ("promo", "promo", "digest", "digest", "digest"):
        seed(store, 1, program=program)
    dispatcher(store, chans, FakeClock(T0), config).run()
    assert sorted(m.program for m in chans["email"].accepted) == ["digest", "digest", "promo"]


def test_in_flight_attempts_count_against_caps(store: Store) -> None:
    profiles(store, 1)
    config = {"caps": {"per_customer": [{"max": 1, "window": "1d"}]}}
    seed(store, 1, program="first")
    clock = FakeClock(T0)
    d = dispatcher(store, channels(), clock, config)
    d.plan()                                    # queued, not yet sent
    seed(store, 1, program="second")
    d.plan()
    assert "1 already sent or queued" in dict((p, r) for p, _, r in rows(store))["second"]


def test_shadow_candidates_do_not_take_live_slots(store: Store) -> None:
    profiles(store, 1)
    config = {"caps": {"per_customer": [{"max": 1, "window": "1d"}]}}
    seed(store, 1, program="shadowed", priority=90, status="shadow")
    seed(store, 1, program="live", priority=10)
    chans = channels()
    dispatcher(store, chans, FakeClock(T0), config).run()
    assert [m.program for m in chans["email"].accepted] == ["live"]


def test_caps_config_parses_the_documented_shape() -> None:
    cfg = DeliveryConfig.model_validate({"caps": {
        "per_customer": [{"max": 3, "window": "7d"}],
        "per_channel": {"sms": [{"max": 1, "window": "1d"}]},
        "per_program": [{"max": 1, "window": "2d"}]}})
    assert cfg.caps.longest() == timedelta(days=7)
    assert cfg.caps.per_channel["sms"][0].label() == "1/1d"
    import yaml

    unquoted = yaml.safe_load("quiet_hours: {sms: {send_from: 09:30, send_until: 20:00}}")  # YAML 1.1 ints
    hours = DeliveryConfig.model_validate(unquoted).quiet_hours["sms"]
    assert (hours.send_from.hour, hours.send_from.minute, hours.send_until.hour) == (9, 30, 20)
    for bad in ({"caps": {"per_customer": [{"max": 1, "window": "0s"}]}},
                {"caps": {"per_customer": [{"max": -1, "window": "1d"}]}},
                {"caps": {"per_customr": []}}, {"quiet_hours": {"sms": {"from": "08:00"}}},
                {"default_timezone": "Nowhere/Land"}):
        with pytest.raises(ValidationError):
            DeliveryConfig.model_validate(bad)


# -- suppression list -------------------------------------------------------------------------


def test_hard_bounced_address_is_suppressed_on_that_channel(store: Store) -> None:
    seed(store, 2, channels=["email", "inapp"])
    profiles(store, 2)
    add_suppression(store, "default", "email", " c0@example.COM ", "hard_bounce")
    chans = channels()
    dispatcher(store, chans, FakeClock(T0)).run()
    assert [m.customer_id for m in chans["email"].accepted] == ["c1"]
    assert [m.customer_id for m in chans["inapp"].accepted] == ["c0"]
    assert remove_suppression(store, "default", "email", "C0@example.com")


class BouncingSms(SmsRec):
    """A provider that answers that the number does not exist (Twilio 21211)."""

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        return [SendResult(m.idempotency_key, "failed",
                           error="bounced: invalid phone number (twilio 21211: not a number)")
                for m in messages]


def test_a_number_the_provider_bounces_at_send_time_is_suppressed(store: Store) -> None:
    """A bounce in the send answer (an invalid number, a dead push token) is a hard bounce,
    as the same news in a receipt is: the address is not tried again, in any category."""
    profiles(store, 1)
    seed(store, 1, channels=["sms"], category="security")
    stats = dispatcher(store, {"sms": BouncingSms()}, FakeClock(T0)).run()
    assert stats.dead == 1
    [s] = list_suppressions(store, "default")
    assert (s.channel, s.address, s.reason) == ("sms", "15550000000", "hard_bounce")
    seed(store, 1, program="alerts", channels=["sms"], category="security")
    chans = channels()
    again = dispatcher(store, chans, FakeClock(T0)).run()
    assert (again.suppressed, chans["sms"].accepted) == (1, [])


class StoppedSms(SmsRec):
    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        return [SendResult(m.idempotency_key, "failed", error="unsubscribed: the recipient opted "
                           "out (replied STOP); twilio 21610") for m in messages]


def test_a_number_the_provider_says_replied_stop_is_suppressed_as_a_stop(store: Store) -> None:
    profiles(store, 1)
    seed(store, 1, channels=["sms"], category="transactional")
    assert dispatcher(store, {"sms": StoppedSms()}, FakeClock(T0)).run().dead == 1
    [s] = list_suppressions(store, "default")
    assert (s.channel, s.address, s.reason) == ("sms", "15550000000", "sms_stop")


def test_suppression_by_address_kind_and_complaints_stop_marketing_only(store: Store) -> None:
    profiles(store, 1)
    add_suppression(store, "default", "email", "c0@example.com", "complaint")
    seed(store, 1, program="promo")
    seed(store, 1, program="password_reset", category="transactional")
    chans = {"mailer": EmailRec()}       # another channel name, the same address kind
    with store.tx() as tx:
        tx.execute("UPDATE candidates SET channels = ?", ('["mailer"]',))
    Dispatcher(store, chans, policies=default_policies(), clock=FakeClock(T0)).run()  # type: ignore[arg-type]
    assert [m.program for m in chans["mailer"].accepted] == ["password_reset"]
    assert dict((p, r) for p, _, r in rows(store))["promo"] == (
        "suppression:mailer: mailer address suppressed (complaint)")


def test_addresses_are_normalized() -> None:
    assert normalize_address(" A@B.COM ", "email") == "a@b.com"
    assert normalize_address("+1 (555) 010-9999", "phone") == "15550109999"
    assert normalize_address("   ", "email") is None


# -- units ------------------------------------------------------------------------------------


def _candidate(**kw: Any) -> Candidate:
    base = dict(id=1, tenant_id="default", program="promo", run_id="r", customer_id="c0",
                subject_id=None, context={}, action_type="offer", channels=["email"], template=None,
                category="marketing", score=0.5, model="m", reasons=None, payload={}, status="pending",
                priority=0, created_at=T0, not_before=T0, expires_at=T0 + timedelta(days=1),
                dedup_key="k", holdout=False, version=1)
    return Candidate(**{**base, **kw})


def test_topic_of() -> None:
    assert topic_of(_candidate()) == "promo"
    assert topic_of(_candidate(payload={"topic": "news"})) == "news"
    assert topic_of(_candidate(payload={"topic": ""})) == "promo"
    assert topic_of(_candidate(payload={"topic": 3})) == "promo"


def test_policies_leave_exempt_and_empty_batches_alone() -> None:
    class NoStore:
        def tx(self) -> Any:
            raise AssertionError("no query expected")

    ctx = PolicyContext(T0, NoStore(), {}, {"email": "email"})
    c = _candidate(category="security")
    d = [Decision(1, send=("email",))]
    cfg = DeliveryConfig()
    assert ConsentPolicy(cfg).apply([c], d, ctx) == d          # exempt: no consent query
    assert FrequencyCaps(cfg).apply([c], d, ctx) == d          # no caps configured: no query
    assert QuietHours(cfg).apply([c], d, ctx) == d
    assert SuppressionList(cfg).apply([c], [Decision(1, send=("email",))], ctx) == d  # no address


def test_default_policies_order() -> None:
    names = [p.name for p in default_policies({"caps": {"per_customer": [{"max": 1, "window": "1d"}]}})]
    assert names == ["suppression", "consent", "quiet_hours", "frequency_cap"]
