"""Consent and suppressions: what customers agreed to, and addresses never to use.

Consent rows are per customer, channel and topic; the topic ``*`` stands for
every topic on the channel. A row for the exact topic wins over the ``*`` row,
and revoking ``*`` also revokes every topic row of that channel, so an
"unsubscribe from everything" (or an SMS STOP) is never undone by an older
per-topic grant. Suppressions are per channel (or the address kind, e.g.
``email``, or ``*``) and address: a hard bounce, a complaint, a STOP from a
number no profile has.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from ceap.model import utcnow
from ceap.store.schema import from_iso
from ceap.store.tx import Tx

ALL_TOPICS = "*"
STOP_KEYWORDS = frozenset({"STOP", "QUIT", "END", "REVOKE", "OPT OUT", "OPTOUT", "CANCEL",
                           "UNSUBSCRIBE", "STOP ALL", "STOPALL"})
START_KEYWORDS = frozenset({"START", "UNSTOP"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})
STOP_REASON = "sms_stop"
_CHUNK = 500


@dataclass(frozen=True)
class ConsentRecord:
    tenant_id: str
    customer_id: str
    channel: str
    topic: str
    granted: bool
    source: str | None
    updated_at: datetime | None


@dataclass(frozen=True)
class Suppression:
    tenant_id: str
    channel: str
    address: str
    reason: str
    created_at: datetime | None


@dataclass(frozen=True)
class InboundResult:
    """What an inbound SMS did: ``stop`` revoked consent, ``start`` restored it,
    ``help`` asks the channel to reply with help text, ``none`` was not a keyword."""

    action: Literal["stop", "start", "help", "none"]
    customers: tuple[str, ...] = ()
    keyword: str | None = None


def normalize_address(value: str | None, kind: str | None = None) -> str | None:
    """E-mail addresses compare case-insensitively; phone numbers by their digits;
    anything else by its stripped text."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    if kind == "email" or (kind is None and "@" in text):
        return text.lower()
    if kind == "phone":
        return normalize_phone(text)
    return text


def normalize_phone(value: str) -> str:
    """The digits of a phone number: ``+1 (555) 010-9999`` -> ``15550109999``."""
    return re.sub(r"\D", "", value)


def _upsert(tx: Tx, tenant: str, customer: str, channel: str, topic: str, granted: bool,
            source: str | None, now: datetime) -> None:
    tx.execute("INSERT INTO consent (tenant_id, customer_id, channel, topic, granted, source, "
               "updated_at) VALUES (?,?,?,?,?,?,?) ON CONFLICT (tenant_id, customer_id, channel, "
               "topic) DO UPDATE SET granted = excluded.granted, source = excluded.source, "
               "updated_at = excluded.updated_at",
               (tenant, customer, channel, topic, granted, source, tx.ts(now)))


def set_consent(store: Any, tenant: str, customer: str, channel: str, topic: str = ALL_TOPICS,
                granted: bool = True, source: str | None = None, now: datetime | None = None) -> None:
    """Record a grant or a revocation; revoking ``*`` revokes every topic of the channel."""
    now = now or utcnow()
    with store.tx() as tx:
        if not granted and topic == ALL_TOPICS:
            tx.execute("UPDATE consent SET granted = ?, source = ?, updated_at = ? "
                       "WHERE tenant_id = ? AND customer_id = ? AND channel = ?",
                       (False, source, tx.ts(now), tenant, customer, channel))
        _upsert(tx, tenant, customer, channel, topic, granted, source, now)


def grant_consent(store: Any, tenant: str, customer: str, channel: str, topic: str = ALL_TOPICS,
                  source: str | None = None, now: datetime | None = None) -> None:
    set_consent(store, tenant, customer, channel, topic, True, source, now)


def revoke_consent(store: Any, tenant: str, customer: str, channel: str, topic: str = ALL_TOPICS,
                   source: str | None = None, now: datetime | None = None) -> None:
    """Takes effect at once: the next dispatch pass drops the channel for this topic."""
    set_consent(store, tenant, customer, channel, topic, False, source, now)


