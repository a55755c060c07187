"""Customer profiles: addresses, time zone and locale, loaded in bulk."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ceap.delivery.model import Profile
from ceap.delivery.outbox_rows import select_rows
from ceap.model import utcnow
from ceap.privacy.tombstone import drop_deleted
from ceap.store.base import Store
from ceap.store.schema import loads

FIELDS = ("email", "phone", "push_token", "timezone", "locale")
_COLUMNS = f"customer_id, {', '.join(FIELDS)}, attributes"


def upsert_profiles(store: Store, table: pa.Table, tenant_id: str) -> int:
    """Insert or update profiles from a table with ``customer_id`` and any of
    email, phone, push_token, timezone, locale; other columns become attributes. Rows of
    deleted customers are dropped (docs/privacy.md); returns how many profiles were stored."""
    if "customer_id" not in table.column_names:
        raise ValueError("profiles need a customer_id column")
    ids = table.column("customer_id").cast(pa.string())
    blank = pc.or_kleene(pc.is_null(ids), pc.equal(pc.utf8_trim_whitespace(ids), ""))
    if pc.any(blank).as_py():
        rows = [i + 1 for i, b in enumerate(blank.to_pylist()) if b]
        listed = ", ".join(map(str, rows[:10])) + (f" and {len(rows) - 10:,} more" if len(rows) > 10 else "")
        raise ValueError(f"row(s) {listed}: customer_id is empty; nothing was loaded")
    table, _ = drop_deleted(store, table.set_column(
        table.column_names.index("customer_id"), "customer_id",
        table.column("customer_id").cast(pa.string())), tenant_id)
    n = table.num_rows
    columns = {f: (table.column(f).cast(pa.string()).to_pylist() if f in table.column_names
                   else [None] * n) for f in FIELDS}
    extra = [c for c in table.column_names if c not in (*FIELDS, "customer_id")]
    attrs = ([json.dumps(r, default=str) for r in table.select(extra).to_pylist()] if extra
             else ["{}"] * n)
    ids = table.column("customer_id").cast(pa.string()).to_pylist()
    # only the columns the table has are updated: a file without phones keeps the stored ones
    given = [f for f in FIELDS if f in table.column_names] + (["attributes"] if extra else [])
    updates = ", ".join([f"{f} = excluded.{f}" for f in given] + ["updated_at = excluded.updated_at"])
    with store.tx() as tx:
        now = tx.ts(utcnow())
        tx.executemany(
            "INSERT INTO profiles (tenant_id, customer_id, email, phone, push_token, timezone, "
            "locale, attributes, updated_at) VALUES (?,?,?,?,?,?,?,?,?) "
            f"ON CONFLICT (tenant_id, customer_id) DO UPDATE SET {updates}",
            list(zip([tenant_id] * n, ids, *(columns[f] for f in FIELDS), attrs, [now] * n,
                     strict=True)))
    return n


def load_profiles(store: Store, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Profile]:
    """Profiles for ``(tenant_id, customer_id)`` keys; unknown customers are absent."""
    by_tenant: dict[str, list[str]] = {}
    for tenant, customer in set(keys):
        by_tenant.setdefault(tenant, []).append(customer)
    found: dict[tuple[str, str], Profile] = {}
    with store.tx() as tx:
        for tenant, customers in by_tenant.items():
            for start in range(0, len(customers), 500):
                chunk = customers[start:start + 500]
                rows = select_rows(
                    tx, _COLUMNS, f"SELECT {_COLUMNS} FROM profiles WHERE tenant_id = ? AND "
                    f"customer_id IN ({tx.placeholders(len(chunk))})", (tenant, *chunk))
                for row in rows:
                    attrs: Any = row[6]
                    # fields set directly, as ``Profile(...)`` would (thousands a pass)
                    profile = object.__new__(Profile)
                    profile.__dict__.update(
                        tenant_id=tenant, customer_id=row[0], email=row[1], phone=row[2],
                        push_token=row[3], timezone=row[4], locale=row[5],
                        attributes=loads(attrs) if isinstance(attrs, str) else (attrs or {}))
                    found[(tenant, row[0])] = profile
    return found
