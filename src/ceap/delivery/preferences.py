"""The preference center: through a signed link, a customer sees and changes their
consent per channel and topic, as a page (server-rendered, no script) or as JSON.

The link's token is signed as an unsubscribe token is (``ceap.delivery.unsubscribe``);
a preference link names the channel ``*`` (``make_preferences_link``), and any
genuine unsubscribe link of the customer opens the preference center too. What is
shown: every consent row of the customer, and the ``*`` row of each channel their
profile can be reached on (``email``, ``sms``, ``push``) and of ``inapp``; a topic
appears once a row names it. ``granted`` is ``null`` where nothing is recorded (the
channel's default mode applies, docs/policies.md). Each change goes to the consent
history and the audit log with the source ``preference_center``."""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from ceap.delivery.consent_store import ALL_TOPICS, list_consent, set_consent_tx
from ceap.delivery.unsubscribe import (
    MalformedToken,
    NoSigningKey,
    UnsubscribeClaims,
    UnsubscribeError,
    make_link,
    verify,
)
from ceap.model import utcnow

SOURCE = "preference_center"
ALL_CHANNELS = "*"
_REACH = (("email", "email"), ("phone", "sms"), ("push_token", "push"))


class PreferenceError(ValueError):
    """A change that names a channel or topic badly."""


@dataclass(frozen=True)
class Preference:
    channel: str
    topic: str
    granted: bool | None


def make_preferences_link(base_url: str, tenant: str, customer: str, *, secret: str | bytes | None = None,
                          now: datetime | None = None) -> str:
    """``base_url`` is the public URL of the preference page (``.../v1/preferences/page``)."""
    return make_link(base_url, tenant, customer, ALL_CHANNELS, ALL_TOPICS, secret=secret, now=now)


def preferences(store: Any, tenant: str, customer: str) -> list[Preference]:
    """What the preference center shows, sorted by channel then topic (``*`` first)."""
    rows = {(r.channel, r.topic): r.granted for r in list_consent(store, tenant, customer)}
    with store.tx() as tx:
        profile = tx.execute("SELECT email, phone, push_token FROM profiles WHERE tenant_id = ? "
                             "AND customer_id = ?", (tenant, customer)).fetchone()
    channels = {"inapp"} | {ch for ch, _ in rows}
    if profile:
        channels |= {channel for (_, channel), value in zip(_REACH, profile, strict=True) if value}
    for channel in channels:
        rows.setdefault((channel, ALL_TOPICS), None)  # type: ignore[arg-type]
    order = sorted(rows, key=lambda k: (k[0], k[1] != ALL_TOPICS, k[1]))
    return [Preference(ch, tp, rows[(ch, tp)]) for ch, tp in order]


def apply_changes(store: Any, claims: UnsubscribeClaims, changes: list[tuple[str, str, bool]], *,
                  origin: str | None = None, now: datetime | None = None) -> int:
    """Set consent as the customer asked, in one transaction; returns how many rows changed
    (asking for what is already recorded changes nothing)."""
    now = now or utcnow()
    shown = preferences(store, claims.tenant_id, claims.customer_id)
    current = {(p.channel, p.topic): p.granted for p in shown}
    for channel, topic, _ in changes:
        if not channel or channel == ALL_CHANNELS or not topic or len(channel) > 100 or len(topic) > 200:
            raise PreferenceError(f"channel {channel!r}, topic {topic!r}: give a channel name and a "
                                  "topic (or *)")
    todo = [(ch, tp, g) for ch, tp, g in changes if current.get((ch, tp)) is not g]
    with store.tx() as tx:
        for channel, topic, granted in todo:
            set_consent_tx(tx, claims.tenant_id, claims.customer_id, channel, topic, granted, SOURCE, now,
                           actor="customer", origin=origin)
    return len(todo)


def _claims(token: str | None, secret: str | bytes | None, now: datetime | None) -> UnsubscribeClaims:
    if not token:
        raise MalformedToken("missing token")
    return verify(token, secret=secret, now=now)


