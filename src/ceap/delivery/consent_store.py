"""Consent and suppressions: what customers agreed to, and addresses never to use.

Consent rows are per customer, channel and topic; the topic ``*`` stands for
every topic on the channel. A row for the exact topic wins over the ``*`` row,
and revoking ``*`` also revokes every topic row of that channel, so an
"unsubscribe from everything" (or an SMS STOP) is never undone by an older
per-topic grant. Suppressions are per channel (or the address kind, e.g.
``email``, or ``*``) and address: a hard bounce, a complaint, a STOP from a
number no profile has.

Every change is kept: ``consent_history`` holds one row per changed consent row
(who, channel, topic, old -> new, when, source), and the audit log one entry
(``consent.grant`` or ``consent.revoke``). Writing what is already there is no change.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from ceap import audit
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


@dataclass(frozen=True)
class ConsentChange:
    """One change of one consent row; ``old_granted`` is None where there was no row."""

    id: int
    tenant_id: str
    customer_id: str
    channel: str
    topic: str
    old_granted: bool | None
    new_granted: bool
    source: str | None
    actor: str | None
    at: datetime | None


def _history(tx: Tx, tenant: str, customer: str, changes: Sequence[tuple[str, str, bool | None, bool]],
             source: str | None, actor: str | None, now: datetime, origin: str | None = None) -> None:
    """Keep ``(channel, topic, old, new)`` changes in consent_history and the audit log."""
    real = [c for c in changes if c[2] is None or bool(c[2]) != c[3]]
    if not real:
        return
    who = actor or source or "system"
    tx.executemany("INSERT INTO consent_history (tenant_id, customer_id, channel, topic, old_granted, "
                   "new_granted, source, actor, at) VALUES (?,?,?,?,?,?,?,?,?)",
                   [(tenant, customer, ch, tp, None if old is None else bool(old), new, source, who,
                     tx.ts(now)) for ch, tp, old, new in real])
    for ch, tp, old, new in real:
        audit.record_tx(tx, tenant_id=tenant, actor=who, source=origin or source, at=now,
                        action="consent.grant" if new else "consent.revoke", target=f"customer:{customer}",
                        detail={"channel": ch, "topic": tp, "old": None if old is None else bool(old),
                                "new": new, "source": source})


def _current(tx: Tx, tenant: str, customer: str, channel: str,
             topic: str | None = None) -> dict[tuple[str, str], bool]:
    sql = ("SELECT channel, topic, granted FROM consent WHERE tenant_id = ? AND customer_id = ? "
           "AND channel = ?")
    params: list[Any] = [tenant, customer, channel]
    if topic is not None:
        sql += " AND topic = ?"
        params.append(topic)
    return {(r[0], r[1]): bool(r[2]) for r in tx.execute(sql + " ORDER BY topic", params).fetchall()}


def _upsert(tx: Tx, tenant: str, customer: str, channel: str, topic: str, granted: bool,
            source: str | None, now: datetime, actor: str | None = None, origin: str | None = None) -> None:
    old = _current(tx, tenant, customer, channel, topic).get((channel, topic))
    _history(tx, tenant, customer, [(channel, topic, old, granted)], source, actor, now, origin)
    tx.execute("INSERT INTO consent (tenant_id, customer_id, channel, topic, granted, source, "
               "updated_at) VALUES (?,?,?,?,?,?,?) ON CONFLICT (tenant_id, customer_id, channel, "
               "topic) DO UPDATE SET granted = excluded.granted, source = excluded.source, "
               "updated_at = excluded.updated_at",
               (tenant, customer, channel, topic, granted, source, tx.ts(now)))


def set_consent(store: Any, tenant: str, customer: str, channel: str, topic: str = ALL_TOPICS,
                granted: bool = True, source: str | None = None, now: datetime | None = None, *,
                actor: str | None = None, origin: str | None = None) -> None:
    """Record a grant or a revocation; revoking ``*`` revokes every topic of the channel.
    ``source`` says how (``unsubscribe_link``, ``preference_center``, ``import``...),
    ``actor`` who (default: the source) and ``origin`` from where, for the audit log."""
    now = now or utcnow()
    with store.tx() as tx:
        set_consent_tx(tx, tenant, customer, channel, topic, granted, source, now,
                       actor=actor, origin=origin)


def set_consent_tx(tx: Tx, tenant: str, customer: str, channel: str, topic: str, granted: bool,
                   source: str | None, now: datetime, *, actor: str | None = None,
                   origin: str | None = None) -> None:
    """``set_consent`` inside the caller's transaction."""
    if not granted and topic == ALL_TOPICS:
        before = _current(tx, tenant, customer, channel)
        _history(tx, tenant, customer, [(ch, tp, old, False) for (ch, tp), old in before.items()],
                 source, actor, now, origin)  # the * row too: the upsert below then finds no change
        tx.execute("UPDATE consent SET granted = ?, source = ?, updated_at = ? "
                   "WHERE tenant_id = ? AND customer_id = ? AND channel = ?",
                   (False, source, tx.ts(now), tenant, customer, channel))
    _upsert(tx, tenant, customer, channel, topic, granted, source, now, actor, origin)


