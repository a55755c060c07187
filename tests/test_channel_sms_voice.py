"""Twilio SMS and voice against a local server speaking Twilio's API shape:
request shape, error answers, time-outs, TwiML escaping, receipts, the
conformance suite, and the dispatcher through a failure burst."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from ceap.channels.receipts import (
    is_bounce,
    twilio_call_receipt,
    twilio_message_receipt,
    twilio_signature,
    twilio_signature_valid,
)
from ceap.channels.sms_twilio import TwilioSmsChannel
from ceap.channels.voice_twilio import TwilioVoiceChannel
from ceap.delivery.dispatcher import Dispatcher
from ceap.delivery.profiles import upsert_profiles
from ceap.errors import PluginError
from ceap.model import CandidateQuery, RunRecord
from ceap.plugin import PluginContext
from ceap.store import open_store
from ceap.testing import check_channel, check_registration, make_candidates, make_messages
from tests.provider_server import (
    MISSING,
    Case,
    HeaderValue,
    ProviderServer,
    Reply,
    http_date_in,
    run_case,
    serve,
)

TOKEN = "tw-secret-token"
BASIC = "Basic " + base64.b64encode(f"AC123:{TOKEN}".encode()).decode()
MESSAGES = "/2010-04-01/Accounts/AC123/Messages.json"
CALLS = "/2010-04-01/Accounts/AC123/Calls.json"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ProviderServer]:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    yield from serve()


def sms(server: ProviderServer, **kw: Any) -> dict[str, Any]:
    return {"type": "twilio_sms", "base_url": server.url, "account_sid": "AC123",
            "from_number": "+15550000000", "timeout": 0.5, "allow_private": True, **kw}


def voice(server: ProviderServer, **kw: Any) -> dict[str, Any]:
    return {"type": "twilio_voice", "base_url": server.url, "account_sid": "AC123",
            "from_number": "+15550000000", "timeout": 0.5, "allow_private": True, **kw}


def twilio_error(status: int, code: int, message: str, **headers: HeaderValue) -> Reply:
    return Reply(status, {"code": code, "message": message, "status": status,
                          "more_info": f"https://www.twilio.com/docs/errors/{code}"}, headers)


def has(*parts: str) -> Any:
    return lambda value: value is not None and all(p in value for p in parts)


def within(low: float, high: float) -> Any:
    return lambda value: value is not None and low <= value <= high


OK = Reply(201, {"sid": "SM0001", "status": "queued"})

# (channel config, scripted answers) -> (request shape, SendResult); ``S`` stands for the server
SMS_CASES = [
    Case("sent", {}, [OK], path=MESSAGES,
         request={"method": "POST", "form.To": "+15550001111", "form.Body": "Your cart misses you",
                  "form.From": "+15550000000", "form.MessagingServiceSid": MISSING,
                  "form.StatusCallback": MISSING, "header.authorization": BASIC,
                  "header.content-type": has("application/x-www-form-urlencoded")},
         result={"status": "sent", "provider_id": "SM0001", "error": None, "retryable": False}),
    Case("messaging service and status callback",
         {"from_number": None, "messaging_service_sid": "MG42",
          "status_callback": "https://hooks.example.com/twilio/status"}, [OK], path=MESSAGES,
         request={"form.MessagingServiceSid": "MG42", "form.From": MISSING,
                  "form.StatusCallback": "https://hooks.example.com/twilio/status"},
         result={"status": "sent"}),
    Case("api key auth", {"api_key_sid": "SK9"}, [OK], path=MESSAGES,
         request={"header.authorization": "Basic " + base64.b64encode(f"SK9:{TOKEN}".encode()).decode()},
         result={"status": "sent"}),
    Case("title when the body is empty", {}, [OK], path=MESSAGES, message={"body": ""},
         request={"form.Body": "Hello"}, result={"status": "sent"}),
    Case("long body cut at 1600", {}, [OK], path=MESSAGES, message={"body": "é" * 2000},
         request={"form.Body": lambda b: len(b) == 1600 and b.endswith("é…")}, result={"status": "sent"}),
    Case("429 with Retry-After seconds", {},
         [twilio_error(429, 20429, "Too Many Requests", **{"Retry-After": "7"})], path=MESSAGES,
         result={"status": "failed", "retryable": True, "retry_after": 7.0,
                 "error": "twilio 20429: Too Many Requests"}),
    Case("429 with Retry-After date", {},
         [twilio_error(429, 20429, "Too Many Requests", **{"Retry-After": http_date_in(60)})],
         path=MESSAGES,
         result={"retryable": True, "retry_after": within(30, 60)}),
    Case("429 without Retry-After still waits a second", {},
         [twilio_error(429, 20429, "Too Many Requests")], path=MESSAGES,
         result={"retryable": True, "retry_after": 1.0}),
    Case("500 without a JSON body", {}, [Reply(500, "upstream exploded")], path=MESSAGES,
         result={"status": "failed", "retryable": True, "retry_after": None, "error": "twilio HTTP 500"}),
    Case("503 with Retry-After", {}, [Reply(503, {"code": 20500, "message": "Service Unavailable"},
                                            {"Retry-After": "3"})], path=MESSAGES,
         result={"retryable": True, "retry_after": 3.0, "error": has("20500")}),
    Case("time-out", {"timeout": 0.2}, [Reply(201, {"sid": "SMlate"}, delay=1.0)], path=MESSAGES,
         result={"status": "failed", "retryable": True, "error": "unreachable: time-out after 0.2 s"}),
    Case("21211 invalid number is a bounce", {},
         [twilio_error(400, 21211, "The 'To' number +1555 is not a valid phone number.")], path=MESSAGES,
         result={"status": "failed", "retryable": False, "error": lambda e: is_bounce(e) and "21211" in e}),
    Case("21610 unsubscribed recipient", {},
         [twilio_error(400, 21610, "Attempt to send to unsubscribed recipient")], path=MESSAGES,
         result={"retryable": False, "error": lambda e: e.startswith("unsubscribed:") and "21610" in e
                 and not is_bounce(e)}),
    Case("401 bad credentials are permanent and not echoed", {},
         [twilio_error(401, 20003, "Authenticate")], path=MESSAGES,
         result={"retryable": False, "error": lambda e: "20003" in e and TOKEN not in e}),
]

VOICE_CASES = [
    Case("call with escaped TwiML", {"status_callback": "https://hooks.example.com/call"}, [OK], path=CALLS,
         message={"title": 'Tom & "Jerry"', "body": "<b>5 < 6</b>\x07 ✓"},
         request={"form.To": "+15550001111", "form.From": "+15550000000",
                  "form.StatusCallback": "https://hooks.example.com/call", "header.authorization": BASIC,
                  "form.Twiml": "<Response><Say>Tom &amp; \"Jerry\". &lt;b&gt;5 &lt; 6&lt;/b&gt; ✓"
                                "</Say></Response>"},
         result={"status": "sent", "provider_id": "SM0001"}),
    Case("voice and language", {"voice": "Polly.Joanna"}, [OK], path=CALLS, message={"locale": "en-US"},
         request={"form.Twiml": has('<Say voice="Polly.Joanna" language="en-US">')},
         result={"status": "sent"}),
    Case("callback offer gathers one key", {"gather_url": "https://x.example/gather?a=1&b=2"}, [OK],
         path=CALLS, message={"payload": {"callback_offer": "Press 1 & we call <you>"}},
         request={"form.Twiml": has('<Gather input="dtmf" numDigits="1" timeout="6" '
                                    'action="https://x.example/gather?a=1&amp;b=2" method="POST">'
                                    '<Say>Press 1 &amp; we call &lt;you&gt;</Say></Gather>')},
         result={"status": "sent"}),
    Case("callback offer without gather_url", {}, [], path=CALLS, calls=0,
         message={"payload": {"callback_offer": True}},
         result={"status": "failed", "retryable": False, "error": has("gather_url")}),
    Case("429", {}, [twilio_error(429, 20429, "Too Many Requests", **{"Retry-After": "2"})], path=CALLS,
         result={"retryable": True, "retry_after": 2.0}),
    Case("502", {}, [Reply(502, "")], path=CALLS, result={"retryable": True}),
    Case("time-out", {"timeout": 0.2}, [Reply(201, {"sid": "CA1"}, delay=1.0)], path=CALLS,
         result={"retryable": True, "error": has("time-out")}),
    Case("invalid number", {}, [twilio_error(400, 21217, "Phone number does not appear to be valid")],
         path=CALLS, result={"retryable": False, "error": is_bounce}),
]


@pytest.mark.parametrize("case", SMS_CASES, ids=lambda c: c.id)
def test_sms(server: ProviderServer, case: Case) -> None:
    run_case(server, TwilioSmsChannel, Case(**{**case.__dict__, "config": sms(server, **case.config)}))


@pytest.mark.parametrize("case", VOICE_CASES, ids=lambda c: c.id)
def test_voice(server: ProviderServer, case: Case) -> None:
    _, calls = run_case(server, TwilioVoiceChannel,
                        Case(**{**case.__dict__, "config": voice(server, **case.config)}))
    for call in calls:
        ET.fromstring(call.form()["Twiml"])  # well-formed XML whatever the text


def test_twiml_round_trips_any_text(server: ProviderServer) -> None:
    nasty = "]]> <!-- & ' \" \x00\x1f 😀 <Play>http://evil</Play>"
    channel = TwilioVoiceChannel.from_dict(voice(server))
    from tests.provider_server import message

    [result] = channel.send([message(title="", body=nasty)])
    assert result.status == "sent"
    root = ET.fromstring(server.calls(CALLS)[0].form()["Twiml"])
    assert [el.tag for el in root.iter()] == ["Response", "Say"]
    assert root.find("Say").text == nasty.replace("\x00", "").replace("\x1f", "")


def test_a_rate_limit_spares_the_rest_of_the_batch(server: ProviderServer) -> None:
    server.script(OK, twilio_error(429, 20429, "Too Many Requests", **{"Retry-After": "9"}))
    channel = TwilioSmsChannel.from_dict(sms(server, concurrency=1))
    results = channel.send(make_messages(4, to="+15550001111", channel="sms"))
    assert [(r.status, r.retryable, r.retry_after) for r in results] == [
        ("sent", False, None), ("failed", True, 9.0), ("failed", True, 9.0), ("failed", True, 9.0)]
    assert results[2].error.startswith("not attempted:")
    assert len(server.calls(MESSAGES)) == 2


def test_missing_token_names_the_variable(server: ProviderServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/project-config.md: a secret's unset variable stops `ceap dispatch` when the channel is
    built; one gone after that is a retryable failure of each send, naming it."""
    channel = TwilioSmsChannel.from_dict(sms(server))
    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    with pytest.raises(PluginError, match="set the environment variable TWILIO_AUTH_TOKEN"):
        TwilioSmsChannel.from_dict(sms(server))
    with pytest.raises(PluginError, match="set the environment variable TWILIO_AUTH_TOKEN"):
        TwilioVoiceChannel.from_dict(voice(server))
    [result] = channel.send(make_messages(1, to="+15550001111"))
    assert result.retryable and "TWILIO_AUTH_TOKEN" in result.error
    assert server.requests == []


