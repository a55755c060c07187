"""API keys: stored as SHA-256 hashes, each scoped to one tenant."""

from __future__ import annotations

import hashlib
import secrets

from ceap.model import utcnow
from ceap.store.base import Store

PREFIX = "ceap_"


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(store: Store, tenant_id: str, name: str) -> str:
    """Make a key for ``tenant_id``; only its hash is stored, so show it once."""
    key = PREFIX + secrets.token_urlsafe(32)
    with store.tx() as tx:
        tx.execute("INSERT INTO api_keys (key_hash, tenant_id, name, created_at) VALUES (?,?,?,?)",
                   (_hash(key), tenant_id, name, tx.ts(utcnow())))
    return key


def tenant_of(store: Store, key: str) -> str | None:
    """The tenant a key belongs to, or None for an unknown key."""
    owner = key_owner(store, key)
    return owner[0] if owner else None


def key_owner(store: Store, key: str) -> tuple[str, str] | None:
    """``(tenant, name)`` of a key, or None for an unknown key."""
    with store.tx() as tx:
        row = tx.execute("SELECT tenant_id, name FROM api_keys WHERE key_hash = ?",
                         (_hash(key),)).fetchone()
    return (str(row[0]), str(row[1])) if row else None
