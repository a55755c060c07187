"""Tombstones of deleted customers: the deletion log keeps ``sha256(tenant NUL id)``, never
the id, so what arrives for a deleted customer afterwards (an event still in a broker, a
row of a batch source not yet cleaned) can be recognised and dropped."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


def customer_hash(tenant_id: str, customer_id: str) -> str:
    """The tombstone of a customer: hex SHA-256 of the tenant, a NUL and the id."""
    return hashlib.sha256(f"{tenant_id}\x00{customer_id}".encode()).hexdigest()


def deleted_hashes(store: Any, tenant_ids: Iterable[str]) -> set[tuple[str, str]]:
    """``(tenant, hash)`` of every deleted customer of these tenants."""
    tenants = sorted(set(tenant_ids))
    if not tenants:
        return set()
    with store.tx() as tx:
        rows = tx.execute("SELECT tenant_id, customer_hash FROM deletion_log WHERE tenant_id IN "
                          f"({tx.placeholders(len(tenants))})", tenants).fetchall()
    return {(r[0], r[1]) for r in rows}


def is_deleted(store: Any, tenant_id: str, customer_id: str) -> bool:
    return (tenant_id, customer_hash(tenant_id, customer_id)) in deleted_hashes(store, [tenant_id])


def drop_deleted(store: Any, table: pa.Table, tenant_id: str | None = None) -> tuple[pa.Table, int]:
    """``table`` without the rows of deleted customers (by its ``customer_id`` column, and its
    ``tenant_id`` column or ``tenant_id``), and how many were dropped. One small query when
    the tenants have no tombstone; else each distinct (tenant, customer) is hashed once."""
    if not table.num_rows or "customer_id" not in table.column_names:
        return table, 0
    tenants = (pa.array([tenant_id] * table.num_rows, pa.string()) if tenant_id is not None
               else table.column("tenant_id").combine_chunks())
    stones = deleted_hashes(store, pc.unique(tenants).to_pylist())
    if not stones:
        return table, 0
    customers = pc.fill_null(table.column("customer_id").combine_chunks(), "")
    keys = pc.binary_join_element_wise(tenants, customers, "\x00")  # what the hash is of
    digests = {stone for _, stone in stones}
    gone = [k for k in pc.unique(keys).to_pylist() if hashlib.sha256(k.encode()).hexdigest() in digests]
    if not gone:
        return table, 0
    kept = table.filter(pc.invert(pc.is_in(keys, value_set=pa.array(gone, pa.string()))))
    return kept, table.num_rows - kept.num_rows