def list_consent(store: Any, tenant: str, customer: str) -> list[ConsentRecord]:
    with store.tx() as tx:
        rows = tx.execute("SELECT channel, topic, granted, source, updated_at FROM consent "
                          "WHERE tenant_id = ? AND customer_id = ? ORDER BY channel, topic",
                          (tenant, customer)).fetchall()
    return [ConsentRecord(tenant, customer, r[0], r[1], bool(r[2]), r[3], from_iso(r[4])) for r in rows]


def load_consent(tx: Tx, tenant: str, customers: Iterable[str]) -> dict[tuple[str, str, str], bool]:
    """``(customer, channel, topic) -> granted`` for a batch of customers (one query per 500)."""
    ids = sorted(set(customers))
    found: dict[tuple[str, str, str], bool] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start:start + _CHUNK]
        rows = tx.execute(f"SELECT customer_id, channel, topic, granted FROM consent WHERE tenant_id = ? "
                          f"AND customer_id IN ({tx.placeholders(len(chunk))})", (tenant, *chunk))
        for customer, channel, topic, granted in rows.fetchall():
            found[(customer, channel, topic)] = bool(granted)
    return found


# -- suppressions ----------------------------------------------------------------


def add_suppression(store: Any, tenant: str, channel: str, address: str, reason: str,
                    now: datetime | None = None, kind: str | None = None) -> None:
    """Never use ``address`` on ``channel`` again (``channel`` may also be an address
    kind such as ``email`` or ``phone``, or ``*``). ``reason``: hard_bounce, complaint,
    sms_stop, manual..."""
    norm = normalize_address(address, kind or _kind(channel))
    if not norm:
        raise ValueError("a suppression needs an address")
    now = now or utcnow()
    with store.tx() as tx:
        tx.execute("INSERT INTO suppressions (tenant_id, channel, address, reason, created_at) "
                   "VALUES (?,?,?,?,?) ON CONFLICT (tenant_id, channel, address) DO UPDATE SET "
                   "reason = excluded.reason, created_at = excluded.created_at",
                   (tenant, channel, norm, reason, tx.ts(now)))


def remove_suppression(store: Any, tenant: str, channel: str, address: str,
                       kind: str | None = None) -> bool:
    norm = normalize_address(address, kind or _kind(channel))
    with store.tx() as tx:
        cur = tx.execute("DELETE FROM suppressions WHERE tenant_id = ? AND channel = ? AND address = ?",
                         (tenant, channel, norm))
        return bool(cur.rowcount)


def list_suppressions(store: Any, tenant: str, channel: str | None = None,
                      limit: int = 1000) -> list[Suppression]:
    sql = "SELECT channel, address, reason, created_at FROM suppressions WHERE tenant_id = ?"
    params: list[Any] = [tenant]
    if channel:
        sql += " AND channel = ?"
        params.append(channel)
    with store.tx() as tx:
        rows = tx.execute(sql + " ORDER BY channel, address LIMIT ?", (*params, limit)).fetchall()
    return [Suppression(tenant, r[0], r[1], r[2], from_iso(r[3])) for r in rows]


def load_suppressions(tx: Tx, tenant: str, addresses: Iterable[str]) -> dict[tuple[str, str], str]:
    """``(channel, address) -> reason`` for a batch of normalized addresses."""
    values = sorted(set(addresses))
    found: dict[tuple[str, str], str] = {}
    for start in range(0, len(values), _CHUNK):
        chunk = values[start:start + _CHUNK]
        rows = tx.execute(f"SELECT channel, address, reason FROM suppressions WHERE tenant_id = ? "
                          f"AND address IN ({tx.placeholders(len(chunk))})", (tenant, *chunk))
        for channel, address, reason in rows.fetchall():
            found[(channel, address)] = reason
    return found


def _kind(channel: str) -> str | None:
    if channel in ("sms", "voice", "phone"):
        return "phone"
    if channel == "email":
        return "email"
    return None


# -- inbound SMS keywords ------------------------------------------------------