def test_secrets_stay_out_of_reprs(server: ProviderServer) -> None:
    channel = TwilioSmsChannel.from_dict(sms(server))
    channel.send(make_messages(1, to="+15550001111"))
    assert TOKEN not in repr(channel) and TOKEN not in repr(channel.config)


def test_private_base_url_is_refused_unless_allowed(server: ProviderServer) -> None:
    channel = TwilioSmsChannel.from_dict(sms(server, allow_private=False))
    [result] = channel.send(make_messages(1, to="+15550001111"))
    assert (result.status, result.retryable) == ("failed", False) and result.error.startswith("refused:")
    assert server.requests == []


def test_config_needs_exactly_one_sender(server: ProviderServer) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        TwilioSmsChannel.from_dict(sms(server, messaging_service_sid="MG1"))
    with pytest.raises(ValueError, match="exactly one"):
        TwilioSmsChannel.from_dict(sms(server, from_number=None))


@pytest.mark.parametrize(("name", "cls", "config"), [
    ("twilio_sms", TwilioSmsChannel, sms), ("twilio_voice", TwilioVoiceChannel, voice)])
def test_conformance(server: ProviderServer, tmp_path: Path, name: str, cls: Any, config: Any) -> None:
    check_registration("channel", name, cls)
    server.default = lambda r: Reply(201, {"sid": f"SM{len(server.requests)}"})
    messages = make_messages(3, to=lambda i: f"+1555000{i:04d}", channel="sms")
    check_channel(cls, config(server, sent_keys="sent-keys.db"), PluginContext(base_dir=tmp_path), messages)
    # the provider saw 3 first sends, 1 fresh key and 1 other-tenant key: no repeat reached it
    assert len(server.requests) == 5


