"""The store side of digests (docs/digests.md): the candidates a run wrote for a digest,
the open digests they join, and the flush that turns a due digest into its message.

Every write here runs in a transaction that holds the digests' lock (on PostgreSQL a
transaction-level advisory lock, taken without waiting: another dispatcher holding it
is doing the work; on SQLite ``BEGIN IMMEDIATE`` already serialises writers), so two
dispatchers never put one candidate in two digests or flush one digest twice.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ceap.model import Candidate
from ceap.store.base import Store
from ceap.store.schema import CANDIDATE_COLUMNS, from_iso
from ceap.store.sql_common import SELECT_CANDIDATE, candidate_from_row
from ceap.store.tx import Tx

#: the advisory lock of digest work on PostgreSQL (the dispatcher's caps use 4243)
LOCK = 4244
_CHUNK = 500
_INSERT_MESSAGE = (f"INSERT INTO candidates ({', '.join(CANDIDATE_COLUMNS)}) "
                   f"VALUES ({', '.join('?' for _ in CANDIDATE_COLUMNS)}) "
                   "ON CONFLICT (tenant_id, dedup_key) DO NOTHING RETURNING id")


@dataclass(frozen=True)
class Waiting:
    """A candidate a run wrote for a digest that no digest holds yet."""

    id: int
    tenant_id: str
    customer_id: str
    program: str
    category: str
    at: datetime


@dataclass(frozen=True)
class Window:
    """One digest: a customer's items of one key from ``start``, sent at ``due``."""

    tenant_id: str
    customer_id: str
    key: str
    start: datetime
    due: datetime


@dataclass(frozen=True)
class Held:
    """A held item: its window and its candidate."""

    window: Window
    candidate: Candidate


def _chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


