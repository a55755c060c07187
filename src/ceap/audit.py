"""The audit log: who did what to what, when and from where.

Every admin action (resolving held or dead deliveries), every consent change,
every API key change and every customer export or deletion leaves one entry.
``actor`` is who (``cli:<user>``, ``apikey:<key id>``, ``customer`` for the
preference center and unsubscribe links, ``sms`` for a STOP); ``source`` is from
where (``cli@<host>``, the client's address); ``target`` names what was acted on
(``delivery:42``, ``apikey:3f2a...``, ``customer:C042``). Entries are never
changed, except that deleting a customer replaces their id in ``target`` and
``detail`` by the tombstone (see ``ceap.privacy``)."""

from __future__ import annotations

import getpass
import json
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ceap.model import DEFAULT_TENANT, utcnow
from ceap.store.schema import from_iso
from ceap.store.tx import Tx

__all__ = ["AuditEntry", "cli_actor", "cli_source", "query", "record", "record_tx"]


@dataclass(frozen=True)
class AuditEntry:
    id: int
    tenant_id: str
    at: datetime
    actor: str
    action: str
    target: str
    detail: Any
    source: str | None


def cli_actor() -> str:
    """Who runs this command: ``cli:<login name>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def cli_source() -> str:
    """Where a command runs: ``cli@<host name>``."""
    return f"cli@{socket.gethostname()}"


def _detail(detail: Any) -> str | None:
    if detail is None:
        return None
    return json.dumps(detail, sort_keys=True, default=str, ensure_ascii=False)


def record_tx(tx: Tx, *, actor: str, action: str, target: str, detail: Any = None,
              source: str | None = None, tenant_id: str = DEFAULT_TENANT,
              at: datetime | None = None) -> None:
    """Add an entry inside the caller's transaction (it commits with the change)."""
    tx.execute("INSERT INTO audit_log (tenant_id, at, actor, action, target, detail, source) "
               "VALUES (?,?,?,?,?,?,?)",
               (tenant_id, tx.ts(at or utcnow()), actor, action, target, _detail(detail), source))


def record(store: Any, *, actor: str, action: str, target: str, detail: Any = None,
           source: str | None = None, tenant_id: str = DEFAULT_TENANT,
           at: datetime | None = None) -> None:
    """Add an entry in its own transaction. ``detail`` is any JSON value (the reason, counts)."""
    with store.tx() as tx:
        record_tx(tx, actor=actor, action=action, target=target, detail=detail, source=source,
                  tenant_id=tenant_id, at=at)


def query(store: Any, tenant_id: str, *, action: str | None = None, target: str | None = None,
          actor: str | None = None, since: datetime | None = None,
          limit: int = 100) -> list[AuditEntry]:
    """Entries of ``tenant_id``, newest first. ``action`` matches a prefix (``consent`` finds
    ``consent.grant`` and ``consent.revoke``); ``target`` and ``actor`` match exactly."""
    where, params = ["tenant_id = ?"], [tenant_id]
    with store.tx() as tx:
        if action:
            where.append("(action = ? OR action LIKE ?)")
            params += [action, action.rstrip(".") + ".%"]
        for column, value in (("target", target), ("actor", actor)):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            where.append("at >= ?")
            params.append(tx.ts(since))
        rows = tx.execute("SELECT id, tenant_id, at, actor, action, target, detail, source FROM audit_log "
                          f"WHERE {' AND '.join(where)} ORDER BY at DESC, id DESC LIMIT ?",
                          (*params, int(limit))).fetchall()
    return [AuditEntry(int(r[0]), r[1], from_iso(r[2]), r[3], r[4], r[5],  # type: ignore[arg-type]
                       json.loads(r[6]) if r[6] is not None else None, r[7]) for r in rows]
