"""HTTP channels against a local server: the signed webhook, Slack (webhook and
bot modes), chat webhooks, and the shared HTTP code (SSRF guard, status
mapping, Retry-After, time-outs, redirects, keep-alive)."""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from ceap.channels.chat_webhook import ChatWebhookChannel
from ceap.channels.http_common import Refused, address_allowed, check_url, guarded_client
from ceap.channels.slack import SlackChannel
from ceap.channels.webhook import WebhookChannel, secret_key, sign, verify
from ceap.errors import PluginError
from ceap.plugin import PluginContext
from ceap.testing import check_channel, check_registration, make_messages
from tests.channel_helpers import tls_server
from tests.provider_server import Case, ProviderServer, Reply, http_date_in, message, run_case, serve

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
KEY = b"0123456789abcdef0123456789abcdef"


@pytest.fixture
def server() -> Iterator[ProviderServer]:
    yield from serve()


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch, server: ProviderServer) -> None:
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    monkeypatch.setenv("SLACK_TOKEN", "xoxb-secret-token")
    monkeypatch.setenv("SLACK_HOOK", f"{server.url}/services/T000/B000/XXXSECRET")
    monkeypatch.setenv("CHAT_URL", f"{server.url}/chat/hooks/abc123token")


def hook(server: ProviderServer, path: str = "/hook", **kw: Any) -> dict[str, Any]:
    return {"type": "webhook", "url": server.url + path, "secret_env": "HOOK_SECRET",
            "allow_private": True, "timeout": 2.0, **kw}


def slack_bot(server: ProviderServer, **kw: Any) -> dict[str, Any]:
    return {"type": "slack", "token_env": "SLACK_TOKEN", "channel": "C123", "api_base": server.url + "/api",
            "allow_private": True, **kw}


SLACK_HOOK = {"type": "slack", "webhook_url_env": "SLACK_HOOK", "allow_private": True}
CHAT = {"type": "chat_webhook", "url_env": "CHAT_URL", "allow_private": True}


# -- conformance ------------------------------------------------------------------------


@pytest.mark.parametrize("name, cls, config", [
    ("webhook", WebhookChannel, hook),
    ("slack", SlackChannel, slack_bot),
    ("slack", SlackChannel, lambda s: SLACK_HOOK),
    ("chat_webhook", ChatWebhookChannel, lambda s: CHAT),
], ids=["webhook", "slack-bot", "slack-webhook", "chat_webhook"])
def test_conformance(server: ProviderServer, tmp_path: Path, name: str, cls: type[Any], config: Any) -> None:
    server.default = lambda r: Reply(200, {"ok": True, "ts": "1.2"} if "/api/" in r.path else "ok")
    check_registration("channel", name, cls)
    check_channel(cls, {**config(server), "sent_keys": "sent.db"}, PluginContext(base_dir=tmp_path),
                  make_messages(3, channel=name))
    keys = [r.headers.get("webhook-id") for r in server.calls("/hook")]
    assert len(keys) == len(set(keys))  # the receiver never saw a key twice


# -- the signed webhook -------------------------------------------------------------------

WEBHOOK_CASES = [  # id, replies, expected result fields
    ("200", [Reply(200)], {"status": "sent", "retryable": False}),
    ("204", [Reply(204)], {"status": "sent"}),
    ("429 seconds", [Reply(429, headers={"Retry-After": "7"})],
     {"status": "failed", "retryable": True, "retry_after": 7.0, "error": "HTTP 429"}),
    ("429 date", [Reply(429, headers={"Retry-After": http_date_in(3600)})],  # an hour from the answer
     {"retryable": True, "retry_after": lambda v: 3000 <= v <= 3600}),
    ("503", [Reply(503, "down")], {"status": "failed", "retryable": True, "error": "HTTP 503"}),
    ("500 body not echoed", [Reply(500, "SECRET stack trace")], {"error": "HTTP 500", "retryable": True}),
    ("400", [Reply(400, {"detail": "SECRET"})],
     {"status": "failed", "retryable": False, "error": "HTTP 400"}),
    ("404", [Reply(404)], {"retryable": False, "error": "HTTP 404"}),
    ("302 not followed", [Reply(302, headers={"Location": "/elsewhere"})],
     {"status": "failed", "retryable": False, "error": "HTTP 302: redirects are not followed"}),
    ("time-out", [Reply(200, delay=1.5)],
     {"status": "failed", "retryable": True, "error": "unreachable: time-out after 0.5 s"}),
]


