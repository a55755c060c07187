"""Journey state in the store: entries (where each customer stands), their log, and the
events a tick reads. Every write goes through ``store.tx()`` (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ceap.outcomes.engagement import TYPES as ENGAGEMENT_TYPES
from ceap.store.schema import CANDIDATE_COLUMNS, JSON_COLUMNS, from_iso, loads
from ceap.store.tx import Tx

ENTRY_COLUMNS = ("id", "tenant_id", "program", "customer_id", "candidate_id", "version", "step", "seq",
                 "step_since", "status", "reason", "data", "entered_at", "updated_at", "ended_at")
LOG_COLUMNS = ("seq", "step", "what", "candidate_id", "at")


@dataclass
class Entry:
    """One customer's walk through one journey (a row of ``journey_entries``)."""

    id: int
    tenant_id: str
    program: str
    customer_id: str
    candidate_id: int
    version: str
    step: str
    seq: int
    step_since: datetime
    status: str  #: active, completed or exited
    reason: str | None
    data: dict[str, Any]  #: the entry's score, model, subject, variant, context and payload
    entered_at: datetime
    updated_at: datetime
    ended_at: datetime | None = None
    log: list[dict[str, Any]] = field(default_factory=list)

    def plain(self) -> dict[str, Any]:
        """As the CLI's ``--json`` and the API show it."""
        return {"id": self.id, "program": self.program, "customer_id": self.customer_id,
                "status": self.status, "step": self.step, "reason": self.reason,
                "version": self.version, "entered_at": self.entered_at.isoformat(),
                "step_since": self.step_since.isoformat(),
                "ended_at": self.ended_at.isoformat() if self.ended_at else None,
                "history": [{**row, "at": row["at"].isoformat()} for row in self.log]}


def entry_from_row(row: Sequence[Any]) -> Entry:
    values = dict(zip(ENTRY_COLUMNS, row, strict=True))
    for name in ("step_since", "entered_at", "updated_at", "ended_at"):
        values[name] = from_iso(values[name])
    values["data"] = loads(values["data"]) or {}
    return Entry(**values)


