"""Tracking tokens: compact, ids only, signed; tampering, expiry, wrong kinds and
key rotation are refused."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from ceap.delivery.unsubscribe import PREVIOUS_SECRET_ENV, SECRET_ENV
from ceap.delivery.unsubscribe import make_token as make_unsubscribe_token
from ceap.outcomes.tokens import (
    NoSigningKey,
    TokenError,
    TokenExpired,
    link_hash,
    make_token,
    verify,
)

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
KEY = "tracking-secret-0123456789"
LINK = "https://shop.example/offer?code=SPRING"


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, KEY)
    monkeypatch.delenv(PREVIOUS_SECRET_ENV, raising=False)


def click(**kw: object) -> str:
    args: dict[str, object] = {"link": link_hash(LINK)}
    args.update(kw)
    return make_token("click", "acme", 123456, "email", T0 + timedelta(days=90), **args)  # type: ignore[arg-type]


def test_a_token_round_trips_and_holds_ids_only() -> None:
    token = click()
    claims = verify(token, kind="click", now=T0)
    assert (claims.tenant_id, claims.candidate_id, claims.channel, claims.link) == \
        ("acme", 123456, "email", link_hash(LINK))
    assert claims.expires_at == T0 + timedelta(days=90)
    assert len(token) <= 64 and token.isascii() and "/" not in token and "+" not in token
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert b"shop.example" not in raw and b"SPRING" not in raw  # the destination stays server-side
    opened = make_token("open", "acme", 7, "email", T0 + timedelta(days=1))
    assert verify(opened, kind="open", now=T0).link is None


def test_every_tampered_byte_is_refused() -> None:
    token = click()
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    for i in range(len(raw)):
        forged = bytearray(raw)
        forged[i] ^= 0x01
        text = base64.urlsafe_b64encode(bytes(forged)).rstrip(b"=").decode()
        with pytest.raises(TokenError):
            verify(text, kind="click", now=T0)
    # another link's hash, another candidate, another tenant: each needs a new signature
    for other in (click(link=link_hash("https://evil.example/")), make_token(
            "click", "acme", 999, "email", T0 + timedelta(days=90), link=link_hash(LINK))):
        body = base64.urlsafe_b64decode(other + "=" * (-len(other) % 4))[:-12]
        spliced = base64.urlsafe_b64encode(body + bytes(raw[-12:])).rstrip(b"=").decode()
        with pytest.raises(TokenError, match="signature"):
            verify(spliced, kind="click", now=T0)


def test_one_spelling_per_token() -> None:
    token = make_token("open", "acme", 7, "email", T0 + timedelta(days=1))
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert len(raw) % 3  # the last character carries unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for c in alphabet:
        other = token[:-1] + c
        if other != token:
            with pytest.raises(TokenError):
                verify(other, kind="open", now=T0)


@pytest.mark.parametrize("junk", ["", "x", "not base64!", "////", "A" * 2000, "AAAA.BBBB", "%00",
                                  "v1.eyJ0IjoiYSJ9.c2ln"])
def test_junk_is_refused(junk: str) -> None:
    with pytest.raises(TokenError):
        verify(junk, kind="click", now=T0)


def test_kinds_do_not_mix_and_unsubscribe_tokens_are_not_tracking_tokens() -> None:
    with pytest.raises(TokenError, match="not an open token"):
        verify(click(), kind="open", now=T0)
    unsubscribe = make_unsubscribe_token("acme", "alice", "email", now=T0)
    for kind in ("open", "click"):
        with pytest.raises(TokenError):
            verify(unsubscribe, kind=kind, now=T0)  # type: ignore[arg-type]


def test_an_expired_token_is_refused_as_expired() -> None:
    token = click()
    assert verify(token, kind="click", now=T0 + timedelta(days=89, hours=23)).candidate_id == 123456
    with pytest.raises(TokenExpired):
        verify(token, kind="click", now=T0 + timedelta(days=90))


def test_key_rotation_keeps_old_links_working_until_the_old_key_goes(monkeypatch: pytest.MonkeyPatch
                                                                      ) -> None:
    old = click()
    monkeypatch.setenv(SECRET_ENV, "the-next-tracking-secret-42")
    monkeypatch.setenv(PREVIOUS_SECRET_ENV, KEY)
    assert verify(old, kind="click", now=T0).candidate_id == 123456
    new = click()
    assert new != old and verify(new, kind="click", now=T0).candidate_id == 123456
    monkeypatch.delenv(PREVIOUS_SECRET_ENV)
    with pytest.raises(TokenError, match="signature"):
        verify(old, kind="click", now=T0)


def test_without_a_key_tokens_cannot_be_made_or_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    token = click()
    monkeypatch.delenv(SECRET_ENV)
    with pytest.raises(NoSigningKey, match="CEAP_SIGNING_SECRET"):
        verify(token, kind="click", now=T0)
    with pytest.raises(NoSigningKey):
        click()


def test_a_click_token_needs_a_link_hash() -> None:
    with pytest.raises(TokenError):
        make_token("click", "acme", 1, "email", T0)
    with pytest.raises(TokenError):
        make_token("open", "acme", 1, "email", T0, link=link_hash(LINK))
    with pytest.raises(TokenError):
        make_token("click", "acme", 1, "email", T0, link="short")