def test_without_a_ledger_keys_do_not_outlive_the_instance(server: ProviderServer) -> None:
    server.default = lambda r: Reply(201, {"sid": "SM1"})
    with pytest.raises(AssertionError, match="outlive the instance"):
        check_channel(TwilioSmsChannel, sms(server), None, make_messages(2, to="+15550001111"))


# -- receipts ----------------------------------------------------------------------

RECEIPTS = [  # (callback form, expected status, what the error must show)
    ({"MessageStatus": "queued"}, None, None),
    ({"MessageStatus": "sent"}, "sent", None),
    ({"MessageStatus": "delivered"}, "delivered", None),
    ({"MessageStatus": "read"}, "delivered", None),
    ({"MessageStatus": "undelivered", "ErrorCode": "30005"}, "bounced", "bounced: unknown handset"),
    ({"MessageStatus": "undelivered", "ErrorCode": "30007"}, "bounced", "bounced: twilio 30007"),
    ({"MessageStatus": "failed", "ErrorCode": "30008", "ErrorMessage": "Unknown error"}, "failed",
     "twilio 30008: Unknown error"),
    ({"MessageStatus": "failed", "ErrorCode": "21211"}, "bounced", "bounced: invalid phone number"),
    ({"MessageStatus": "failed", "ErrorCode": "21610"}, "failed", "unsubscribed:"),
    ({"MessageStatus": "undelivered", "ErrorCode": "21610"}, "failed", "unsubscribed:"),
]