def grant_consent(store: Any, tenant: str, customer: str, channel: str, topic: str = ALL_TOPICS,
                  source: str | None = None, now: datetime | None = None, *,
                  actor: str | None = None, origin: str | None = None) -> None:
    set_consent(store, tenant, customer, channel, topic, True, source, now, actor=actor, origin=origin)


def revoke_consent(store: Any, tenant: str, customer: str, channel: str, topic: str = ALL_TOPICS,
                   source: str | None = None, now: datetime | None = None, *,
                   actor: str | None = None, origin: str | None = None) -> None:
    """Takes effect at once: the next dispatch pass drops the channel for this topic."""
    set_consent(store, tenant, customer, channel, topic, False, source, now, actor=actor, origin=origin)


def consent_history(store: Any, tenant: str, customer: str, limit: int = 1000) -> list[ConsentChange]:
    """Every change of a customer's consent, oldest first."""
    with store.tx() as tx:
        rows = tx.execute("SELECT id, channel, topic, old_granted, new_granted, source, actor, at "
                          "FROM consent_history WHERE tenant_id = ? AND customer_id = ? "
                          "ORDER BY at, id LIMIT ?", (tenant, customer, int(limit))).fetchall()
    return [ConsentChange(int(r[0]), tenant, customer, r[1], r[2], None if r[3] is None else bool(r[3]),
                          bool(r[4]), r[5], r[6], from_iso(r[7])) for r in rows]


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
                before = _current(tx, tenant, customer, channel) if stop else {
                    (r[0], r[1]): bool(r[2]) for r in tx.execute(
                        "SELECT channel, topic, granted FROM consent WHERE tenant_id = ? AND customer_id = ? "
                        "AND channel = ? AND source LIKE ? ORDER BY topic",
                        (tenant, customer, channel, "sms:%")).fetchall()}
                touched = [(ch, tp, old, not stop) for (ch, tp), old in before.items()]
                _history(tx, tenant, customer, touched, f"sms:{keyword}", "sms", now, "inbound sms")
                if stop:
                    tx.execute("UPDATE consent SET granted = ?, source = ?, updated_at = ? "
                               "WHERE tenant_id = ? AND customer_id = ? AND channel = ?",
                               (False, f"sms:{keyword}", tx.ts(now), tenant, customer, channel))
                else:  # START restores what a STOP took away, and grants the channel
                    tx.execute("UPDATE consent SET granted = ?, source = ?, updated_at = ? "
                               "WHERE tenant_id = ? AND customer_id = ? AND channel = ? "
                               "AND source LIKE ?",
                               (True, f"sms:{keyword}", tx.ts(now), tenant, customer, channel, "sms:%"))
                _upsert(tx, tenant, customer, channel, ALL_TOPICS, not stop, f"sms:{keyword}", now,
                        "sms", "inbound sms")
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


__all__ = [
    "ALL_TOPICS",
    "HELP_KEYWORDS",
    "START_KEYWORDS",
    "STOP_KEYWORDS",
    "ConsentChange",
    "ConsentRecord",
    "InboundResult",
    "Suppression",
    "add_suppression",
    "consent_history",
    "customers_by_phone",
    "grant_consent",
    "handle_inbound_sms",
    "list_consent",
    "list_suppressions",
    "load_consent",
    "load_suppressions",
    "normalize_address",
    "normalize_phone",
    "remove_suppression",
    "revoke_consent",
    "set_consent",
    "set_consent_tx",
    "sms_keyword",
]
