"""A generic signed webhook: each message is POSTed as JSON to a configured URL,
signed as Standard Webhooks specifies. It also carries "protect" actions (lock
an account, block a card): the body names the action and its payload.

Headers: ``webhook-id`` (the idempotency key, the same on every retry; prefixed
with ``<tenant>:`` unless the dispatcher's key already is, so one receiver
serving several tenants can deduplicate on it),
``webhook-timestamp`` (Unix seconds) and ``webhook-signature``
(``v1,<base64 HMAC-SHA256 over "id.timestamp.body">``), keyed with the secret
in the environment variable ``secret_env`` (``whsec_<base64>`` as Standard
Webhooks issues them, or any other text used as is). Body::

    {"type": "ceap.action", "timestamp": "2026-11-25T12:00:00Z",
     "data": {"action": "lock_account", "tenant_id": ..., "customer_id": ...,
              "program": ..., "category": ..., "candidate_id": ..., "idempotency_key": ...,
              "title": ..., "body": ..., "payload": {...}}}

The URL is user-configured, so the SSRF guard of ``http_common`` applies.
Answers: 2xx sent; 429 and 5xx retryable (with Retry-After); time-outs
retryable; other 4xx and 3xx permanent; the response body is never echoed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import string
import time
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import orjson
from pydantic import Field, SecretBytes, ValidationInfo, field_validator

from ceap.channels.base import ChannelConfig, Message
from ceap.channels.external import env_secret
from ceap.channels.http_client import HeaderSet
from ceap.channels.http_common import HttpChannel, HttpConfig, HttpRequest, Refused, check_url, origin
from ceap.errors import PluginError

#: placeholders a URL may hold, filled with the message's values (URL-quoted)
PLACEHOLDERS = ("tenant_id", "customer_id", "program")


#: orjson as ``json.dumps(default=str)`` does it: dates, times and dataclasses through ``str``
_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*").fullmatch  # what ``quote`` leaves as is


def fill_url(template: str, message: Message) -> str:
    values = {name: quote(str(getattr(message, name)), safe="") for name in PLACEHOLDERS}
    return template.format(**values)


def placeholders(template: str) -> tuple[str, ...]:
    """The placeholders ``template`` holds (none: it is the URL)."""
    return tuple(sorted({name for _, name, _, _ in string.Formatter().parse(template) if name}))


def dumps(value: Any) -> bytes:
    """Compact JSON in UTF-8, anything JSON has no type for as ``str``; orjson, or ``json``
    for what orjson refuses (an integer past 64 bits)."""
    try:
        return orjson.dumps(value, default=str, option=_JSON_OPTIONS)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode()


_stamp: tuple[int, str] = (-1, "")


def iso_seconds(ts: int) -> str:
    """``ts`` (Unix seconds) as ``2026-11-25T12:00:00Z`` (the last one kept)."""
    global _stamp
    last = _stamp
    if last[0] != ts:
        last = _stamp = (ts, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)))
    return last[1]


def check_template(url: str, allow_private: bool) -> None:
    """Raise ValueError unless ``url`` is an allowed http(s) URL with known placeholders only."""
    names = {name for _, name, _, _ in string.Formatter().parse(url) if name is not None}
    unknown = names - set(PLACEHOLDERS)
    if unknown:
        raise ValueError(f"unknown placeholder(s) {sorted(unknown)} in the URL (known: {list(PLACEHOLDERS)})")
    try:
        check_url(url.format(**dict.fromkeys(PLACEHOLDERS, "x")), allow_private)
    except Refused as exc:
        raise ValueError(str(exc)) from None


def webhook_id(m: Message) -> str:
    """The idempotency key, scoped by tenant (the dispatcher's keys already are)."""
    key = m.idempotency_key
    return key if key.startswith((f"{m.tenant_id}:", "sha256:")) else f"{m.tenant_id}:{key}"


def secret_key(value: str) -> bytes:
    """The HMAC key of a secret: ``whsec_<base64>`` decoded, any other text as UTF-8."""
    if value.startswith("whsec_"):
        try:
            return base64.b64decode(value[6:], validate=True)
        except binascii.Error:
            raise PluginError("webhook secret: 'whsec_' must be followed by base64") from None
    return value.encode()


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one message."""
    mac = hmac.digest(key, f"{msg_id}.{timestamp}.".encode() + body, "sha256")
    return "v1," + binascii.b2a_base64(mac, newline=False).decode()


class Signer:
    """``sign`` with one key: the HMAC-SHA256 key pads are hashed once (RFC 2104), and each
    signature copies the two states (no ``hmac`` object a message)."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes):
        if len(key) > 64:  # SHA-256's block
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def __repr__(self) -> str:
        return "Signer(**********)"

    def __call__(self, msg_id: str, timestamp: int, body: bytes) -> str:
        inner = self._inner.copy()
        inner.update(f"{msg_id}.{timestamp}.".encode())
        inner.update(body)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return "v1," + binascii.b2a_base64(outer.digest(), newline=False).decode()


def verify(key: bytes, headers: dict[str, str], body: bytes, tolerance: float = 300.0,
           now: float | None = None) -> bool:
    """What a receiver does: a signature of ``headers`` (lower-cased names) matches and the
    timestamp is within ``tolerance`` seconds."""
    try:
        msg_id, ts = headers["webhook-id"], int(headers["webhook-timestamp"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance:
        return False
    expected = sign(key, msg_id, ts, body).encode()
    return any(hmac.compare_digest(expected, sig.encode("utf-8", "surrogatepass"))
               for sig in headers.get("webhook-signature", "").split())


class WebhookConfig(HttpConfig):
    type: Literal["webhook"] = "webhook"
    url: str = Field(description="http(s) URL; may hold {tenant_id}, {customer_id}, {program}")
    secret_env: str = Field(description="environment variable holding the signing secret")
    event: str = Field("ceap.action", description="the body's 'type'")
    action: str | None = Field(None, description="the action the receiver takes (lock_account, ...); "
                                                 "default: the payload's 'action', else the event")
    headers: dict[str, str] = Field(default_factory=dict, description="extra headers (no secrets)")
    receiver_dedups: bool = Field(False, description="the receiver drops a webhook-id it has seen, so an "
                                                     "attempt in flight at a crash may be resent")

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str, info: ValidationInfo) -> str:
        check_template(url, bool(info.data.get("allow_private")))
        return url


class WebhookChannel(HttpChannel[WebhookConfig]):
    """POSTs each message as a signed Standard Webhooks event."""

    config_model: ClassVar[type[ChannelConfig]] = WebhookConfig
    default_rate_per_sec: ClassVar[float | None] = None  # the receiver's; set rate_per_sec

    def __init__(self, config: WebhookConfig, context: Any = None):
        super().__init__(config, context)
        self.provider_dedup = config.receiver_dedups  # type: ignore[misc]
        self._key = SecretBytes(secret_key(env_secret(self, config.secret_env, "signing secret")
                                           .get_secret_value()))
        self._sign = Signer(self._key.get_secret_value())
        self._fields = placeholders(config.url)
        #: the URL as (literal, placeholder) parts, when it has no format spec or conversion
        parsed = list(string.Formatter().parse(config.url))
        self._parts = None if any(spec or conv for _, _, spec, conv in parsed) else \
            tuple((literal, name) for literal, name, _, _ in parsed)
        self._headers = HeaderSet({**config.headers, "Content-Type": "application/json"},
                                  ("webhook-id", "webhook-timestamp", "webhook-signature"))

    def __repr__(self) -> str:
        return f"WebhookChannel(url={origin(self.config.url)}..., secret=**********)"

    def body(self, m: Message, ts: int | None = None) -> dict[str, Any]:
        """The event of ``m``, stamped ``ts`` (Unix seconds; default: now)."""
        action = self.config.action or m.payload.get("action") or self.config.event
        return {"type": self.config.event,
                "timestamp": iso_seconds(int(time.time()) if ts is None else ts),
                "data": {"action": action, "tenant_id": m.tenant_id, "customer_id": m.customer_id,
                         "program": m.program, "category": m.category, "candidate_id": m.candidate_id,
                         "idempotency_key": m.idempotency_key, "title": m.title, "body": m.body,
                         "payload": m.payload}}

    def url(self, m: Message) -> str:
        """The URL of ``m``: the configured one with its placeholders filled (URL-quoted)."""
        if not self._fields:
            return self.config.url
        if self._parts is not None:
            out = []
            for literal, name in self._parts:
                out.append(literal)
                if name:
                    value = str(getattr(m, name))
                    out.append(value if _UNRESERVED(value) else quote(value, safe=""))
            return "".join(out)
        values = {name: str(getattr(m, name)) for name in self._fields}
        return self.config.url.format(**{name: value if _UNRESERVED(value) else quote(value, safe="")
                                         for name, value in values.items()})

    def request(self, m: Message) -> HttpRequest:
        ts, msg_id = int(time.time()), webhook_id(m)
        body = dumps(self.body(m, ts))
        headers = self._headers(msg_id, str(ts), self._sign(msg_id, ts, body))
        return HttpRequest("POST", self.url(m), body, headers)