def sms_keyword(text: str) -> str | None:
    """The opt-out/opt-in/help keyword an inbound message consists of, if any:
    the whole message, case-insensitive, punctuation and extra spaces ignored."""
    words = re.sub(r"[^A-Za-z]+", " ", text or "").split()
    phrase = " ".join(words).upper()
    if phrase in STOP_KEYWORDS or phrase in START_KEYWORDS or phrase in HELP_KEYWORDS:
        return phrase
    return None


def customers_by_phone(tx: Tx, tenant: str, phone: str) -> list[str]:
    """Customers whose profile phone is ``phone`` (compared by digits)."""
    digits = re.sub(r"\D", "", phone)
    if not digits:
        return []
    strip = "phone"
    for ch in (" ", "-", "(", ")", ".", "+"):
        strip = f"replace({strip}, '{ch}', '')"
    rows = tx.execute(f"SELECT customer_id FROM profiles WHERE tenant_id = ? AND phone IS NOT NULL "
                      f"AND {strip} = ?", (tenant, digits)).fetchall()
    return sorted(r[0] for r in rows)


def handle_inbound_sms(store: Any, tenant: str, phone: str, text: str, now: datetime | None = None,
                       channels: Iterable[str] = ("sms",)) -> InboundResult:
    """Honour STOP, QUIT, END, REVOKE, OPT OUT, CANCEL, UNSUBSCRIBE (any case) at once:
    consent on ``channels`` is revoked for every topic of every customer with this
    phone number, and the number itself is suppressed on those channels (so a number
    no profile has yet stays opted out, and carriers' own STOP blocking is mirrored).
    START or UNSTOP undoes it; HELP and INFO are reported for the channel to answer."""
    keyword = sms_keyword(text)
    if keyword is None:
        return InboundResult("none")
    if keyword in HELP_KEYWORDS:
        return InboundResult("help", keyword=keyword)
    now = now or utcnow()
    number = normalize_phone(phone)
    stop = keyword in STOP_KEYWORDS
    channels = list(channels)
    with store.tx() as tx:
        customers = customers_by_phone(tx, tenant, phone)
        for customer in customers:
            for channel in channels:
                if stop:
                    tx.execute("UPDATE consent SET granted = ?, source = ?, updated_at = ? "
                               "WHERE tenant_id = ? AND customer_id = ? AND channel = ?",
                               (False, f"sms:{keyword}", tx.ts(now), tenant, customer, channel))
                else:  # START restores what a STOP took away, and grants the channel
                    tx.execute("UPDATE consent SET granted = ?, source = ?, updated_at = ? "
                               "WHERE tenant_id = ? AND customer_id = ? AND channel = ? "
                               "AND source LIKE ?",
                               (True, f"sms:{keyword}", tx.ts(now), tenant, customer, channel, "sms:%"))
                _upsert(tx, tenant, customer, channel, ALL_TOPICS, not stop, f"sms:{keyword}", now)
        for channel in channels:
            if stop:
                tx.execute("INSERT INTO suppressions (tenant_id, channel, address, reason, created_at) "
                           "VALUES (?,?,?,?,?) ON CONFLICT (tenant_id, channel, address) DO UPDATE "
                           "SET reason = excluded.reason, created_at = excluded.created_at",
                           (tenant, channel, number, STOP_REASON, tx.ts(now)))
            else:
                tx.execute("DELETE FROM suppressions WHERE tenant_id = ? AND channel = ? AND address = ? "
                           "AND reason = ?", (tenant, channel, number, STOP_REASON))
    return InboundResult("stop" if stop else "start", tuple(customers), keyword)


__all__ = ["ALL_TOPICS", "HELP_KEYWORDS", "START_KEYWORDS", "STOP_KEYWORDS", "ConsentRecord",
           "InboundResult", "Suppression", "add_suppression", "customers_by_phone", "grant_consent",
           "handle_inbound_sms", "list_consent", "list_suppressions", "load_consent",
           "load_suppressions", "normalize_address", "normalize_phone", "remove_suppression",
           "revoke_consent", "set_consent", "sms_keyword"]