def in_list(tx: Tx, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
    """``column`` among ``values`` as one condition with one parameter."""
    if tx.dialect == "postgres":
        kind = "bigint" if values and isinstance(values[0], int) else "text"
        return f"{column} = ANY(CAST(? AS {kind}[]))", [list(values)]
    return f"{column} IN (SELECT value FROM json_each(?))", [json.dumps(list(values))]


def active_entries(tx: Tx, program: str) -> list[Entry]:
    rows = tx.execute(f"SELECT {', '.join(ENTRY_COLUMNS)} FROM journey_entries "
                      "WHERE program = ? AND status = 'active' ORDER BY id", (program,)).fetchall()
    return [entry_from_row(r) for r in rows]


def waiting_entries(tx: Tx, programs: Sequence[str], customers: Sequence[tuple[str, str]]
                    ) -> list[Entry]:
    """The active entries of ``programs`` of these ``(tenant, customer)``: one query per
    tenant (the customers as one array parameter; read by the index on tenant, customer
    and program)."""
    out: list[Entry] = []
    if not programs:
        return out
    for tenant in sorted({t for t, _ in customers}):
        cond, args = in_list(tx, "customer_id", sorted({c for t, c in customers if t == tenant}))
        rows = tx.execute(f"SELECT {', '.join(ENTRY_COLUMNS)} FROM journey_entries WHERE tenant_id = ? "
                          f"AND {cond} AND program IN ({tx.placeholders(len(programs))}) "
                          "AND status = 'active' ORDER BY id", (tenant, *args, *programs),
                          prepare=False).fetchall()
        out.extend(entry_from_row(r) for r in rows)
    return out


def entries_by_id(tx: Tx, ids: Sequence[int]) -> list[Entry]:
    """The active entries among ``ids``."""
    if not ids:
        return []
    cond, args = in_list(tx, "id", sorted(set(ids)))
    rows = tx.execute(f"SELECT {', '.join(ENTRY_COLUMNS)} FROM journey_entries WHERE {cond} "
                      "AND status = 'active' ORDER BY id", args, prepare=False).fetchall()
    return [entry_from_row(r) for r in rows]


def customer_entries(tx: Tx, tenant: str, customer: str, program: str | None = None,
                     limit: int = 20) -> list[Entry]:
    """A customer's entries (newest first), each with its log (oldest first)."""
    where = "tenant_id = ? AND customer_id = ?" + (" AND program = ?" if program else "")
    params: list[Any] = [tenant, customer, *([program] if program else [])]
    rows = tx.execute(f"SELECT {', '.join(ENTRY_COLUMNS)} FROM journey_entries WHERE {where} "
                      f"ORDER BY entered_at DESC, id DESC LIMIT {int(limit)}", params).fetchall()
    entries = [entry_from_row(r) for r in rows]
    if entries:
        cond, args = in_list(tx, "entry_id", [e.id for e in entries])
        by_entry: dict[int, list[dict[str, Any]]] = {}
        for entry_id, *rest in tx.execute(f"SELECT entry_id, {', '.join(LOG_COLUMNS)} FROM journey_log "
                                          f"WHERE {cond} ORDER BY entry_id, seq", args).fetchall():
            row = dict(zip(LOG_COLUMNS, rest, strict=True))
            row["at"] = from_iso(row["at"])
            by_entry.setdefault(int(entry_id), []).append(row)
        for e in entries:
            e.log = by_entry.get(e.id, [])
    return entries


def step_counts(tx: Tx, tenant: str, program: str) -> list[tuple[str, str, int]]:
    """``(status, step, entries)`` of a program's entries in ``tenant``."""
    return [(s, st, int(n)) for s, st, n in tx.execute(
        "SELECT status, step, count(*) FROM journey_entries WHERE tenant_id = ? AND program = ? "
        "GROUP BY status, step ORDER BY status, step", (tenant, program)).fetchall()]


def seen_events(tx: Tx, program: str, types: set[str], entries: Sequence[int] | None = None
                ) -> dict[int, list[tuple[str, datetime]]]:
    """Entry id -> ``(type, time)`` of the events its journey reads, oldest first:
    engagements of the entry's own messages, other types from ``goal_events`` of the
    customer since the entry began (the worker records them there). Every active entry
    of the program, or those of ``entries``."""
    found: dict[int, list[tuple[str, datetime]]] = {}
    engaged = sorted(types & ENGAGEMENT_TYPES)
    other = sorted(types - ENGAGEMENT_TYPES)
    if entries is not None and not entries:
        return found
    only, only_args = in_list(tx, "j.id", list(entries)) if entries is not None else ("1 = 1", [])
    prepare = None if entries is None else False  # a few entries: planned for their ids
    if engaged:
        cond, args = in_list(tx, "e.type", engaged)
        for entry_id, kind, ts in tx.execute(
                "SELECT j.id, e.type, e.ts FROM journey_entries j "
                "JOIN journey_log l ON l.entry_id = j.id AND l.candidate_id IS NOT NULL "
                "JOIN engagements e ON e.candidate_id = l.candidate_id "
                f"WHERE j.program = ? AND j.status = 'active' AND {cond} AND {only}",
                (program, *args, *only_args), prepare=prepare).fetchall():
            found.setdefault(int(entry_id), []).append((kind, from_iso(ts)))  # type: ignore[arg-type]
    if other:
        cond, args = in_list(tx, "g.type", other)
        for entry_id, kind, ts in tx.execute(
                "SELECT j.id, g.type, g.ts FROM journey_entries j "
                "JOIN goal_events g ON g.tenant_id = j.tenant_id AND g.customer_id = j.customer_id "
                f"AND g.ts >= j.entered_at WHERE j.program = ? AND j.status = 'active' AND {cond} "
                f"AND {only}", (program, *args, *only_args), prepare=prepare).fetchall():
            found.setdefault(int(entry_id), []).append((kind, from_iso(ts)))  # type: ignore[arg-type]
    for seen in found.values():
        seen.sort(key=lambda item: item[1])
    return found


def json_params(tx: Tx, names: Sequence[str]) -> str:
    """The VALUES placeholders of ``names``, with PostgreSQL's JSON casts."""
    json_cols = set(JSON_COLUMNS)
    cast = tx.dialect == "postgres"
    return ", ".join("CAST(? AS JSONB)" if cast and n in json_cols else "?" for n in names)


def insert_candidates(tx: Tx, rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], int]:
    """Insert journey messages (``CANDIDATE_COLUMNS``) whose dedup keys are not there yet, in
    one batch; ``(tenant, dedup key)`` -> id of each row's candidate, new or already there."""
    if not rows:
        return {}
    values = []
    for row in rows:
        one = [json.dumps(row[n]) if n in JSON_COLUMNS and row[n] is not None else row[n]
               for n in CANDIDATE_COLUMNS]
        values.append([tx.ts(v) if isinstance(v, datetime) else v for v in one])
    tx.executemany(f"INSERT INTO candidates ({', '.join(CANDIDATE_COLUMNS)}) VALUES "
                   f"({json_params(tx, CANDIDATE_COLUMNS)}) ON CONFLICT (tenant_id, dedup_key) DO NOTHING",
                   values)
    ids: dict[tuple[str, str], int] = {}
    for tenant in sorted({row["tenant_id"] for row in rows}):  # by (tenant_id, dedup_key), indexed
        keys = sorted({r["dedup_key"] for r in rows if r["tenant_id"] == tenant})
        cond, args = in_list(tx, "dedup_key", keys)
        found = tx.execute(f"SELECT dedup_key, id FROM candidates WHERE tenant_id = ? AND {cond}",
                           (tenant, *args)).fetchall()
        ids.update({(tenant, key): int(cid) for key, cid in found})
    return ids