class DigestStore:
    def __init__(self, store: Store):
        self.store = store

    @contextmanager
    def locked(self) -> Iterator[Tx | None]:
        """A transaction holding the digests' lock; None when another dispatcher has it."""
        with self.store.tx() as tx:
            if tx.dialect == "postgres":
                got = tx.execute("SELECT pg_try_advisory_xact_lock(?)", (LOCK,)).fetchone()[0]
                if not got:
                    yield None
                    return
            yield tx

    # -- collecting ----------------------------------------------------------
    @staticmethod
    def waiting(tx: Tx, programs: Sequence[str], limit: int) -> list[Waiting]:
        """Up to ``limit`` candidates of ``programs`` waiting to be put in a digest."""
        if not programs:
            return []
        rows = tx.execute(
            "SELECT id, tenant_id, customer_id, program, category, created_at FROM candidates "
            f"WHERE status = 'digest' AND program IN ({tx.placeholders(len(programs))}) "
            "ORDER BY id LIMIT ?", (*programs, limit)).fetchall()
        return sorted((Waiting(int(r[0]), r[1], r[2], r[3], r[4], _ts(r[5])) for r in rows),
                      key=lambda w: (w.at, w.id))

    @staticmethod
    def timezones(tx: Tx, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str | None]:
        """The profiles' time zones of ``(tenant, customer)`` keys (absent: no profile)."""
        by_tenant: dict[str, list[str]] = defaultdict(list)
        for tenant, customer in set(keys):
            by_tenant[tenant].append(customer)
        out: dict[tuple[str, str], str | None] = {}
        for tenant, customers in by_tenant.items():
            for chunk in _chunks(customers):
                for customer, zone in tx.execute(
                        "SELECT customer_id, timezone FROM profiles WHERE tenant_id = ? "
                        f"AND customer_id IN ({tx.placeholders(len(chunk))})", (tenant, *chunk)):
                    out[(tenant, customer)] = zone
        return out

    @staticmethod
    def open_windows(tx: Tx, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str, str], list[Window]]:
        """The unsent digests of ``(tenant, customer)`` keys, per (tenant, customer, key),
        oldest first."""
        by_tenant: dict[str, list[str]] = defaultdict(list)
        for tenant, customer in set(keys):
            by_tenant[tenant].append(customer)
        out: dict[tuple[str, str, str], list[Window]] = defaultdict(list)
        for tenant, customers in by_tenant.items():
            for chunk in _chunks(customers):
                for customer, key, start, due in tx.execute(
                        "SELECT DISTINCT customer_id, digest_key, window_start, due_at FROM digest_items "
                        f"WHERE tenant_id = ? AND customer_id IN ({tx.placeholders(len(chunk))}) "
                        "AND message_id IS NULL", (tenant, *chunk)):
                    out[(tenant, customer, key)].append(Window(tenant, customer, key, _ts(start), _ts(due)))
        for windows in out.values():
            windows.sort(key=lambda w: w.start)
        return out

    @staticmethod
    def hold(tx: Tx, items: Sequence[tuple[Waiting, Window]], now: datetime) -> None:
        """Put each waiting candidate in its window (status ``in_digest``)."""
        if not items:
            return
        ts = _Stamps(tx)
        tx.executemany(
            "INSERT INTO digest_items (candidate_id, tenant_id, customer_id, digest_key, program, "
            "item_at, window_start, due_at) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (candidate_id) DO NOTHING",
            [(w.id, w.tenant_id, w.customer_id, win.key, w.program, ts(w.at), ts(win.start),
              ts(win.due)) for w, win in items])
        reasons: dict[Window, str] = {}
        for _, win in items:
            if win not in reasons:
                reasons[win] = f"digest {win.key}: due {win.due:%Y-%m-%d %H:%M} UTC"
        tx.executemany("UPDATE candidates SET status = 'in_digest', updated_at = ?, "
                       "status_reason = ? WHERE id = ? AND status = 'digest'",
                       [(ts(now), reasons[win], w.id) for w, win in items])

    @staticmethod
    def release(tx: Tx, items: Sequence[tuple[int, str]], now: datetime) -> None:
        """Send these waiting candidates on their own (``pending`` again), with the reason."""
        if items:
            tx.executemany("UPDATE candidates SET status = 'pending', status_reason = ?, "
                           "updated_at = ? WHERE id = ? AND status = 'digest'",
                           [(why, tx.ts(now), i) for i, why in items])

    # -- flushing ------------------------------------------------------------
    def due(self, now: datetime) -> list[Window]:
        """Every digest due at ``now`` and not yet sent (read without the lock)."""
        with self.store.tx() as tx:
            rows = tx.execute(
                "SELECT DISTINCT tenant_id, customer_id, digest_key, window_start, due_at "
                "FROM digest_items WHERE message_id IS NULL AND due_at <= ?", (tx.ts(now),)).fetchall()
        windows = [Window(r[0], r[1], r[2], _ts(r[3]), _ts(r[4])) for r in rows]
        return sorted(windows, key=lambda w: (w.due, w.tenant_id, w.customer_id, w.key, w.start))

    @staticmethod
    def held(tx: Tx, windows: Sequence[Window]) -> dict[Window, list[Candidate]]:
        """The unsent items of ``windows`` (read again under the lock), oldest first."""
        wanted = set(windows)
        by_tenant: dict[str, set[str]] = defaultdict(set)
        for w in windows:
            by_tenant[w.tenant_id].add(w.customer_id)
        found: dict[int, Window] = {}
        for tenant, customers in by_tenant.items():
            for chunk in _chunks(sorted(customers)):
                for cid, customer, key, start, due in tx.execute(
                        "SELECT candidate_id, customer_id, digest_key, window_start, due_at "
                        f"FROM digest_items WHERE tenant_id = ? AND customer_id IN "
                        f"({tx.placeholders(len(chunk))}) AND message_id IS NULL", (tenant, *chunk)):
                    w = Window(tenant, customer, key, _ts(start), _ts(due))
                    if w in wanted:
                        found[int(cid)] = w
        out: dict[Window, list[Candidate]] = defaultdict(list)
        ids = sorted(found)
        for chunk in _chunks(ids):
            for row in tx.execute(f"{SELECT_CANDIDATE} WHERE id IN ({tx.placeholders(len(chunk))})",
                                  chunk).fetchall():
                c = candidate_from_row(row)
                out[found[c.id]].append(c)
        for items in out.values():
            items.sort(key=lambda c: (c.created_at, c.id))
        return out

    @staticmethod
    def send(tx: Tx, messages: Sequence[tuple[dict[str, Any], Sequence[int]]], now: datetime) -> list[int]:
        """Write each digest's message (a candidate) and mark its items, in ``tx``: a
        message's dedup key is derived from its window, so a flush that did not commit
        writes the same ones again. Returns the messages' candidate ids."""
        ts = _Stamps(tx)
        ids: list[int] = []
        items: list[tuple[Any, ...]] = []
        reasons: list[tuple[Any, ...]] = []
        stamp = ts(now)
        for message, item_ids in messages:
            base = message["dedup_key"]
            for attempt in range(1, 100):
                row = dict(message, dedup_key=base if attempt == 1 else f"{base}:{attempt}")
                values = [ts(v) if isinstance(v, datetime) else
                          (json.dumps(v) if isinstance(v, dict | list) else v)
                          for v in (row[c] for c in CANDIDATE_COLUMNS)]
                got = tx.execute(_INSERT_MESSAGE, values).fetchone()
                if got is not None:  # taken: an earlier window began at the same instant
                    break
            else:
                raise RuntimeError(f"no free dedup key for digest {base!r}")
            message_id = int(got[0])
            ids.append(message_id)
            reason = f"in digest message {message_id}"
            items.extend((message_id, stamp, i) for i in item_ids)
            reasons.extend((reason, stamp, i) for i in item_ids)
        tx.executemany("UPDATE digest_items SET message_id = ?, flushed_at = ? "
                       "WHERE candidate_id = ? AND message_id IS NULL", items)
        tx.executemany("UPDATE candidates SET status = 'digested', status_reason = ?, updated_at = ? "
                       "WHERE id = ? AND status = 'in_digest'", reasons)
        return ids


