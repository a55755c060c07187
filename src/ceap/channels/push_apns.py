"""Push notifications through Apple's APNs provider API (HTTP/2).

``POST {base_url}/3/device/{token}`` with ``apns-topic`` (the app's bundle
id), ``apns-push-type: alert``, ``apns-priority`` and ``apns-id``, and the
body ``{"aps": {"alert": {"title", "body"}}, ...payload, "ceap_idempotency_key"}``.
Authentication is a provider token: an ES256 JWT (``kid`` = key id, ``iss`` = team id) signed
with the .p8 key from ``key_env`` (the PEM, or a path to it), reused for 50
minutes (Apple refuses tokens older than an hour and refreshes more often
than every 20 minutes). Needs ``pip install 'ceap[apns]'`` (h2, PyJWT).

APNs requires HTTP/2: ``http2`` is on by default; tests may turn it off to
talk to a local HTTP/1.1 server.

Idempotency: ``apns-id`` is a UUID derived from the tenant and the
idempotency key, so a resend carries the same id, but APNs does not
deduplicate by it (it only echoes it): ``provider_dedup`` is False.

Rate: Apple publishes no per-second limit (it answers 429 TooManyRequests
to a device flooded with pushes); ``default_rate_per_sec = 1000`` is a
conservative default for one connection.

Errors: 410 Unregistered, 400 BadDeviceToken and DeviceTokenNotForTopic are
bounces (suppress the token); 429 and 5xx are retried; 403
ExpiredProviderToken renews the JWT and is retried; other 4xx are permanent.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field

from ceap.channels.base import ChannelConfig, Message, SendResult, push_data
from ceap.channels.external import UNREACHABLE, ExternalChannel, ExternalConfig, env_secret
from ceap.channels.http_status import http_failure
from ceap.channels.receipts import APNS_RETRYABLE, apns_error
from ceap.errors import PluginError

PRODUCTION = "https://api.push.apple.com"
SANDBOX = "https://api.sandbox.push.apple.com"
PAYLOAD_MAX = 4096  # bytes, for alert notifications
TOKEN_REUSE = 50 * 60  # seconds
_NAMESPACE = uuid.UUID("5f0c6f5e-3c2b-4d57-9a55-2b1d0c6e4a10")


class ApnsConfig(ExternalConfig):
    type: Literal["apns"] = "apns"
    base_url: str = Field(PRODUCTION, description=f"{PRODUCTION}, or {SANDBOX} for development builds")
    topic: str = Field(description="the app's bundle id")
    team_id: str = Field(pattern=r"^[A-Z0-9]{10}$", description="Apple developer team id")
    key_id: str = Field(pattern=r"^[A-Z0-9]{10}$", description="id of the .p8 signing key")
    key_env: str = Field("APNS_AUTH_KEY", description="env var holding the .p8 key (PEM) or its path")
    http2: bool = Field(True, description="APNs requires HTTP/2; off only for tests")
    timeout: float = Field(10.0, gt=0, le=120, description="seconds per request")
    priority: Literal[5, 10] = 10
    expiration_seconds: int | None = Field(None, ge=0, description="how long APNs keeps an undelivered "
                                           "push (0: try once; None: APNs' default)")
    sound: str | None = None


def apns_id(message: Message) -> str:
    """The same UUID for every attempt of one message."""
    return str(uuid.uuid5(_NAMESPACE, f"{message.tenant_id}\x00{message.idempotency_key}"))


class ApnsChannel(ExternalChannel[ApnsConfig]):
    config_model: ClassVar[type[ChannelConfig]] = ApnsConfig
    address: ClassVar[str | None] = "push_token"
    default_rate_per_sec: ClassVar[float | None] = 1000.0

    def __init__(self, config: ApnsConfig, context: Any = None):
        super().__init__(config, context)
        env_secret(self, config.key_env, "APNs signing key")  # fail when built, naming the variable
        # one connection multiplexes every stream over HTTP/2; httpx's client is thread-safe
        self.client = httpx.Client(http2=config.http2, timeout=config.timeout, follow_redirects=False,
                                   trust_env=False, headers={"User-Agent": "ceap"})
        self._jwt: tuple[str, float] | None = None
        self._jwt_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ApnsChannel(topic={self.config.topic}, key_id={self.config.key_id}, key=**********)"

    def provider_token(self) -> str:
        with self._jwt_lock:
            if self._jwt and time.monotonic() - self._jwt[1] < TOKEN_REUSE:
                return self._jwt[0]
            try:
                import jwt
            except ImportError:
                raise PluginError("apns: the provider token needs PyJWT: pip install 'ceap[apns]'") from None
            raw = env_secret(self, self.config.key_env, "APNs signing key").get_secret_value()
            key = raw if "-----BEGIN" in raw else self.context.path(raw).read_text()
            token = jwt.encode({"iss": self.config.team_id, "iat": int(time.time())}, key,
                               algorithm="ES256", headers={"kid": self.config.key_id})
            self._jwt = (token, time.monotonic())
            return token

    def payload(self, message: Message) -> bytes:
        aps: dict[str, Any] = {"alert": {"title": message.title, "body": message.body}}
        if self.config.sound:
            aps["sound"] = self.config.sound
        extra = {k: v for k, v in push_data(message).items() if k != "aps"}
        return json.dumps({"aps": aps, **extra}, separators=(",", ":"), ensure_ascii=False,
                          default=str).encode()

    def deliver_one(self, message: Message) -> SendResult:
        cfg, key = self.config, message.idempotency_key
        body = self.payload(message)
        if len(body) > PAYLOAD_MAX:
            return SendResult(key, "failed", error=f"APNs payload of {len(body)} bytes, over {PAYLOAD_MAX}")
        headers = {"authorization": f"bearer {self.provider_token()}", "apns-topic": cfg.topic,
                   "apns-push-type": "alert", "apns-priority": str(cfg.priority),
                   "apns-id": apns_id(message), "content-type": "application/json"}
        if cfg.expiration_seconds is not None:
            n = cfg.expiration_seconds
            headers["apns-expiration"] = str(int(time.time()) + n) if n else "0"
        try:
            response = self.client.post(f"{cfg.base_url.rstrip('/')}/3/device/{message.to}",
                                        content=body, headers=headers)
        except httpx.TimeoutException:
            return SendResult(key, "failed", error=f"{UNREACHABLE} time-out after {cfg.timeout:g} s",
                              retryable=True)
        except httpx.HTTPError as exc:
            return SendResult(key, "failed", error=f"{UNREACHABLE} {type(exc).__name__}", retryable=True)
        return self.result(key, response)

    def result(self, key: str, response: httpx.Response) -> SendResult:
        if response.is_success:
            return SendResult(key, "sent", provider_id=response.headers.get("apns-id"))
        try:
            reason = str(response.json().get("reason") or "")
        except (ValueError, AttributeError):
            reason = ""
        if reason == "ExpiredProviderToken":
            with self._jwt_lock:
                self._jwt = None  # sign a new one for the retry
        return http_failure(key, response.status_code, response.headers,
                            apns_error(response.status_code, reason),
                            retryable=True if reason in APNS_RETRYABLE else None)

    def close(self) -> None:
        super().close()
        self.client.close()
