"""Consent from a file: the rows of a consent list (a sign-up export, an SMS opt-in list)
checked together and recorded in one transaction, each change in the consent history and
the audit log (``ceap customer consent-import``, docs/privacy.md)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ceap.delivery.consent_store import ALL_TOPICS, set_consent_tx
from ceap.model import utcnow
from ceap.privacy.tombstone import customer_hash, deleted_hashes

REQUIRED = ("customer_id", "channel", "granted")
OPTIONAL = ("topic", "source")
#: how ``granted`` may be written (any case)
TRUE = frozenset({"true", "t", "1", "yes", "y", "grant", "granted", "opt_in"})
FALSE = frozenset({"false", "f", "0", "no", "n", "revoke", "revoked", "opt_out"})


@dataclass(frozen=True)
class ConsentRow:
    customer_id: str
    channel: str
    topic: str
    granted: bool
    source: str


def parse_rows(records: list[dict[str, Any]], source: str) -> tuple[list[ConsentRow], list[str]]:
    """The rows of the file (numbered from 1 after the header), or the problems found:
    ``row N: message`` per bad row, or one line naming a missing or unknown column."""
    columns = set(records[0]) if records else set(REQUIRED)
    missing = [c for c in REQUIRED if c not in columns]
    unknown = sorted(columns - set(REQUIRED) - set(OPTIONAL))
    if missing or unknown:
        return [], [(f"missing column(s) {', '.join(missing)}" if missing else "")
                    + ("; " if missing and unknown else "")
                    + (f"unknown column(s) {', '.join(unknown)} (expected: "
                       f"{', '.join(REQUIRED + OPTIONAL)})" if unknown else "")]
    rows, problems = [], []
    for number, record in enumerate(records, start=1):
        customer, channel = _text(record.get("customer_id")), _text(record.get("channel"))
        topic = _text(record.get("topic")) or ALL_TOPICS
        flag = record.get("granted")
        word = str(flag).strip().lower() if flag is not None else ""
        granted = flag if isinstance(flag, bool) else (True if word in TRUE else False if word in FALSE
                                                       else None)
        if not customer:
            problems.append(f"row {number}: customer_id is empty")
        elif not channel:
            problems.append(f"row {number}: channel is empty")
        elif granted is None:
            problems.append(f"row {number}: granted {flag!r} is not true or false "
                            f"(also: yes/no, 1/0, grant/revoke)")
        else:
            rows.append(ConsentRow(customer, channel, topic, granted,
                                   _text(record.get("source")) or source))
    return rows, problems


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def import_consent(store: Any, tenant: str, rows: list[ConsentRow], *, actor: str,
                   origin: str, now: datetime | None = None) -> tuple[int, int]:
    """Record the rows in file order, in one transaction (all or nothing); rows of deleted
    customers are skipped. Returns (rows recorded, rows of deleted customers skipped)."""
    now = now or utcnow()
    stones = {h for _, h in deleted_hashes(store, [tenant])}
    kept = [r for r in rows if not stones or customer_hash(tenant, r.customer_id) not in stones]
    with store.tx() as tx:
        for r in kept:
            set_consent_tx(tx, tenant, r.customer_id, r.channel, r.topic, r.granted, r.source, now,
                           actor=actor, origin=origin)
    return len(kept), len(rows) - len(kept)