@dataclass(frozen=True)
class DigestRow:
    """One digest as ``ceap digests`` lists it."""

    customer_id: str
    key: str
    program: str
    window_start: datetime
    due_at: datetime
    items: int
    message_id: int | None
    flushed_at: datetime | None


def list_digests(store: Store, tenant: str, customer: str | None = None, key: str | None = None,
                 state: str | None = None, limit: int = 100) -> list[DigestRow]:
    """A tenant's digests, latest due first: ``state`` ``open`` (still held) or ``sent``
    (its message written), else both."""
    where, params = ["tenant_id = ?"], [tenant]
    for column, value in (("customer_id", customer), ("digest_key", key)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if state == "open":
        where.append("message_id IS NULL")
    elif state == "sent":
        where.append("message_id IS NOT NULL")
    with store.tx() as tx:
        rows = tx.execute(
            # the program of the item that opened the window (item_at = window_start):
            # the first item's, which decides the message's template and channels
            "SELECT customer_id, digest_key, coalesce(min(CASE WHEN item_at = window_start "
            "THEN program END), min(program)), window_start, due_at, count(*), "
            f"max(message_id), max(flushed_at) FROM digest_items WHERE {' AND '.join(where)} "
            # by message: two windows of one instant (a late item's, docs/digests.md) are two
            "GROUP BY customer_id, digest_key, window_start, due_at, message_id "
            "ORDER BY due_at DESC, customer_id, digest_key, max(message_id) LIMIT ?",
            (*params, limit)).fetchall()
    return [DigestRow(r[0], r[1], r[2], _ts(r[3]), _ts(r[4]), int(r[5]),
                      None if r[6] is None else int(r[6]), from_iso(r[7])) for r in rows]


class _Stamps:
    """``tx.ts`` with the values already converted remembered (windows share theirs)."""

    def __init__(self, tx: Tx):
        self.tx = tx
        self.seen: dict[datetime, Any] = {}

    def __call__(self, value: datetime) -> Any:
        found = self.seen.get(value)
        if found is None:
            found = self.seen[value] = self.tx.ts(value)
        return found


def _ts(value: Any) -> datetime:
    found = from_iso(value)
    assert found is not None
    return found


__all__ = ["LOCK", "DigestRow", "DigestStore", "Held", "Waiting", "Window", "list_digests"]
