"""Export and delete everything the store holds about one customer.

``export_customer`` returns every row of every table that holds the customer (see
``catalog``). ``delete_customer`` deletes them in one transaction: it records the
tombstone first (``deletion_log``: a hash of the id, never the id), deletes the rows,
rewrites audit entries that named the customer to name the tombstone, then scans every
text column of every table for whole-word occurrences of the id, e-mail, phone and push
token and redacts what is left (``[deleted]``). It runs at once, in the API or the CLI
process, with no worker needed; events and batch rows that arrive later for a deleted
customer are dropped by the tombstone (see ``tombstone``)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from ceap import audit
from ceap.delivery.consent_store import normalize_address, normalize_phone
from ceap.model import utcnow
from ceap.privacy import catalog
from ceap.privacy.tombstone import customer_hash
from ceap.store.tx import Tx

REDACTED = "[deleted]"
MIN_SCAN_ID = 4  # shorter ids are deleted where they are a column, not searched for in text
_CHUNK = 500


@dataclass
class DeletionReport:
    tenant_id: str
    customer_hash: str
    deleted: dict[str, int] = field(default_factory=dict)
    redacted: dict[str, int] = field(default_factory=dict)
    requested_at: datetime | None = None

    @property
    def rows(self) -> int:
        return sum(self.deleted.values())


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return value


def _rows(tx: Tx, sql: str, params: Any) -> list[dict[str, Any]]:
    cur = tx.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [{n: _json_value(v) for n, v in zip(names, row, strict=True)} for row in cur.fetchall()]


def _in(tx: Tx, column: str, values: list[Any]) -> list[tuple[str, list[Any]]]:
    return [(f"{column} IN ({tx.placeholders(len(chunk))})", chunk)
            for chunk in (values[i:i + _CHUNK] for i in range(0, len(values), _CHUNK))]


@dataclass(frozen=True)
class _Who:
    tenant: str
    customer: str
    needles: frozenset[str]        # what text searches look for (whole words)
    addresses: frozenset[str]      # normalized e-mail and phone, for suppressions


def _who(tx: Tx, tenant: str, customer: str) -> _Who:
    row = tx.execute("SELECT email, phone, push_token FROM profiles WHERE tenant_id = ? AND customer_id = ?",
                     (tenant, customer)).fetchone()
    email, phone, push = (row or (None, None, None))
    needles = {customer} if len(customer) >= MIN_SCAN_ID else set()
    addresses: set[str] = set()
    if email and email.strip():
        needles.add(email.strip())
        addresses.add(normalize_address(email, "email") or "")
    if phone and phone.strip():
        needles.add(phone.strip())
        digits = normalize_phone(phone)
        if len(digits) >= 7:
            needles.add(digits)
            addresses.add(digits)
    if push and push.strip():
        needles.add(push.strip())
        addresses.add(push.strip())
    return _Who(tenant, customer, frozenset(needles), frozenset(a for a in addresses if a))


def _matches(text: Any, who: _Who) -> bool:
    """Whether raw text (a quarantined row, a queued event, a URL) is the customer's: a JSON
    object naming the customer, or whole-word occurrences of their id, e-mail or phone."""
    if text is None:
        return False
    raw = text if isinstance(text, str) else json.dumps(text)
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if isinstance(data, dict):
        tenant = data.get("tenant_id")
        if tenant is not None and tenant != who.tenant:
            return False
        if str(data.get("customer_id", "")) == who.customer:
            return True
    return bool(who.needles) and catalog.needle_pattern(set(who.needles)).search(raw) is not None


def _ids(tx: Tx, table: str, who: _Who) -> list[int]:
    return [int(r[0]) for r in tx.execute(f"SELECT id FROM {table} WHERE tenant_id = ? AND customer_id = ?",
                                          (who.tenant, who.customer)).fetchall()]


def _scanned(tx: Tx, table: str, column: str, who: _Who) -> list[dict[str, Any]]:
    """Rows of a raw-text table that are the customer's (pre-filtered in SQL)."""
    terms = set(who.needles) | {who.customer}
    where, params = catalog.like_any(tx, column, terms)
    key = "rowid" if tx.dialect == "sqlite" else "ctid"
    rows = _rows(tx, f"SELECT {key} AS __key, * FROM {table} WHERE {where}", params)
    own = [r for r in rows if _matches(r[column], who)]
    if "tenant_id" in (own[0] if own else {}):
        own = [r for r in own if r["tenant_id"] == who.tenant]
    return own


