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
import re
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


class MalformedToken(UnsubscribeError):
    """Not a token at all: it does not have the shape of ``TOKEN_PATTERN``."""


class NoSigningKey(UnsubscribeError):
    """This process has no (usable) signing key: no token can be checked."""


#: what every token looks like: ``v1.<base64url claims>.<base64url HMAC-SHA256>``
TOKEN_PATTERN = r"^v1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}$"
TOKEN_MAX_LENGTH = 4096
_TOKEN = re.compile(TOKEN_PATTERN.rstrip("$") + r"\Z")


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
            raise NoSigningKey(f"unsubscribe links need a signing key: set {SECRET_ENV}")
        keys = [current]
        previous = os.environ.get(PREVIOUS_SECRET_ENV)
        if previous:
            keys.append(previous)
    out = [k.encode() if isinstance(k, str) else k for k in keys]
    if len(out[0]) < MIN_SECRET:
        raise NoSigningKey(f"the signing key must be at least {MIN_SECRET} characters")
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
    """The claims of a genuine token; ``MalformedToken`` for text that is no token (checked
    before anything else, so no other text reaches the signature check), ``NoSigningKey``,
    or ``UnsubscribeError`` for a forged or expired one."""
    token = (token or "").strip()
    if len(token) > TOKEN_MAX_LENGTH or not _TOKEN.match(token):
        raise MalformedToken("malformed unsubscribe token")
    _, body, signature = token.split(".")
    keys = signing_secrets(secret)
    if not any(hmac.compare_digest(_sign(key, body), signature) for key in keys):
        raise UnsubscribeError("invalid unsubscribe token signature")
    try:
        claims = json.loads(_unb64(body))
        cid = claims.get("cid")
        result = UnsubscribeClaims(str(claims["t"]), str(claims["c"]), str(claims["ch"]),
                                   str(claims["tp"]), datetime.fromtimestamp(int(claims["iat"]), UTC),
                                   None if cid is None else int(cid))
    except (ValueError, KeyError, TypeError, OverflowError, OSError, RecursionError, AttributeError):
        raise UnsubscribeError("unreadable unsubscribe token claims") from None
    if max_age is not None and (now or utcnow()) - result.issued_at > max_age:
        raise UnsubscribeError("unsubscribe token has expired")
    return result


def honour_unsubscribe(store: Any, token: str, *, secret: str | bytes | None = None,
                       now: datetime | None = None) -> UnsubscribeClaims:
    """Verify ``token`` and revoke the consent it names, at once; record it as an
    ``unsubscribed`` engagement (of the message's delivery when the link names it)."""
    from ceap.outcomes.engagement import record_unsubscribe

    claims = verify(token, secret=secret, now=now)
    if claims.channel == "*":  # a preference-center link: it opens the page, it unsubscribes nothing
        raise UnsubscribeError("a preference link is not an unsubscribe link")
    revoke_consent(store, claims.tenant_id, claims.customer_id, claims.channel, claims.topic,
                   source=SOURCE, now=now, actor="customer", origin="unsubscribe link")
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


_TEXT = "text/plain; charset=utf-8"


def unsubscribe_response(store: Any, method: str, token: str | None, *,
                         secret: str | bytes | None = None,
                         now: datetime | None = None) -> UnsubscribeResponse:
    """What the unsubscribe endpoint answers, whatever web framework serves it.

    ``POST`` (one-click from a mail client, or the confirmation form) revokes
    consent and answers 200 (no redirect, as RFC 8058 asks); ``GET`` answers a
    page with a form that POSTs the same token. A missing or malformed token is a
    400, a forged or expired one a 403 that says nothing about why, and a server
    without a signing key answers 503."""
    if not token:
        return UnsubscribeResponse(400, _TEXT, "missing token")
    try:
        claims = (honour_unsubscribe(store, token, secret=secret, now=now) if method.upper() == "POST"
                  else verify(token, secret=secret, now=now))
    except MalformedToken:
        return UnsubscribeResponse(400, _TEXT, "malformed link")
    except NoSigningKey:
        return UnsubscribeResponse(503, _TEXT, "unsubscribe links are not set up on this server")
    except UnsubscribeError:
        return UnsubscribeResponse(403, _TEXT, "invalid or expired link")
    what = "all messages" if claims.topic == ALL_TOPICS else f"“{claims.topic}” messages"
    if method.upper() == "POST":
        page = _PAGE.format(title="Unsubscribed", form="",
                            text=html.escape(f"You will no longer receive {what} by {claims.channel}."))
        return UnsubscribeResponse(200, "text/html; charset=utf-8", page, claims)
    form = (f'<form method="post" action="?token={quote(token.strip(), safe="")}">'
            f'<input type="hidden" name="List-Unsubscribe" value="One-Click">'
            f'<button type="submit">Unsubscribe</button></form>')
    page = _PAGE.format(title="Unsubscribe", form=form,
                        text=html.escape(f"Stop receiving {what} by {claims.channel}?"))
    return UnsubscribeResponse(200, "text/html; charset=utf-8", page, claims)


__all__ = ["PREVIOUS_SECRET_ENV", "SECRET_ENV", "TOKEN_MAX_LENGTH", "TOKEN_PATTERN", "MalformedToken",
           "NoSigningKey", "UnsubscribeClaims", "UnsubscribeError",
           "UnsubscribeResponse", "has_signing_secret", "honour_unsubscribe",
           "list_unsubscribe_headers", "make_link", "make_token", "revoke_consent", "signing_secrets",
           "unsubscribe_response", "verify"]
