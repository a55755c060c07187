"""API keys: stored as SHA-256 hashes, each scoped to one tenant and to what it may do.

A key has scopes (``read``: candidates and the in-app inbox; ``ingest``: events,
receipts and engagements; ``admin``: the ``/v1/admin`` routes), may expire, and may
be revoked. Its id is the first 12 hex digits of its hash: what ``ceap apikey list``
shows and ``ceap apikey revoke`` takes. The server keeps a key's record for at most a
couple of seconds (``ceap.api.keycache``): an expiry, and a revocation made in the same
process, hold at once; a revocation made elsewhere holds on every server process within
that time. A key made before scopes existed has ``DEFAULT_SCOPES``. Every change is in
the audit log."""

from __future__ import annotations

import functools
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ceap import audit
from ceap.api import keycache
from ceap.errors import CeapError
from ceap.model import utcnow
from ceap.store.schema import from_iso

PREFIX = "ceap_"
SCOPES = ("read", "ingest", "admin")
#: the scopes of a key made without ``--scope``, and of a key made before scopes existed
DEFAULT_SCOPES = ("read", "ingest")
ID_LENGTH = 12


class ApiKeyError(CeapError):
    """An unknown scope, or a key id that names no key (or several)."""


@dataclass(frozen=True)
class ApiKey:
    id: str
    tenant_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None

    def status(self, now: datetime) -> str:
        """``active``, ``expired`` or ``revoked``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_scopes(values: Any) -> tuple[str, ...]:
    """Scopes from a list or comma-separated text, checked, in ``SCOPES`` order."""
    items = [values] if isinstance(values, str) else list(values or [])
    names = {s.strip() for v in items for s in str(v).split(",") if s.strip()}
    unknown = sorted(names - set(SCOPES))
    if unknown:
        raise ApiKeyError(f"unknown scope(s) {', '.join(map(repr, unknown))}: expected "
                          f"{', '.join(SCOPES)}")
    if not names:
        raise ApiKeyError(f"a key needs at least one scope ({', '.join(SCOPES)})")
    return tuple(s for s in SCOPES if s in names)


def _stored_scopes(value: str | None) -> tuple[str, ...]:
    return DEFAULT_SCOPES if value is None else tuple(s for s in value.split() if s)


_COLUMNS = "key_hash, tenant_id, name, scopes, created_at, expires_at, revoked_at, revoked_by"


def _key(row: Any) -> ApiKey:
    return ApiKey(row[0][:ID_LENGTH], row[1], row[2], _stored_scopes(row[3]),
                  from_iso(row[4]), from_iso(row[5]), from_iso(row[6]), row[7])  # type: ignore[arg-type]


def create_key(store: Any, tenant_id: str, name: str, *, scopes: Any = DEFAULT_SCOPES,
               expires_at: datetime | None = None, actor: str = "system",
               source: str | None = None) -> str:
    """Make a key for ``tenant_id``; only its hash is stored, so show it once."""
    chosen = parse_scopes(scopes)
    key = PREFIX + secrets.token_urlsafe(32)
    digest = _hash(key)
    now = utcnow()
    with store.tx() as tx:
        tx.execute("INSERT INTO api_keys (key_hash, tenant_id, name, created_at, scopes, expires_at) "
                   "VALUES (?,?,?,?,?,?)",
                   (digest, tenant_id, name, tx.ts(now), " ".join(chosen), tx.ts(expires_at)))
        audit.record_tx(tx, tenant_id=tenant_id, actor=actor, source=source, at=now,
                        action="apikey.create", target=f"apikey:{digest[:ID_LENGTH]}",
                        detail={"name": name, "scopes": list(chosen),
                                "expires_at": expires_at.isoformat() if expires_at else None})
    return key


def lookup(store: Any, key: str) -> ApiKey | None:
    """The key as stored (whatever its status), or None for an unknown key."""
    with store.tx() as tx:
        row = tx.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE key_hash = ?", (_hash(key),)).fetchone()
    return _key(row) if row else None


def cached_lookup(store: Any, key: str) -> ApiKey | None:
    """``lookup``, through this process's short-lived cache (``ceap.api.keycache``):
    the caller checks the record's status, so an expiry holds exactly."""
    digest = _hash(key)
    cache = keycache.cache_of(store)
    load = functools.partial(lookup, store, key)
    found = cache.peek(digest, load)
    return found if found is not None else cache.fetch(digest, load)


def tenant_of(store: Any, key: str, now: datetime | None = None) -> str | None:
    """The tenant of an active key; None for an unknown, revoked or expired one."""
    found = lookup(store, key)
    if found is None or found.status(now or utcnow()) != "active":
        return None
    return found.tenant_id


def list_keys(store: Any, tenant_id: str) -> list[ApiKey]:
    """Every key of ``tenant_id``, revoked and expired ones too, oldest first."""
    with store.tx() as tx:
        rows = tx.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE tenant_id = ? "
                          "ORDER BY created_at, key_hash",
                          (tenant_id,)).fetchall()
    return [_key(r) for r in rows]


def revoke_key(store: Any, tenant_id: str, key_id: str, *, actor: str = "system",
               source: str | None = None, reason: str | None = None) -> ApiKey:
    """Revoke the key of ``tenant_id`` whose id starts with ``key_id`` (at least 6 hex
    digits); it stops working at once. Revoking a revoked key changes nothing."""
    wanted = key_id.strip().lower()
    if len(wanted) < 6 or any(c not in "0123456789abcdef" for c in wanted):
        raise ApiKeyError(f"key id {key_id!r}: expected at least 6 hex digits (see `ceap apikey list`)")
    now = utcnow()
    with store.tx() as tx:
        rows = tx.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE tenant_id = ? AND key_hash LIKE ?",
                          (tenant_id, wanted + "%")).fetchall()
        if len(rows) != 1:
            raise ApiKeyError(f"key id {key_id!r}: {'no key' if not rows else 'several keys'} of tenant "
                              f"{tenant_id!r} (see `ceap apikey list`)")
        found = _key(rows[0])
        if found.revoked_at is None:
            tx.execute("UPDATE api_keys SET revoked_at = ?, revoked_by = ? WHERE key_hash = ?",
                       (tx.ts(now), actor, rows[0][0]))
            audit.record_tx(tx, tenant_id=tenant_id, actor=actor, source=source, at=now,
                            action="apikey.revoke", target=f"apikey:{found.id}",
                            detail={"name": found.name, "reason": reason})
    keycache.invalidate()  # this process's cached records: the key stops working at once here
    return found


def key_owner(store: Any, key: str) -> tuple[str, str] | None:
    """``(tenant, name)`` of an active key, or None for an unknown, revoked or expired one."""
    found = lookup(store, key)
    if found is None or found.status(utcnow()) != "active":
        return None
    return found.tenant_id, found.name
