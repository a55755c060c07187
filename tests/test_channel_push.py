"""FCM, APNs and Web Push against a local server speaking each service's API
shape: request shape and auth, error answers, time-outs, bounces, the
OAuth2 grant and token reuse, Web Push encryption, and the conformance suite."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import http_ece
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ceap.channels.push_apns import ApnsChannel, apns_id
from ceap.channels.push_fcm import FcmChannel
from ceap.channels.push_web import WebPushChannel
from ceap.channels.receipts import is_bounce
from ceap.errors import PluginError
from ceap.plugin import PluginContext
from ceap.testing import check_channel, check_registration, make_messages
from tests.provider_server import Case, ProviderServer, Recorded, Reply, message, run_case, serve

FCM_SEND = "/v1/projects/demo-proj/messages:send"
DEVICE = "a1b2c3d4" * 8


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pem(key: Any) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    receiver = ec.generate_private_key(ec.SECP256R1())
    return {"apns": ec.generate_private_key(ec.SECP256R1()), "vapid": ec.generate_private_key(ec.SECP256R1()),
            "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "receiver": receiver, "auth": os.urandom(16)}


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, keys: dict[str, Any]) -> Iterator[ProviderServer]:
    monkeypatch.setenv("FCM_TOKEN", "ya29.static-token")
    monkeypatch.setenv("APNS_AUTH_KEY", pem(keys["apns"]))
    monkeypatch.setenv("VAPID_PRIVATE_KEY", pem(keys["vapid"]))
    yield from serve()


def has(*parts: str) -> Any:
    return lambda value: value is not None and all(p in value for p in parts)


def bounced(*parts: str) -> Any:
    return lambda error: is_bounce(error) and all(p in error for p in parts)


def permanent(*parts: str) -> Any:
    return lambda error: not is_bounce(error) and all(p in error for p in parts)


# -- FCM ---------------------------------------------------------------------------


def fcm(server: ProviderServer, **kw: Any) -> dict[str, Any]:
    return {"type": "fcm", "base_url": server.url, "project_id": "demo-proj", "token_env": "FCM_TOKEN",
            "credentials_env": None, "timeout": 0.5, "allow_private": True, **kw}


def fcm_error(status: int, code: str, text: str, fcm_code: str | None = None, **headers: str) -> Reply:
    details = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": fcm_code}]
    return Reply(status, {"error": {"code": status, "message": text, "status": code,
                                    "details": details if fcm_code else []}}, headers)


FCM_OK = Reply(200, {"name": "projects/demo-proj/messages/0:1700000000%31bd1c96"})
PUSH = {"to": DEVICE, "channel": "push", "title": "Sale", "body": "50% off ✓",
        "payload": {"offer": 50, "code": "X1", "tags": ["a"], "from": "dropped", "google.x": "dropped"}}

FCM_CASES = [
    Case("sent", {"ttl_seconds": 3600}, [FCM_OK], path=FCM_SEND, message=PUSH,
         request={"method": "POST", "header.authorization": "Bearer ya29.static-token",
                  "header.content-type": has("application/json"),
                  "json.message.token": DEVICE, "json.message.notification.title": "Sale",
                  "json.message.notification.body": "50% off ✓", "json.message.android.ttl": "3600s",
                  "json.message.data": {"offer": "50", "code": "X1", "tags": '["a"]',
                                        "ceap_idempotency_key": "acme:dedup-1:sms"}},
         result={"status": "sent", "provider_id": "projects/demo-proj/messages/0:1700000000%31bd1c96"}),
    Case("the key alone without a payload", {}, [FCM_OK], path=FCM_SEND, message={**PUSH, "payload": {}},
         request={"json.message.data": {"ceap_idempotency_key": "acme:dedup-1:sms"}},
         result={"status": "sent"}),
    Case("unregistered token is a bounce", {},
         [fcm_error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")],
         path=FCM_SEND, message=PUSH,
         result={"status": "failed", "retryable": False, "error": bounced("UNREGISTERED")}),
    Case("invalid registration token is a bounce", {},
         [fcm_error(400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token",
                    "INVALID_ARGUMENT")], path=FCM_SEND, message=PUSH,
         result={"retryable": False, "error": bounced("registration token")}),
    Case("other invalid argument is permanent", {},
         [fcm_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")], path=FCM_SEND,
         message=PUSH, result={"retryable": False, "error": permanent("INVALID_ARGUMENT", "Invalid JSON")}),
    Case("quota exceeded with Retry-After", {},
         [fcm_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded", "QUOTA_EXCEEDED", **{"Retry-After": "10"})],
         path=FCM_SEND, message=PUSH,
         result={"retryable": True, "retry_after": 10.0, "error": has("QUOTA_EXCEEDED")}),
    Case("unavailable", {}, [fcm_error(503, "UNAVAILABLE", "The service is unavailable", "UNAVAILABLE")],
         path=FCM_SEND, message=PUSH, result={"retryable": True, "error": has("UNAVAILABLE")}),
    Case("internal", {}, [fcm_error(500, "INTERNAL", "Internal error", "INTERNAL")],
         path=FCM_SEND, message=PUSH, result={"retryable": True}),
    Case("expired access token is retried", {},
         [fcm_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")],
         path=FCM_SEND, message=PUSH, result={"retryable": True}),
    Case("time-out", {"timeout": 0.2}, [Reply(200, {"name": "late"}, delay=1.0)], path=FCM_SEND,
         message=PUSH, result={"retryable": True, "error": "unreachable: time-out after 0.2 s"}),
    Case("no token", {}, [], path=FCM_SEND, calls=0, message={**PUSH, "to": None},
         result={"retryable": False, "error": has("no push_token")}),
]


@pytest.mark.parametrize("case", FCM_CASES, ids=lambda c: c.id)
def test_fcm(server: ProviderServer, case: Case) -> None:
    run_case(server, FcmChannel, Case(**{**case.__dict__, "config": fcm(server, **case.config)}))


def test_fcm_service_account_grant(server: ProviderServer, keys: dict[str, Any],
                                   monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    account = {"type": "service_account", "project_id": "demo-proj", "private_key_id": "kid-1",
               "private_key": pem(keys["rsa"]), "client_email": "ceap@demo-proj.iam.gserviceaccount.com",
               "token_uri": f"{server.url}/token"}
    (tmp_path / "sa.json").write_text(json.dumps(account))
    monkeypatch.setenv("FCM_SA", "sa.json")  # a path, relative to the project
    minted: list[str] = []

    def token(request: Recorded) -> Reply:
        minted.append(request.form()["assertion"])
        return Reply(200, {"access_token": f"ya29.minted-{len(minted)}", "expires_in": 3599,
                           "token_type": "Bearer"})

    server.route("/token", token)
    channel = FcmChannel.from_dict(fcm(server, token_env=None, credentials_env="FCM_SA"),
                                   PluginContext(base_dir=tmp_path))
    server.script(FCM_OK, FCM_OK, fcm_error(401, "UNAUTHENTICATED", "expired"), FCM_OK)
    try:
        results = channel.send(make_messages(2, to=DEVICE, channel="push"))
        assert [r.status for r in results] == ["sent", "sent"] and len(minted) == 1  # reused
        [expired] = channel.send(make_messages(1, to=DEVICE, idempotency_key="k-expired"))
        assert expired.retryable
        [again] = channel.send(make_messages(1, to=DEVICE, idempotency_key="k-again"))
        assert again.status == "sent" and len(minted) == 2  # the 401 dropped the cached token
    finally:
        channel.close()
    grant = server.calls("/token")[0]
    assert grant.form()["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    claims = jwt.decode(minted[0], keys["rsa"].public_key(), algorithms=["RS256"],
                        audience=f"{server.url}/token")
    assert claims["iss"] == account["client_email"]
    assert claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging"
    assert claims["exp"] - claims["iat"] == 3600
    assert jwt.get_unverified_header(minted[0])["kid"] == "kid-1"
    sends = server.calls(FCM_SEND)
    assert [r.headers["authorization"] for r in sends] == [
        "Bearer ya29.minted-1", "Bearer ya29.minted-1", "Bearer ya29.minted-1", "Bearer ya29.minted-2"]


def test_fcm_token_endpoint_refusal_is_clear(server: ProviderServer, keys: dict[str, Any],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FCM_SA", json.dumps({"client_email": "x@y", "private_key": pem(keys["rsa"]),
                                             "token_uri": f"{server.url}/token"}))
    server.route("/token", Reply(400, {"error": "invalid_grant", "error_description": "secret stuff"}))
    channel = FcmChannel.from_dict(fcm(server, token_env=None, credentials_env="FCM_SA"))
    [result] = channel.send(make_messages(1, to=DEVICE))
    channel.close()
    assert result.error == "FCM token endpoint answered HTTP 400" and not result.retryable
    assert server.calls(FCM_SEND) == []


# -- APNs --------------------------------------------------------------------------


def apns(server: ProviderServer, **kw: Any) -> dict[str, Any]:
    return {"type": "apns", "base_url": server.url, "topic": "com.example.shop", "team_id": "TEAM123456",
            "key_id": "KEY1234567", "http2": False, "timeout": 0.5, **kw}


def apns_reply(status: int, reason: str, **headers: str) -> Reply:
    return Reply(status, {"reason": reason}, headers)


APNS_ID = apns_id(message(**PUSH))
APNS_OK = Reply(200, "", {"apns-id": APNS_ID})
DEVICE_PATH = f"/3/device/{DEVICE}"

APNS_CASES = [
    Case("sent", {"sound": "default", "expiration_seconds": 0}, [APNS_OK], path=DEVICE_PATH, message=PUSH,
         request={"method": "POST", "header.apns-topic": "com.example.shop", "header.apns-push-type": "alert",
                  "header.apns-priority": "10", "header.apns-id": APNS_ID, "header.apns-expiration": "0",
                  "header.authorization": has("bearer "),
                  "json.aps": {"alert": {"title": "Sale", "body": "50% off ✓"}, "sound": "default"},
                  "json.offer": 50, "json.tags": ["a"], "json.ceap_idempotency_key": "acme:dedup-1:sms"},
         result={"status": "sent", "provider_id": APNS_ID}),
    Case("unregistered is a bounce", {}, [apns_reply(410, "Unregistered")], path=DEVICE_PATH, message=PUSH,
         result={"retryable": False, "error": bounced("410 Unregistered")}),
    Case("bad device token is a bounce", {}, [apns_reply(400, "BadDeviceToken")], path=DEVICE_PATH,
         message=PUSH, result={"retryable": False, "error": bounced("BadDeviceToken")}),
    Case("token for another app is a bounce", {}, [apns_reply(400, "DeviceTokenNotForTopic")],
         path=DEVICE_PATH, message=PUSH, result={"error": bounced("DeviceTokenNotForTopic")}),
    Case("other 400 is permanent", {}, [apns_reply(400, "BadTopic")], path=DEVICE_PATH, message=PUSH,
         result={"retryable": False, "error": permanent("400 BadTopic")}),
    Case("too many requests", {}, [apns_reply(429, "TooManyRequests", **{"Retry-After": "4"})],
         path=DEVICE_PATH, message=PUSH, result={"retryable": True, "retry_after": 4.0}),
    Case("internal server error", {}, [apns_reply(500, "InternalServerError")], path=DEVICE_PATH,
         message=PUSH, result={"retryable": True, "error": "APNs 500 InternalServerError"}),
    Case("service unavailable", {}, [apns_reply(503, "ServiceUnavailable")], path=DEVICE_PATH,
         message=PUSH, result={"retryable": True}),
    Case("expired provider token is retried", {}, [apns_reply(403, "ExpiredProviderToken")],
         path=DEVICE_PATH, message=PUSH, result={"retryable": True}),
    Case("invalid provider token is permanent", {}, [apns_reply(403, "InvalidProviderToken")],
         path=DEVICE_PATH, message=PUSH, result={"retryable": False}),
    Case("time-out", {"timeout": 0.2}, [Reply(200, "", delay=1.0)], path=DEVICE_PATH, message=PUSH,
         result={"retryable": True, "error": "unreachable: time-out after 0.2 s"}),
    Case("payload over 4 KB", {}, [], path=DEVICE_PATH, calls=0,
         message={**PUSH, "payload": {"blob": "x" * 5000}},
         result={"retryable": False, "error": has("over 4096")}),
]


@pytest.mark.parametrize("case", APNS_CASES, ids=lambda c: c.id)
def test_apns(server: ProviderServer, case: Case, keys: dict[str, Any]) -> None:
    _, calls = run_case(server, ApnsChannel, Case(**{**case.__dict__, "config": apns(server, **case.config)}))
    for call in calls:  # the provider token: ES256, kid and team id, verifiable with the key
        token = call.headers["authorization"].removeprefix("bearer ")
        assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": "KEY1234567", "typ": "JWT"}
        assert jwt.decode(token, keys["apns"].public_key(), algorithms=["ES256"])["iss"] == "TEAM123456"


def test_apns_token_is_reused_and_renewed_when_expired(server: ProviderServer,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    signed: list[dict[str, Any]] = []
    real = jwt.encode

    def counting(claims: dict[str, Any], *args: Any, **kw: Any) -> str:
        signed.append(claims)
        return real(claims, *args, **kw)

    monkeypatch.setattr(jwt, "encode", counting)
    server.script(APNS_OK, APNS_OK, apns_reply(403, "ExpiredProviderToken"), APNS_OK)
    channel = ApnsChannel.from_dict(apns(server, concurrency=1))
    try:
        channel.send(make_messages(3, to=DEVICE))
        assert len(signed) == 1        # one token for every request until it expires
        channel.send(make_messages(1, to=DEVICE, idempotency_key="later"))
        assert len(signed) == 2        # APNs said it expired: a new one was signed
    finally:
        channel.close()


def test_apns_id_is_stable_per_key_and_tenant() -> None:
    m = message(**PUSH)
    assert apns_id(m) == apns_id(message(**PUSH)) != apns_id(message(**PUSH, tenant_id="other"))
    assert len(apns_id(m)) == 36


def test_apns_speaks_http2_by_default(server: ProviderServer) -> None:
    config = {k: v for k, v in apns(server).items() if k != "http2"}
    channel = ApnsChannel.from_dict(config)
    try:
        assert channel.config.http2 is True
        pool = channel.client._transport._pool  # httpx keeps the flag on its connection pool
        assert getattr(pool, "_http2", True) is True
    finally:
        channel.close()


# -- Web Push ----------------------------------------------------------------------


def webpush(server: ProviderServer, **kw: Any) -> dict[str, Any]:
    return {"type": "webpush", "subscriber": "mailto:ops@example.com", "push_hosts": ["127.0.0.1"],
            "allow_http": True, "allow_private": True, "timeout": 0.5, **kw}


def subscription_json(server: ProviderServer, keys: dict[str, Any], name: str = "sub-1") -> str:
    point = keys["receiver"].public_key().public_bytes(serialization.Encoding.X962,
                                                      serialization.PublicFormat.UncompressedPoint)
    return json.dumps({"endpoint": f"{server.url}/push/{name}", "expirationTime": None,
                       "keys": {"p256dh": b64url(point), "auth": b64url(keys["auth"])}})


def web_cases(server: ProviderServer, keys: dict[str, Any]) -> list[Case]:
    sub = {**PUSH, "to": subscription_json(server, keys)}
    created = Reply(201, "", {"Location": f"{server.url}/messages/m-1"})
    return [
        Case("sent", {"ttl_seconds": 600, "urgency": "high"}, [created], path="/push/sub-1", message=sub,
             request={"method": "POST", "header.content-encoding": "aes128gcm", "header.ttl": "600",
                      "header.urgency": "high", "header.content-type": "application/octet-stream",
                      "header.authorization": has("vapid t=", ",k=")},
             result={"status": "sent", "provider_id": f"{server.url}/messages/m-1"}),
        Case("gone is a bounce", {}, [Reply(410, "")], path="/push/sub-1", message=sub,
             result={"retryable": False, "error": bounced("410")}),
        Case("not found is a bounce", {}, [Reply(404, "")], path="/push/sub-1", message=sub,
             result={"retryable": False, "error": bounced("404")}),
        Case("too many requests", {}, [Reply(429, "", {"Retry-After": "12"})], path="/push/sub-1",
             message=sub, result={"retryable": True, "retry_after": 12.0}),
        Case("server error", {}, [Reply(502, "")], path="/push/sub-1", message=sub,
             result={"retryable": True}),
        Case("payload too large is permanent", {}, [Reply(413, "")], path="/push/sub-1", message=sub,
             result={"retryable": False, "error": permanent("413")}),
        Case("time-out", {"timeout": 0.2}, [Reply(201, "", delay=1.0)], path="/push/sub-1", message=sub,
             result={"retryable": True, "error": "unreachable: time-out after 0.2 s"}),
        Case("not a subscription", {}, [], path="/push", calls=0, message={**PUSH, "to": "fcm-token-123"},
             result={"retryable": False, "error": bounced("not a Web Push subscription")}),
        Case("unknown push host", {"push_hosts": ["fcm.googleapis.com"]}, [], path="/push", calls=0,
             message=sub, result={"retryable": False, "error": has("refused:", "push_hosts")}),
        Case("http endpoint", {"allow_http": False}, [], path="/push", calls=0, message=sub,
             result={"retryable": False, "error": has("refused:", "https")}),
    ]


def test_webpush_table(server: ProviderServer, keys: dict[str, Any]) -> None:
    for case in web_cases(server, keys):
        server.reset()
        run_case(server, WebPushChannel, Case(**{**case.__dict__, "config": webpush(server, **case.config)}))


def test_webpush_body_is_encrypted_and_vapid_signed(server: ProviderServer, keys: dict[str, Any]) -> None:
    server.script(Reply(201, ""))
    channel = WebPushChannel.from_dict(webpush(server))
    [result] = channel.send([message(**{**PUSH, "to": subscription_json(server, keys)})])
    channel.close()
    assert result.status == "sent"
    [request] = server.calls("/push/sub-1")
    assert b"50% off" not in request.body
    plain = http_ece.decrypt(request.body, private_key=keys["receiver"], auth_secret=keys["auth"],
                             version="aes128gcm")
    assert json.loads(plain) == {"title": "Sale", "body": "50% off ✓",
                                 "data": {**PUSH["payload"], "ceap_idempotency_key": "acme:dedup-1:sms"}}
    scheme, _, params = request.headers["authorization"].partition(" ")
    fields = dict(p.split("=", 1) for p in params.split(","))
    public = ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(), base64.urlsafe_b64decode(fields["k"] + "=="))
    claims = jwt.decode(fields["t"], public, algorithms=["ES256"], audience=server.url)
    assert scheme == "vapid" and claims["sub"] == "mailto:ops@example.com"
    vapid_point = keys["vapid"].public_key().public_bytes(serialization.Encoding.X962,
                                                         serialization.PublicFormat.UncompressedPoint)
    assert fields["k"] == b64url(vapid_point)


# -- every channel: registration and the conformance suite ---------------------------


def test_conformance_fcm(server: ProviderServer, tmp_path: Path) -> None:
    check_registration("channel", "fcm", FcmChannel)
    server.default = lambda r: FCM_OK
    check_channel(FcmChannel, fcm(server, sent_keys="keys.db"), PluginContext(base_dir=tmp_path),
                  make_messages(3, to=lambda i: f"device-{i}", channel="push"))
    assert len(server.calls(FCM_SEND)) == 5  # 3 first sends, 1 fresh key, 1 other tenant: no repeat


def test_conformance_apns(server: ProviderServer, tmp_path: Path) -> None:
    check_registration("channel", "apns", ApnsChannel)
    server.default = lambda r: Reply(200, "", {"apns-id": r.headers["apns-id"]})
    check_channel(ApnsChannel, apns(server, sent_keys="keys.db"), PluginContext(base_dir=tmp_path),
                  make_messages(3, to=lambda i: f"{i:064x}", channel="push"))
    assert len(server.calls("/3/device/")) == 5


def test_conformance_webpush(server: ProviderServer, keys: dict[str, Any], tmp_path: Path) -> None:
    check_registration("channel", "webpush", WebPushChannel)
    server.default = lambda r: Reply(201, "")
    check_channel(WebPushChannel, webpush(server, sent_keys="keys.db"), PluginContext(base_dir=tmp_path),
                  make_messages(3, to=lambda i: subscription_json(server, keys, f"s{i}"), channel="push"))
    assert len(server.calls("/push/")) == 5


@pytest.mark.parametrize(("channel", "config", "variable"), [
    (FcmChannel, fcm, "FCM_TOKEN"),
    (FcmChannel, lambda s: fcm(s, token_env=None, credentials_env="FCM_SA"), "FCM_SA"),
    (ApnsChannel, apns, "APNS_AUTH_KEY"),
    (WebPushChannel, webpush, "VAPID_PRIVATE_KEY"),
])
def test_an_unset_secret_variable_fails_when_the_channel_is_built(
        server: ProviderServer, monkeypatch: pytest.MonkeyPatch, channel: Any, config: Any,
        variable: str) -> None:
    """docs/project-config.md: `ceap dispatch` stops at start (exit 2) naming the variable,
    rather than failing every send later."""
    monkeypatch.delenv(variable, raising=False)
    with pytest.raises(PluginError, match=f"set the environment variable {variable}"):
        channel.from_dict(config(server))