@pytest.mark.parametrize(("form", "status", "error"), RECEIPTS)
def test_message_receipts(form: dict[str, str], status: str | None, error: str | None) -> None:
    receipt = twilio_message_receipt({"MessageSid": "SM1", "To": "+15550001111", **form},
                                     {"I-Twilio-Idempotency-Token": "cb-1"})
    assert (receipt.provider_id, receipt.status, receipt.address, receipt.callback_id) == \
        ("SM1", status, "+15550001111", "cb-1")
    assert receipt.error == error if error is None else receipt.error.startswith(error)


@pytest.mark.parametrize(("status", "expected"), [
    ("ringing", None), ("completed", "delivered"), ("busy", "failed"), ("no-answer", "failed"),
    ("failed", "bounced")])
def test_call_receipts(status: str, expected: str | None) -> None:
    assert twilio_call_receipt({"CallSid": "CA1", "CallStatus": status}).status == expected


def test_unknown_receipt_status_is_an_error() -> None:
    with pytest.raises(ValueError, match="MessageStatus"):
        twilio_message_receipt({"MessageSid": "SM1", "MessageStatus": "teleported"})


def test_callback_signature() -> None:
    url = "https://hooks.example.com/twilio/status?tenant=acme"
    params = {"MessageSid": "SM1", "MessageStatus": "delivered", "To": "+15550001111"}
    signature = twilio_signature(url, params, TOKEN)
    assert twilio_signature_valid(url, dict(reversed(params.items())), signature, TOKEN)
    assert not twilio_signature_valid(url, {**params, "MessageStatus": "failed"}, signature, TOKEN)
    assert not twilio_signature_valid(url, params, signature, "another-token")
    assert not twilio_signature_valid(url, params, "", TOKEN)


# -- end to end: the dispatcher through a failure burst ------------------------------

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def test_dispatcher_rides_out_a_failure_burst(server: ProviderServer, tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'd.db'}")
    n = 4
    store.write_run(RunRecord("r1", "default", "conformance", "succeeded", T0),
                    make_candidates(n, now=T0, channels=["sms"], customer_id=lambda i: f"c{i}"))
    upsert_profiles(store, pa.table({"customer_id": [f"c{i}" for i in range(n)],
                                     "phone": [f"+1555000{i:04d}" for i in range(n)]}), "default")
    clock = Clock()
    answers: list[tuple[datetime, str, int]] = []  # (fake time, To, status answered)
    burst = [Reply(500, "oops"), Reply(503, ""),
             twilio_error(429, 20429, "Too Many Requests", **{"Retry-After": "30"})]

    def provider(request: Any) -> Reply:
        reply = burst.pop(0) if burst else Reply(201, {"sid": f"SM{len(answers)}", "status": "queued"})
        answers.append((clock.now, request.form()["To"], reply.status))
        return reply

    server.default = provider
    channel = TwilioSmsChannel.from_dict(sms(server, rate_per_sec=1000))
    dispatcher = Dispatcher(store, {"sms": channel}, clock=clock)
    try:
        for _ in range(40):
            dispatcher.run()
            if len(answers) == 3 + n:
                break
            clock.now += timedelta(seconds=5)
    finally:
        channel.close()
    statuses = {c.status for c in store.candidates(CandidateQuery(limit=100, include_expired=True))}
    deliveries = dispatcher.outbox.deliveries("default")
    store.close()
    assert statuses == {"sent"} and {d.status for d in deliveries} == {"sent"}
    accepted = sorted(to for _, to, status in answers if status == 201)
    assert accepted == [f"+1555000{i:04d}" for i in range(n)]  # every one once, none twice
    assert [status for _, _, status in answers].count(201) == n and len(answers) == 3 + n
    throttled = next(to for _, to, status in answers if status == 429)
    # the 429 asked for 30 s: the throttled message was not tried again before
    assert all(when >= T0 + timedelta(seconds=30) for when, to, status in answers
               if to == throttled and status == 201)