@dataclass(frozen=True)
class PageAnswer:
    status: int
    content_type: str
    body: str
    claims: UnsubscribeClaims | None = None


_TEXT = "text/plain; charset=utf-8"
_HTML = "text/html; charset=utf-8"
_STYLE = ("body{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem}"
          "table{border-collapse:collapse;width:100%}td,th{padding:.4rem;border-bottom:1px solid #ddd;"
          "text-align:left}button{margin-top:1rem;padding:.5rem 1rem}.ok{color:#060}")


def token_error(exc: Exception) -> tuple[int, str]:
    """The status and text for a bad token: as the unsubscribe endpoint answers."""
    if isinstance(exc, MalformedToken):
        return 400, "malformed link"
    if isinstance(exc, NoSigningKey):
        return 503, "preference links are not set up on this server"
    return 403, "invalid or expired link"


def _label(p: Preference) -> str:
    what = "everything" if p.topic == ALL_TOPICS else f"“{p.topic}”"
    return f"{p.channel}: {what}"


def _page(token: str, prefs: list[Preference], saved: int | None) -> str:
    rows = []
    for i, p in enumerate(prefs):
        options = [("yes", "Subscribed", p.granted is True), ("no", "Unsubscribed", p.granted is False)]
        if p.granted is None:
            options.insert(0, ("", "Not set (default)", True))
        choices = "".join(f'<option value="{v}"{" selected" if sel else ""}>{html.escape(t)}</option>'
                          for v, t, sel in options)
        rows.append(f'<tr><td><label for="p{i}">{html.escape(_label(p))}</label></td><td>'
                    f'<input type="hidden" name="key{i}" value="{html.escape(p.channel + chr(9) + p.topic)}">'
                    f'<select id="p{i}" name="value{i}">{choices}</select></td></tr>')
    note = "" if saved is None else f'<p class="ok" role="status">Saved ({saved} change(s)).</p>'
    action = f"?token={quote(token, safe='')}"
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Your preferences</title><style>{_STYLE}</style></head><body>"
            f"<h1>Your preferences</h1>{note}<p>Choose what we may send you, and how.</p>"
            f'<form method="post" action="{html.escape(action)}"><table>'
            f'<tr><th>Channel and topic</th><th>Choice</th></tr>{"".join(rows)}</table>'
            '<button type="submit">Save</button></form></body></html>')


def page_response(store: Any, method: str, token: str | None, form: dict[str, str] | None = None, *,
                  origin: str | None = None, secret: str | bytes | None = None,
                  now: datetime | None = None) -> PageAnswer:
    """The preference page: ``GET`` shows it, ``POST`` (its form) saves the choices and
    shows it again. A bad token answers as ``/v1/unsubscribe`` does (400, 403, 503)."""
    try:
        claims = _claims(token, secret, now)
    except UnsubscribeError as exc:
        status, text = token_error(exc)
        return PageAnswer(status, _TEXT, text)
    saved = None
    if method.upper() == "POST":
        changes = []
        for name, key in (form or {}).items():
            if not name.startswith("key") or "\t" not in key:
                continue
            value = (form or {}).get("value" + name[3:], "")
            if value in ("yes", "no"):
                channel, topic = key.split("\t", 1)
                changes.append((channel, topic, value == "yes"))
        try:
            saved = apply_changes(store, claims, changes, origin=origin, now=now)
        except PreferenceError as exc:
            return PageAnswer(400, _TEXT, str(exc), claims)
    prefs = preferences(store, claims.tenant_id, claims.customer_id)
    return PageAnswer(200, _HTML, _page(str(token).strip(), prefs, saved), claims)


__all__ = ["ALL_CHANNELS", "SOURCE", "PageAnswer", "Preference", "PreferenceError", "apply_changes",
           "make_preferences_link", "page_response", "preferences", "token_error"]