@pytest.mark.parametrize("case_id, replies, result", WEBHOOK_CASES, ids=[c[0] for c in WEBHOOK_CASES])
def test_webhook_answers(server: ProviderServer, case_id: str, replies: list[Reply],
                         result: dict[str, Any]) -> None:
    timeout = 0.5 if case_id == "time-out" else 2.0
    run_case(server, WebhookChannel, Case(
        case_id, hook(server, timeout=timeout), replies, path="/", result=result,
        request={"method": "POST", "path": "/hook", "header.content-type": "application/json",
                 "header.webhook-id": "acme:dedup-1:sms", "json.data.customer_id": "c1",
                 "json.type": "ceap.action"}))


def test_signature_verifies_and_body_carries_the_action(server: ProviderServer) -> None:
    before = int(time.time())
    result, [call] = run_case(server, WebhookChannel, Case(
        "protect", hook(server, action="lock_account", event="ceap.protect"), [Reply(200)], path="/hook",
        message={"payload": {"reason": "fraud score 0.97"}, "category": "security"}))
    assert result.status == "sent"
    assert verify(KEY, call.headers, call.body)
    assert call.headers["webhook-signature"] == sign(KEY, call.headers["webhook-id"],
                                                     int(call.headers["webhook-timestamp"]), call.body)
    assert before <= int(call.headers["webhook-timestamp"]) <= time.time()  # signed at sending
    body = call.json()
    assert body["type"] == "ceap.protect"
    assert body["data"]["action"] == "lock_account"
    assert body["data"]["payload"] == {"reason": "fraud score 0.97"}
    assert body["data"]["category"] == "security"
    assert not verify(KEY, call.headers, call.body + b" ")          # tampered body
    assert not verify(b"other", call.headers, call.body)             # other key
    assert not verify(KEY, call.headers, call.body, now=time.time() + 3600)  # replayed later
    assert not verify(KEY, {**call.headers, "webhook-signature": "v1,\u00e9t\u00e9"}, call.body)  # not ASCII