def _collect(tx: Tx, who: _Who) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    t, c = who.tenant, who.customer
    for table, column in catalog.BY_CUSTOMER.items():
        out[table] = _rows(tx, f"SELECT * FROM {table} WHERE tenant_id = ? AND {column} = ?", (t, c))
    candidates = [int(r["id"]) for r in out["candidates"]]
    deliveries = [int(r["id"]) for r in out["deliveries"]]
    for table, column in catalog.BY_CANDIDATE.items():
        out[table] = [r for where, chunk in _in(tx, column, candidates)
                      for r in _rows(tx, f"SELECT * FROM {table} WHERE tenant_id = ? AND {where}",
                                     (t, *chunk))]
    for table, column in catalog.BY_DELIVERY.items():
        out[table] = [r for where, chunk in _in(tx, column, deliveries)
                      for r in _rows(tx, f"SELECT * FROM {table} WHERE tenant_id = ? AND {where}",
                                     (t, *chunk))]
    for table, column in catalog.SCANNED.items():
        out[table] = _scanned(tx, table, column, who)
    for table, column in catalog.ADDRESSED.items():
        out[table] = [r for where, chunk in _in(tx, column, sorted(who.addresses))
                      for r in _rows(tx, f"SELECT * FROM {table} WHERE tenant_id = ? AND {where}",
                                     (t, *chunk))]
    out["audit_log"] = _rows(tx, "SELECT * FROM audit_log WHERE tenant_id = ? AND target = ? ORDER BY id",
                             (t, f"customer:{c}"))
    return out


