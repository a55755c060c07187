"""Browser push through the Web Push protocol (RFC 8030), with VAPID (RFC 8292)
and the aes128gcm encryption (RFC 8291) done by ``pywebpush``.

The address is the browser's subscription, as the JSON its
``PushSubscription.toJSON()`` gives (``{"endpoint", "keys": {"p256dh",
"auth"}}``), kept in the profile's ``push_token``. The message goes to the
subscription's endpoint as an encrypted JSON ``{"title", "body", "data"}`` (data:
the payload and ``ceap_idempotency_key``)
with ``Authorization: vapid t=<JWT>, k=<public key>``, ``TTL`` and
``Urgency``. Needs ``pip install 'ceap[webpush]'``.

The endpoint comes from a browser, so it is checked before any request:
https only, and its host must be one of ``push_hosts`` (the push services
of Chrome, Firefox, Safari and Edge by default); then ``http_common``'s SSRF
guard checks the addresses it resolves to when it connects. A forged
subscription cannot make the platform call an internal address.

Rate: push services publish no limit; ``default_rate_per_sec = 100``.
Idempotency: none (``Topic`` only replaces a pending message).
Errors: 404 and 410 mean the subscription expired: a bounce (suppress it);
429 and 5xx are retried with ``Retry-After``; other 4xx are permanent.
"""

from __future__ import annotations

import http.client
import json
import time
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field

from ceap.channels.base import ChannelConfig, Message, SendResult, push_data
from ceap.channels.external import env_secret
from ceap.channels.http_common import HttpChannel, HttpConfig, Refused, failure_for
from ceap.channels.http_status import http_failure
from ceap.channels.receipts import bounce, webpush_error
from ceap.errors import PluginError

PUSH_HOSTS = ["fcm.googleapis.com", "android.googleapis.com", "push.services.mozilla.com",
              "push.apple.com", "notify.windows.com"]


class WebPushConfig(HttpConfig):
    type: Literal["webpush"] = "webpush"
    vapid_private_key_env: str = Field("VAPID_PRIVATE_KEY", description="env var holding the VAPID "
                                       "private key (PEM, or base64url raw/DER as py_vapid takes it)")
    subscriber: str = Field(pattern=r"^(mailto:|https://)", description="VAPID 'sub': a mailto: or "
                            "https: contact for the push services")
    ttl_seconds: int = Field(86400, ge=0, le=2419200, description="how long the push service keeps it")
    urgency: Literal["very-low", "low", "normal", "high"] = "normal"
    push_hosts: list[str] = Field(default_factory=lambda: list(PUSH_HOSTS), min_length=1,
                                  description="hosts (and their subdomains) a subscription may point to")
    allow_http: bool = Field(False, description="accept http:// endpoints (tests only)")


def subscription(to: str | None) -> dict[str, Any] | None:
    """The subscription JSON in ``to``, or None if it is not one."""
    try:
        sub = json.loads(to or "")
    except ValueError:
        return None
    keys = sub.get("keys") if isinstance(sub, dict) else None
    if not (isinstance(sub.get("endpoint"), str) and isinstance(keys, dict)
            and keys.get("p256dh") and keys.get("auth")):
        return None
    return dict(sub)


class WebPushChannel(HttpChannel[WebPushConfig]):
    config_model: ClassVar[type[ChannelConfig]] = WebPushConfig
    address: ClassVar[str | None] = "push_token"
    default_rate_per_sec: ClassVar[float | None] = 100.0

    def __init__(self, config: WebPushConfig, context: Any = None):
        super().__init__(config, context)
        env_secret(self, config.vapid_private_key_env, "VAPID private key")  # fail when built
        self._vapid: Any = None

    def __repr__(self) -> str:
        return f"WebPushChannel(subscriber={self.config.subscriber}, vapid_key=**********)"

    def vapid(self) -> Any:
        if self._vapid is None:
            try:
                from py_vapid import Vapid
            except ImportError:
                raise PluginError("webpush needs pywebpush: pip install 'ceap[webpush]'") from None
            key = env_secret(self, self.config.vapid_private_key_env, "VAPID private key").get_secret_value()
            self._vapid = (Vapid.from_pem(key.strip().encode()) if "-----BEGIN" in key
                           else Vapid.from_string(key.strip()))
        return self._vapid

    def endpoint_refused(self, endpoint: str) -> str | None:
        parts = urlsplit(endpoint)
        host = (parts.hostname or "").lower()
        if parts.scheme != "https" and not (parts.scheme == "http" and self.config.allow_http):
            return f"endpoint scheme {parts.scheme or '?'!r} is not https"
        if not any(host == h or host.endswith("." + h) for h in self.config.push_hosts):
            return f"endpoint host {host!r} is not a known push service (push_hosts)"
        return None

    def deliver_one(self, message: Message) -> SendResult:
        from pywebpush import WebPusher

        key = message.idempotency_key
        sub = subscription(message.to)
        if sub is None:
            return SendResult(key, "failed", error=bounce("push_token is not a Web Push subscription JSON"))
        refused = self.endpoint_refused(sub["endpoint"])
        if refused:
            return SendResult(key, "failed", error=f"refused: {refused}")
        data = json.dumps({"title": message.title, "body": message.body, "data": push_data(message)},
                          ensure_ascii=False, default=str).encode()
        try:
            body = WebPusher(sub).encode(data, "aes128gcm")["body"]
        except Exception as exc:  # malformed p256dh/auth keys
            return SendResult(key, "failed",
                              error=bounce(f"invalid subscription keys ({type(exc).__name__})"))
        parts = urlsplit(sub["endpoint"])
        claims = {"sub": self.config.subscriber, "aud": f"{parts.scheme}://{parts.netloc}",
                  "exp": int(time.time()) + 12 * 3600}
        headers = {**self.vapid().sign(claims), "TTL": str(self.config.ttl_seconds),
                   "Urgency": self.config.urgency, "Content-Encoding": "aes128gcm",
                   "Content-Type": "application/octet-stream"}
        try:
            response = self.client.request("POST", sub["endpoint"], body, headers)
        except (Refused, OSError, http.client.HTTPException) as exc:
            return failure_for(key, exc, self.client.timeout)
        if 200 <= response.status < 300:
            return SendResult(key, "sent", provider_id=response.headers.get("location"))
        return http_failure(key, response.status, response.headers, webpush_error(response.status))