def test_raw_secret_and_action_from_the_payload(server: ProviderServer,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_SECRET", "plain-text-secret")
    _, [call] = run_case(server, WebhookChannel, Case(
        "raw", hook(server), [Reply(200)], path="/hook", message={"payload": {"action": "block_card"}}))
    assert verify(b"plain-text-secret", call.headers, call.body)
    assert call.json()["data"]["action"] == "block_card"
    assert secret_key(SECRET) == KEY


def test_url_placeholders_are_quoted(server: ProviderServer) -> None:
    _, [call] = run_case(server, WebhookChannel, Case(
        "placeholders", hook(server, "/t/{tenant_id}/c/{customer_id}"), [Reply(200)], path="/t/",
        message={"customer_id": "a/b?c"}))
    assert call.path == "/t/acme/c/a%2Fb%3Fc"


def test_unknown_placeholder_and_missing_secret(server: ProviderServer,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="unknown placeholder"):
        WebhookChannel.from_dict(hook(server, "/{email}"))
    monkeypatch.delenv("HOOK_SECRET")
    with pytest.raises(PluginError, match="HOOK_SECRET"):
        WebhookChannel.from_dict(hook(server))


def test_secrets_are_masked(server: ProviderServer) -> None:
    channels = [WebhookChannel.from_dict(hook(server)),
                SlackChannel.from_dict(slack_bot(server)), SlackChannel.from_dict(SLACK_HOOK),
                ChatWebhookChannel.from_dict(CHAT)]
    for ch in channels:
        shown = repr(ch) + repr(ch.config) + repr(ch.__dict__)
        for secret in (SECRET[6:], "0123456789abcdef", "xoxb-secret-token", "XXXSECRET", "abc123token"):
            assert secret not in shown, (type(ch).__name__, secret)
        ch.close()


def test_receiver_dedup_setting(server: ProviderServer) -> None:
    assert WebhookChannel.from_dict(hook(server)).provider_dedup is False
    assert WebhookChannel.from_dict(hook(server, receiver_dedups=True)).provider_dedup is True


def test_a_batch_goes_out_concurrently_over_kept_alive_connections(server: ProviderServer) -> None:
    channel = WebhookChannel.from_dict(hook(server, concurrency=4))
    try:
        for round_ in range(2):
            messages = make_messages(40, idempotency_key=lambda i, r=round_: f"k{r}-{i}", channel="webhook")
            results = channel.send(messages)
            assert [r.status for r in results] == ["sent"] * 40
            assert [r.idempotency_key for r in results] == [m.idempotency_key for m in messages]
        assert len(server.calls("/hook")) == 80
        assert len(channel.client._all) <= 4  # one connection per thread, reused across batches
    finally:
        channel.close()


def test_a_429_stops_the_rest_of_the_batch(server: ProviderServer) -> None:
    server.script(Reply(200), Reply(429, headers={"Retry-After": "3"}))
    channel = WebhookChannel.from_dict(hook(server, concurrency=1))
    try:
        results = channel.send(make_messages(5, channel="webhook"))
    finally:
        channel.close()
    assert [r.status for r in results] == ["sent"] + ["failed"] * 4
    assert all(r.retryable and r.retry_after == 3.0 for r in results[1:])
    assert results[2].error == "not attempted: HTTP 429"
    assert len(server.calls("/hook")) == 2


def test_unreachable_target_is_retryable_and_stops_the_batch() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    channel = WebhookChannel.from_dict({"type": "webhook", "url": f"http://127.0.0.1:{port}/h",
                                        "secret_env": "HOOK_SECRET", "allow_private": True,
                                        "concurrency": 1})
    try:
        results = channel.send(make_messages(3, channel="webhook"))
    finally:
        channel.close()
    assert results[0].error == "unreachable: ConnectionRefusedError" and results[0].retryable
    assert [r.error for r in results[1:]] == ["not attempted: unreachable: ConnectionRefusedError"] * 2


# -- the SSRF guard --------------------------------------------------------------------------

REFUSED_URLS = [
    "http://127.0.0.1/h", "http://10.1.2.3/h", "http://192.168.0.10/h", "http://172.16.0.1/h",
    "http://169.254.169.254/latest/meta-data/", "http://100.64.0.1/h", "http://0.0.0.0/h",
    "http://[::1]/h", "http://[fd00::1]/h", "http://[fe80::1]/h", "http://[::ffff:127.0.0.1]/h",
    "ftp://example.com/h", "file:///etc/passwd", "gopher://example.com/", "http:///nohost",
]


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_ssrf_refuses_non_public_targets_at_config_time(url: str) -> None:
    with pytest.raises(ValidationError):
        WebhookChannel.config_model.model_validate({"type": "webhook", "url": url, "secret_env": "X"})
    with pytest.raises(ValidationError):
        ChatWebhookChannel.config_model.model_validate({"type": "chat_webhook", "url": url})


@pytest.mark.parametrize("ip, public, with_allow_private", [
    ("93.184.216.34", True, True), ("2606:2800:220:1::1", True, True),
    ("127.0.0.1", False, True), ("10.0.0.1", False, True), ("100.64.0.1", False, True),
    ("fd12::1", False, True), ("169.254.169.254", False, False), ("fe80::1", False, False),
    ("224.0.0.1", False, False), ("::ffff:169.254.169.254", False, False),
])
def test_address_rules(ip: str, public: bool, with_allow_private: bool) -> None:
    import ipaddress

    assert address_allowed(ipaddress.ip_address(ip), False) is public
    assert address_allowed(ipaddress.ip_address(ip), True) is with_allow_private


def test_link_local_metadata_is_refused_even_with_allow_private() -> None:
    with pytest.raises(Refused):
        check_url("http://169.254.169.254/latest/meta-data/", allow_private=True)


def test_refusal_advises_allow_private_only_where_it_would_help() -> None:
    with pytest.raises(Refused) as private:
        check_url("http://10.1.2.3/h")
    assert "set allow_private" in str(private.value)
    for allow_private in (False, True):
        with pytest.raises(Refused) as metadata:
            check_url("http://169.254.169.254/latest/meta-data/", allow_private=allow_private)
        assert "link-local" in str(metadata.value) and "set allow_private" not in str(metadata.value)
    with pytest.raises(Refused) as multicast:
        check_url("http://224.0.0.1/h", allow_private=True)
    assert "set allow_private" not in str(multicast.value)


@pytest.mark.parametrize("channel, field", [
    ({"type": "webhook", "url": "http://169.254.169.254/latest/meta-data/", "secret_env": "HOOK_SECRET",
      "allow_private": True}, "url: "),
    ({"type": "chat_webhook", "url": "http://169.254.169.254/latest/meta-data/", "allow_private": True},
     "url: "),
    ({"type": "apprise", "urls": ["json://169.254.169.254/latest/meta-data/"], "allow_private": True},
     "urls: URL #1 (scheme 'json'): "),
])
def test_a_refused_url_in_ceap_yaml_names_its_field(tmp_path: Path, channel: dict[str, Any],
                                                    field: str) -> None:
    from ceap.delivery.setup import build_channels
    from ceap.errors import SpecError
    from ceap.spec import load_project
    from ceap.store import open_store

    (tmp_path / "ceap.yaml").write_text(yaml.safe_dump({"channels": {"wh_meta": channel}}))
    project = load_project(tmp_path)
    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
    try:
        with pytest.raises(SpecError) as err:
            build_channels(project, store)
    finally:
        store.close()
    [line] = err.value.lines()
    assert line.startswith(f"{tmp_path / 'ceap.yaml'}: channels.wh_meta.{field}169.254.169.254 is a "
                           "link-local address"), line
    assert "allow_private for a self-hosted" not in line and "Value error" not in line


def test_a_name_resolving_to_loopback_is_refused_at_connect_time(server: ProviderServer) -> None:
    port = server.url.rsplit(":", 1)[1]
    channel = WebhookChannel.from_dict({"type": "webhook", "url": f"http://localhost:{port}/hook",
                                        "secret_env": "HOOK_SECRET"})
    try:
        [result] = channel.send([message()])
    finally:
        channel.close()
    assert result.status == "failed" and not result.retryable
    assert result.error.startswith("refused: localhost resolves to")
    assert server.calls() == []


def test_dns_rebinding_is_caught_at_connect(server: ProviderServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The name passed the config check (it is not an IP); at connect time it resolves to
    loopback: refused, and the server never hears of it."""
    port = int(server.url.rsplit(":", 1)[1])
    real = socket.getaddrinfo

    def rebinding(host: str, *args: Any, **kw: Any) -> Any:
        if host == "hooks.example.com":
            return real("127.0.0.1", *args, **kw)
        return real(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    client = guarded_client(allow_private=False, timeout=2)
    with pytest.raises(Refused, match="hooks.example.com resolves to 127.0.0.1"):
        client.request("POST", f"http://hooks.example.com:{port}/hook", b"{}")
    client.close()
    assert server.calls() == []


def test_redirects_are_not_followed(server: ProviderServer) -> None:
    server.route("/hook", Reply(307, headers={"Location": "http://169.254.169.254/latest/"}))
    client = guarded_client(allow_private=True, timeout=2)
    response = client.request("POST", server.url + "/hook", b"{}")
    client.close()
    assert response.status == 307
    assert [c.path for c in server.calls()] == ["/hook"]


def test_https_keeps_alive_and_checks_the_certificate(tmp_path: Path) -> None:
    import ssl

    from ceap.channels.http_common import HttpClient, send_json

    with tls_server(tmp_path, {"id": "p-1"}) as server:
        trusted = HttpClient(allow_private=True, timeout=5,
                             tls=ssl.create_default_context(cafile=str(server.cafile)))
        results = [send_json(trusted, server.url, {"n": i}, {}, f"k{i}", provider_id=lambda r: r.json()["id"])
                   for i in range(3)]
        trusted.close()
        assert [(r.status, r.provider_id) for r in results] == [("sent", "p-1")] * 3
        assert len(set(server.peers)) == 1  # one TLS connection for the three requests
        untrusted = guarded_client(allow_private=True, timeout=5)
        failed = send_json(untrusted, server.url, {}, {}, "k9")
        untrusted.close()
        assert failed.retryable and failed.error == "unreachable: SSLCertVerificationError"


# -- Slack --------------------------------------------------------------------------------------

SLACK_CASES = [
    Case("bot ok", {}, [Reply(200, {"ok": True, "ts": "1700000000.000100"})],
         request={"path": "/api/chat.postMessage", "header.authorization": "Bearer xoxb-secret-token",
                  "json.channel": "C123", "json.text": "*Hello*\nYour cart misses you"},
         result={"status": "sent", "provider_id": "1700000000.000100"}),
    Case("bot blocks and channel override", {}, [Reply(200, {"ok": True, "ts": "1"})],
         message={"payload": {"blocks": [{"type": "divider"}], "slack_channel": "C999"}},
         request={"json.blocks": [{"type": "divider"}], "json.channel": "C999"}, result={"status": "sent"}),
    Case("bot channel_not_found", {}, [Reply(200, {"ok": False, "error": "channel_not_found"})],
         result={"status": "failed", "retryable": False, "error": "Slack channel_not_found"}),
    Case("bot invalid_auth", {}, [Reply(200, {"ok": False, "error": "invalid_auth"})],
         result={"retryable": False, "error": "Slack invalid_auth"}),
    Case("bot ratelimited", {}, [Reply(200, {"ok": False, "error": "ratelimited"})],
         result={"retryable": True, "retry_after": 1.0}),
    Case("bot internal_error", {}, [Reply(200, {"ok": False, "error": "internal_error"})],
         result={"retryable": True, "error": "Slack internal_error"}),
    Case("bot 429", {}, [Reply(429, {"ok": False, "error": "ratelimited"}, headers={"Retry-After": "30"})],
         result={"retryable": True, "retry_after": 30.0, "error": "HTTP 429 ratelimited"}),
    Case("bot 503", {}, [Reply(503, "<html>SECRET</html>")],
         result={"retryable": True, "error": "HTTP 503"}),
    Case("webhook ok", SLACK_HOOK, [Reply(200, "ok")],
         request={"path": "/services/T000/B000/XXXSECRET", "json.text": "*Hello*\nYour cart misses you"},
         result={"status": "sent"}),
    Case("webhook channel_not_found", SLACK_HOOK, [Reply(404, "channel_not_found")],
         result={"retryable": False, "error": "HTTP 404 channel_not_found"}),
    Case("webhook invalid_token", SLACK_HOOK, [Reply(403, "invalid_token")],
         result={"retryable": False, "error": "HTTP 403 invalid_token"}),
    Case("webhook 429", SLACK_HOOK, [Reply(429, "rate limited", headers={"Retry-After": "2"})],
         result={"retryable": True, "retry_after": 2.0}),
]


@pytest.mark.parametrize("case", SLACK_CASES, ids=[c.id for c in SLACK_CASES])
def test_slack(server: ProviderServer, case: Case) -> None:
    config = case.config or slack_bot(server)
    run_case(server, SlackChannel, Case(case.id, config, case.replies, case.request, case.result,
                                        case.message))


def test_slack_config_needs_one_mode() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        SlackChannel.config_model.model_validate({"type": "slack"})
    with pytest.raises(ValidationError, match="exactly one"):
        SlackChannel.config_model.model_validate({"type": "slack", "token_env": "A", "webhook_url_env": "B"})


# -- chat webhooks ---------------------------------------------------------------------------------

CHAT_CASES = [
    Case("teams-style text", CHAT, [Reply(200)],
         request={"path": "/chat/hooks/abc123token", "json.text": "Hello\nYour cart misses you"},
         result={"status": "sent"}),
    Case("discord-style content", {**CHAT, "text_key": "content", "text": "**{title}** ({program})",
                                   "extra": {"username": "ceap"}}, [Reply(204)],
         request={"json.content": "**Hello** (win_back)", "json.username": "ceap"},
         result={"status": "sent"}),
    Case("discord 429", CHAT, [Reply(429, {"retry_after": 1.5}, headers={"Retry-After": "2"})],
         result={"retryable": True, "retry_after": 2.0}),
    Case("mattermost 400", CHAT, [Reply(400, "SECRET details")],
         result={"retryable": False, "error": "HTTP 400"}),
]


@pytest.mark.parametrize("case", CHAT_CASES, ids=[c.id for c in CHAT_CASES])
def test_chat_webhook(server: ProviderServer, case: Case) -> None:
    run_case(server, ChatWebhookChannel, case)


def test_chat_webhook_config_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        ChatWebhookChannel.config_model.model_validate({"type": "chat_webhook"})
    with pytest.raises(ValidationError, match="unknown placeholder"):
        ChatWebhookChannel.config_model.model_validate({"type": "chat_webhook", "url": "https://x.example/h",
                                                        "text": "{email}"})
    monkeypatch.setenv("CHAT_URL", "http://10.0.0.5/hooks/x")
    with pytest.raises(PluginError, match="not a public address"):
        ChatWebhookChannel.from_dict({"type": "chat_webhook", "url_env": "CHAT_URL"})