def _decoded(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """JSON held as text (SQLite) shown as JSON, as PostgreSQL gives it."""
    for row in rows:
        row.pop("__key", None)
        for name, value in row.items():
            if isinstance(value, str) and value[:1] in "{[" and name not in ("row", "body"):
                with contextlib.suppress(ValueError):
                    row[name] = json.loads(value)
    return rows


def export_customer(store: Any, tenant: str, customer: str, *, actor: str = "system",
                    source: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Every row the store holds about ``customer``, by table (see docs/privacy.md)."""
    now = now or utcnow()
    with store.tx() as tx:
        who = _who(tx, tenant, customer)
        tables = {name: _decoded(rows) for name, rows in _collect(tx, who).items()}
        audit.record_tx(tx, tenant_id=tenant, actor=actor, source=source, at=now, action="customer.export",
                        target=f"customer:{customer}",
                        detail={"rows": sum(len(r) for r in tables.values())})
    return {"tenant_id": tenant, "customer_id": customer, "exported_at": now.isoformat(), "tables": tables}


def delete_customer(store: Any, tenant: str, customer: str, *, actor: str = "system",
                    source: str | None = None, now: datetime | None = None,
                    reason: str | None = None) -> DeletionReport:
    """Delete everything about ``customer`` in one transaction (see the module's docstring).
    Deleting again is harmless (it finds nothing, and the tombstone stays)."""
    now = now or utcnow()
    digest = customer_hash(tenant, customer)
    report = DeletionReport(tenant, digest, requested_at=now)
    stone = f"customer:sha256:{digest}"
    with store.tx() as tx:
        tx.execute("INSERT INTO deletion_log (tenant_id, customer_hash, requested_at, requested_by) "
                   "VALUES (?,?,?,?) ON CONFLICT (tenant_id, customer_hash) DO NOTHING",
                   (tenant, digest, tx.ts(now), actor))
        who = _who(tx, tenant, customer)
        found = _collect(tx, who)
        candidates = [int(r["id"]) for r in found["candidates"]]
        deliveries = [int(r["id"]) for r in found["deliveries"]]
        for table, column in catalog.BY_CANDIDATE.items():
            report.deleted[table] = _delete_in(tx, table, column, candidates, tenant)
        for table, column in catalog.BY_DELIVERY.items():
            report.deleted[table] = _delete_in(tx, table, column, deliveries, tenant)
        # engagements and conversions of the customer's candidates and deliveries, whoever they name
        report.deleted["engagements"] = (_delete_in(tx, "engagements", "candidate_id", candidates, tenant)
                                         + _delete_in(tx, "engagements", "delivery_id", deliveries, tenant))
        report.deleted["conversions"] = _delete_in(tx, "conversions", "candidate_id", candidates, tenant)
        for table, column in catalog.BY_CUSTOMER.items():
            cur = tx.execute(f"DELETE FROM {table} WHERE tenant_id = ? AND {column} = ?", (tenant, customer))
            report.deleted[table] = report.deleted.get(table, 0) + max(cur.rowcount, 0)
        by_key = ("DELETE FROM {} WHERE rowid = ?" if tx.dialect == "sqlite"
                  else "DELETE FROM {} WHERE ctid = CAST(? AS tid)")
        for table in catalog.SCANNED:
            keys = [r["__key"] for r in found[table]]
            for k in keys:
                tx.execute(by_key.format(table), (k if tx.dialect == "sqlite" else str(k),))
            report.deleted[table] = len(keys)
        for table, column in catalog.ADDRESSED.items():
            report.deleted[table] = _delete_in(tx, table, column, sorted(who.addresses), tenant)
        cur = tx.execute("UPDATE audit_log SET target = ?, detail = NULL WHERE tenant_id = ? AND target = ?",
                         (stone, tenant, f"customer:{customer}"))
        report.redacted["audit_log"] = max(cur.rowcount, 0)
        for table, count in _redact_everywhere(tx, who).items():
            report.redacted[table] = report.redacted.get(table, 0) + count
        report.deleted = {k: v for k, v in report.deleted.items() if v}
        report.redacted = {k: v for k, v in report.redacted.items() if v}
        serving = getattr(store, "serving", None)  # a DynamoDB candidate store (candidate_store:)
        if serving is not None and hasattr(serving, "delete_customer"):
            # inside the SQL transaction: if this fails, nothing is deleted and the request
            # can be repeated; once it is done, the SQL deletion commits
            gone = serving.delete_customer(tenant, customer)
            if gone:
                report.deleted["candidate_store"] = gone
        tx.execute("UPDATE deletion_log SET completed_at = ?, rows_deleted = rows_deleted + ? "
                   "WHERE tenant_id = ? AND customer_hash = ?",
                   (tx.ts(utcnow()), report.rows, tenant, digest))
        audit.record_tx(tx, tenant_id=tenant, actor=actor, source=source, at=now, action="customer.delete",
                        target=stone, detail={"reason": reason, "deleted": report.deleted,
                                              "redacted": report.redacted})
    return report


def _delete_in(tx: Tx, table: str, column: str, values: list[Any], tenant: str) -> int:
    total = 0
    for where, chunk in _in(tx, column, values):
        cur = tx.execute(f"DELETE FROM {table} WHERE tenant_id = ? AND {where}", (tenant, *chunk))
        total += max(cur.rowcount, 0)
    return total


def _redact_everywhere(tx: Tx, who: _Who) -> dict[str, int]:
    """Whole-word occurrences of the customer's id, e-mail, phone and push token left in any
    text column of any table (an error message, a run's funnel) become ``[deleted]``."""
    if not who.needles:
        return {}
    pattern = catalog.needle_pattern(set(who.needles))
    key = "rowid" if tx.dialect == "sqlite" else "ctid"
    out: dict[str, int] = {}
    for table, columns in catalog.store_tables(tx).items():
        if table == "deletion_log":
            continue
        kinds = dict(columns)
        for column in catalog.text_columns(columns):
            where, params = catalog.like_any(tx, column, set(who.needles))
            rows = tx.execute(f"SELECT {key}, {column} FROM {table} WHERE {where}", params).fetchall()
            for k, value in rows:
                cleaned = _scrub_text(value, pattern)
                if cleaned is None:
                    continue
                if tx.dialect == "sqlite":
                    tx.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?", (cleaned, k))
                else:
                    cast = "CAST(? AS jsonb)" if "json" in kinds[column] else "?"
                    tx.execute(f"UPDATE {table} SET {column} = {cast} WHERE ctid = CAST(? AS tid)",
                               (cleaned, str(k)))
                out[table] = out.get(table, 0) + 1
    return out


def _scrub(value: Any, pattern: Any) -> Any:
    """A JSON value with the needles replaced inside strings, and a number that is one
    (a phone number as digits) replaced whole: the JSON stays valid."""
    if isinstance(value, dict):
        return {_scrub(k, pattern): _scrub(v, pattern) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, pattern) for v in value]
    if isinstance(value, str):
        return pattern.sub(REDACTED, value)
    if isinstance(value, int | float) and not isinstance(value, bool) and pattern.fullmatch(str(value)):
        return REDACTED
    return value


def _scrub_text(value: Any, pattern: Any) -> str | None:
    """The column's new text, or None when nothing changes."""
    if isinstance(value, str):
        try:
            data = json.loads(value) if value[:1] in "{[" else None
        except ValueError:
            data = None
        if data is None:
            cleaned = pattern.sub(REDACTED, value)
            return None if cleaned == value else cleaned
    else:
        data = value
    scrubbed = _scrub(data, pattern)
    return None if scrubbed == data else json.dumps(scrubbed, ensure_ascii=False)
