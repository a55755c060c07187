"""Signed one-click unsubscribe links (RFC 8058) and the handler that honours them.

A token is ``v1.<claims>.<signature>``: the claims (tenant, customer, channel,
topic, issued-at and, for links in a message, the candidate) as base64url
JSON, signed with HMAC-SHA256. The key comes
from the environment, never from a file: ``CEAP_SIGNING_SECRET`` (at least 16
characters), and during a key rotation ``CEAP_SIGNING_SECRET_PREVIOUS`` is
still accepted for verifying.

A link is ``<unsubscribe_url>?token=<token>``. The endpoint that serves it
(see ``unsubscribe_response``) revokes consent on ``POST`` at once, which is
what mail clients send for ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``;
a ``GET`` (a person clicking, or a link scanner prefetching) only shows a
confirmation form, so scanners cannot unsubscribe anyone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from ceap.delivery.consent_store import ALL_TOPICS, revoke_consent
from ceap.errors import CeapError
from ceap.model import utcnow

SECRET_ENV = "CEAP_SIGNING_SECRET"
PREVIOUS_SECRET_ENV = "CEAP_SIGNING_SECRET_PREVIOUS"
VERSION = "v1"
MIN_SECRET = 16
SOURCE = "unsubscribe_link"


class UnsubscribeError(CeapError):
    """No signing key, or a token that is malformed, tampered with or too old."""


@dataclass(frozen=True)
class UnsubscribeClaims:
    tenant_id: str
    customer_id: str
    channel: str
    topic: str
    issued_at: datetime
    #: the candidate whose message held the link (recorded as an ``unsubscribed`` engagement)
    candidate_id: int | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signing_secrets(secret: str | bytes | None = None) -> list[bytes]:
    """The key to sign with first, then any older key still accepted."""
    if secret is not None:
        keys = [secret]
    else:
        current = os.environ.get(SECRET_ENV)
        if not current:
            raise UnsubscribeError(f"unsubscribe links need a signing key: set {SECRET_ENV}")
        keys = [current]
        previous = os.environ.get(PREVIOUS_SECRET_ENV)
        if previous:
            keys.append(previous)
    out = [k.encode() if isinstance(k, str) else k for k in keys]
    if len(out[0]) < MIN_SECRET:
        raise UnsubscribeError(f"the signing key must be at least {MIN_SECRET} characters")
    return out


def has_signing_secret() -> bool:
    return bool(os.environ.get(SECRET_ENV))


def _sign(key: bytes, body: str) -> str:
    return _b64(hmac.new(key, f"{VERSION}.{body}".encode(), hashlib.sha256).digest())


def make_token(tenant: str, customer: str, channel: str, topic: str = ALL_TOPICS, *,
               secret: str | bytes | None = None, now: datetime | None = None,
               candidate_id: int | None = None) -> str:
    issued = int((now or utcnow()).timestamp())
    claims: dict[str, Any] = {"t": tenant, "c": customer, "ch": channel, "tp": topic, "iat": issued}
    if candidate_id is not None:
        claims["cid"] = int(candidate_id)
    body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    return f"{VERSION}.{body}.{_sign(signing_secrets(secret)[0], body)}"


def make_link(base_url: str, tenant: str, customer: str, channel: str, topic: str = ALL_TOPICS, *,
              secret: str | bytes | None = None, now: datetime | None = None,
              candidate_id: int | None = None) -> str:
    """``base_url`` is the public URL of the unsubscribe endpoint."""
    token = make_token(tenant, customer, channel, topic, secret=secret, now=now, candidate_id=candidate_id)
    sep = "&" if "?" in base_url else "?"
    return f"{base_url}{sep}token={quote(token, safe='')}"


def verify(token: str, *, secret: str | bytes | None = None, max_age: timedelta | None = None,
           now: datetime | None = None) -> UnsubscribeClaims:
    """The claims of a genuine token; ``UnsubscribeError`` for anything else."""
    parts = (token or "").strip().split(".")
    if len(parts) != 3 or parts[0] != VERSION:
        raise UnsubscribeError("malformed unsubscribe token")
    body, signature = parts[1], parts[2]
    if not any(hmac.compare_digest(_sign(key, body), signature) for key in signing_secrets(secret)):
        raise UnsubscribeError("invalid unsubscribe token signature")
    try:
        claims = json.loads(_unb64(body))
        cid = claims.get("cid")
        result = UnsubscribeClaims(str(claims["t"]), str(claims["c"]), str(claims["ch"]),
                                   str(claims["tp"]), datetime.fromtimestamp(int(claims["iat"]), UTC),
                                   None if cid is None else int(cid))
    except (ValueError, KeyError, TypeError):
        raise UnsubscribeError("malformed unsubscribe token") from None
    if max_age is not None and (now or utcnow()) - result.issued_at > max_age:
        raise UnsubscribeError("unsubscribe token has expired")
    return result


def honour_unsubscribe(store: Any, token: str, *, secret: str | bytes | None = None,
                       now: datetime | None = None) -> UnsubscribeClaims:
    """Verify ``token`` and revoke the consent it names, at once; record it as an
    ``unsubscribed`` engagement (of the message's delivery when the link names it)."""
    from ceap.outcomes.engagement import record_unsubscribe

    claims = verify(token, secret=secret, now=now)
    revoke_consent(store, claims.tenant_id, claims.customer_id, claims.channel, claims.topic,
                   source=SOURCE, now=now)
    record_unsubscribe(store, claims, now or utcnow())
    return claims


def list_unsubscribe_headers(url: str, mailto: str | None = None) -> dict[str, str]:
    """RFC 2369 ``List-Unsubscribe`` with the RFC 8058 one-click ``List-Unsubscribe-Post``."""
    targets = [f"<{url}>"]
    if mailto:
        targets.append(f"<mailto:{mailto}>")
    return {"List-Unsubscribe": ", ".join(targets),
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


@dataclass(frozen=True)
class UnsubscribeResponse:
    status: int
    content_type: str
    body: str
    claims: UnsubscribeClaims | None = None


_PAGE = ("<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>"
         "<body><p>{text}</p>{form}</body></html>")


def unsubscribe_response(store: Any, method: str, token: str | None, *,
                         secret: str | bytes | None = None,
                         now: datetime | None = None) -> UnsubscribeResponse:
    """What the unsubscribe endpoint answers, whatever web framework serves it.

    ``POST`` (one-click from a mail client, or the confirmation form) revokes
    consent and answers 200 (no redirect, as RFC 8058 asks); ``GET`` answers a
    page with a form that POSTs the same token. A bad token is a 400 that says
    nothing about why beyond "invalid"."""
    if not token:
        return UnsubscribeResponse(400, "text/plain; charset=utf-8", "missing token")
    try:
        claims = (honour_unsubscribe(store, token, secret=secret, now=now) if method.upper() == "POST"
                  else verify(token, secret=secret, now=now))
    except UnsubscribeError:
        return UnsubscribeResponse(400, "text/plain; charset=utf-8", "invalid or expired link")
    what = "all messages" if claims.topic == ALL_TOPICS else f"“{claims.topic}” messages"
    if method.upper() == "POST":
        page = _PAGE.format(title="Unsubscribed", form="",
                            text=html.escape(f"You will no longer receive {what} by {claims.channel}."))
        return UnsubscribeResponse(200, "text/html; charset=utf-8", page, claims)
    form = (f'<form method="post"><input type="hidden" name="token" value="{html.escape(token)}">'
            f'<button type="submit">Unsubscribe</button></form>')
    page = _PAGE.format(title="Unsubscribe", form=form,
                        text=html.escape(f"Stop receiving {what} by {claims.channel}?"))
    return UnsubscribeResponse(200, "text/html; charset=utf-8", page, claims)


__all__ = ["PREVIOUS_SECRET_ENV", "SECRET_ENV", "UnsubscribeClaims", "UnsubscribeError",
           "UnsubscribeResponse", "has_signing_secret", "honour_unsubscribe",
           "list_unsubscribe_headers", "make_link", "make_token", "revoke_consent", "signing_secrets",
           "unsubscribe_response", "verify"]
