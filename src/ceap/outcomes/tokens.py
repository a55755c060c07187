"""Signed tracking tokens for the open pixel and click links.

A token holds ids only, never personal data: the tenant, the candidate, the
channel (together they name one delivery), the expiry and, for a click, the
first 8 bytes of the SHA-256 of the link's destination. It is packed in
binary and signed with HMAC-SHA256 (truncated to 12 bytes) under a key
derived from ``CEAP_SIGNING_SECRET`` (``CEAP_SIGNING_SECRET_PREVIOUS`` is still
accepted during a key rotation, as for unsubscribe links), then base64url
encoded: about 60 characters.

The destination itself is stored server-side (``tracked_links``, keyed by the
hash), so a click can only ever redirect to a URL that was in a message the
platform rendered, and a tampered token fails its signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from ceap.delivery.unsubscribe import UnsubscribeError, signing_secrets
from ceap.errors import CeapError

VERSION = 1
MAC_BYTES = 12
HASH_BYTES = 8
MAX_TOKEN = 1024
_CONTEXT = b"ceap-tracking-v1"
_HEAD = struct.Struct(">BBIQ")  # version, kind, expiry (Unix seconds), candidate id
_KINDS = {"open": 0, "click": 1}
_NAMES = {v: k for k, v in _KINDS.items()}
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")

Kind = Literal["open", "click"]


class TokenError(CeapError):
    """A token that is malformed, tampered with or of the wrong kind."""


class TokenExpired(TokenError):
    """A genuine token past its expiry."""


class NoSigningKey(TokenError):
    """The server has no signing key: tracking is not set up."""


@dataclass(frozen=True)
class TrackingClaims:
    kind: Kind
    tenant_id: str
    candidate_id: int
    channel: str
    expires_at: datetime
    link: str | None = None  # clicks: link_hash(destination)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not _B64URL.match(text):
        raise TokenError("malformed tracking token")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("malformed tracking token") from None
    if _b64(data) != text:  # one spelling per token: unused low bits of the last character must be 0
        raise TokenError("malformed tracking token")
    return data


def link_hash(url: str) -> str:
    """The stored key of a destination: 8 bytes of its SHA-256, base64url (11 characters)."""
    return _b64(hashlib.sha256(url.encode()).digest()[:HASH_BYTES])


def _keys(secret: str | bytes | None) -> list[bytes]:
    try:
        raw = signing_secrets(secret)
    except UnsubscribeError as exc:
        raise NoSigningKey(str(exc).replace("unsubscribe links", "tracking links")) from None
    # a key of its own, so a tracking token can never pass as an unsubscribe token
    return [hmac.new(k, _CONTEXT, hashlib.sha256).digest() for k in raw]


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()[:MAC_BYTES]


def _text(value: str, what: str) -> bytes:
    data = value.encode()
    if not data or len(data) > 255:
        raise TokenError(f"{what} must be 1 to 255 bytes")
    return bytes([len(data)]) + data


def make_token(kind: Kind, tenant_id: str, candidate_id: int, channel: str, expires_at: datetime, *,
               link: str | None = None, secret: str | bytes | None = None) -> str:
    """A signed token; ``link`` (``link_hash`` of the destination) is required for clicks."""
    if (kind == "click") != (link is not None):
        raise TokenError("a click token needs the link's hash, an open token none")
    body = _HEAD.pack(VERSION, _KINDS[kind], int(expires_at.timestamp()), int(candidate_id))
    body += _text(tenant_id, "tenant") + _text(channel, "channel")
    if link is not None:
        digest = _unb64(link)
        if len(digest) != HASH_BYTES:
            raise TokenError("not a link hash")
        body += digest
    return _b64(body + _mac(_keys(secret)[0], body))


def verify(token: str, *, kind: Kind, now: datetime, secret: str | bytes | None = None) -> TrackingClaims:
    """The claims of a genuine, unexpired token of ``kind``; ``TokenError`` otherwise
    (``TokenExpired`` for a genuine one past its expiry, ``NoSigningKey`` without a key)."""
    if not token or len(token) > MAX_TOKEN:
        raise TokenError("malformed tracking token")
    data = _unb64(token)
    if len(data) < _HEAD.size + 4 + MAC_BYTES:
        raise TokenError("malformed tracking token")
    body, mac = data[:-MAC_BYTES], data[-MAC_BYTES:]
    if not any(hmac.compare_digest(_mac(k, body), mac) for k in _keys(secret)):
        raise TokenError("invalid tracking token signature")
    version, code, expiry, candidate = _HEAD.unpack_from(body)
    if version != VERSION or _NAMES.get(code) != kind:
        raise TokenError(f"not {'an open' if kind == 'open' else 'a click'} token")
    at = _HEAD.size
    try:
        texts = []
        for _ in range(2):
            n = body[at]
            texts.append(body[at + 1:at + 1 + n].decode())
            if len(texts[-1].encode()) != n:
                raise ValueError
            at += 1 + n
    except (IndexError, ValueError):
        raise TokenError("malformed tracking token") from None
    rest = body[at:]
    if len(rest) != (HASH_BYTES if kind == "click" else 0):
        raise TokenError("malformed tracking token")
    expires = datetime.fromtimestamp(expiry, UTC)
    if now >= expires:
        raise TokenExpired("the link has expired")
    return TrackingClaims(kind, texts[0], candidate, texts[1], expires, _b64(rest) if rest else None)


__all__ = ["NoSigningKey", "TokenError", "TokenExpired", "TrackingClaims", "link_hash", "make_token",
           "verify"]