def insert_candidate(tx: Tx, row: dict[str, Any]) -> int:
    """Insert a journey message (``CANDIDATE_COLUMNS``) unless its dedup key is there;
    return its id either way."""
    values = [json.dumps(row[n]) if n in JSON_COLUMNS and row[n] is not None else row[n]
              for n in CANDIDATE_COLUMNS]
    values = [tx.ts(v) if isinstance(v, datetime) else v for v in values]
    found = tx.execute(f"INSERT INTO candidates ({', '.join(CANDIDATE_COLUMNS)}) VALUES "
                       f"({json_params(tx, CANDIDATE_COLUMNS)}) ON CONFLICT (tenant_id, dedup_key) "
                       "DO NOTHING RETURNING id", values).fetchone()
    if found is None:
        found = tx.execute("SELECT id FROM candidates WHERE tenant_id = ? AND dedup_key = ?",
                           (row["tenant_id"], row["dedup_key"])).fetchone()
    return int(found[0])


def message_dedup_key(program: str, customer: str, entry_id: int, step: str, seq: int) -> str:
    return f"journey:{program}:{customer}:{entry_id}:{step}:{seq}"


def message_row(spec: Any, entry: Entry, step: str, seq: int, send: Any, now: datetime) -> dict[str, Any]:
    """The candidate a ``send`` step writes (``CANDIDATE_COLUMNS``)."""
    action, data = spec.action, entry.data
    return {
        "tenant_id": entry.tenant_id, "program": spec.name, "run_id": f"journey:{spec.name}",
        "customer_id": entry.customer_id, "subject_id": data.get("subject_id"),
        "context": data.get("context") or {}, "action_type": action.type,
        "channels": send.channels or action.channels, "template": send.template or action.template,
        "category": action.category, "score": data.get("score"), "model": data.get("model") or "",
        "reasons": None, "payload": {**(data.get("payload") or {}), **send.payload},
        "status": "pending", "priority": spec.priority, "created_at": now, "not_before": now,
        "expires_at": now + action.expiry,
        "dedup_key": message_dedup_key(spec.name, entry.customer_id, entry.id, step, seq),
        "holdout": False, "version": 1, "arm": "treatment", "variant": data.get("variant"),
        "features": None,
    }
