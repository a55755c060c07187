"""The transactional outbox: every delivery attempt is recorded before the
provider call and its outcome after, so a crash loses nothing and a resend is
never silent.

Claims are leases: a claimed candidate or delivery carries the worker and a
``lease_until``; another worker takes it over only once the lease has run
out. A claimed delivery stays ``queued`` (no attempt counted): only ``begin``,
right before its message goes to the provider, makes it ``sending`` with
``attempts + 1``, and only while the claim is still this worker's. So a
worker that dies leaves ``sending`` only what it had at the provider; the
rest of its claim is simply claimed again once the lease has run out. On
PostgreSQL claims use ``FOR UPDATE SKIP LOCKED``; on SQLite a claim is one
``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson

from ceap.channels.base import SendResult
from ceap.delivery.model import Decision, Delivery
from ceap.delivery.outbox_reads import OutboxReads
from ceap.delivery.outbox_recovery import OutboxRecovery
from ceap.delivery.outbox_recovery import Recovery as Recovery
from ceap.delivery.outbox_rows import (
    CANDIDATE_JSON,
    CANDIDATE_RETURNING,
    DELIVERY_COLS,
    INSERT_DELIVERY,
    SENT_FROM_JSON,
    delivery_from_row,
    embedded_candidates,
    insert_deliveries,
    scored,
    select_rows,
    update_in,
)
from ceap.delivery.outbox_rows import DELIVERY_COLUMNS as DELIVERY_COLUMNS
from ceap.delivery.outbox_rows import SELECT_DELIVERY as SELECT_DELIVERY
from ceap.delivery.outbox_rows import Retry as Retry
from ceap.delivery.outbox_rows import idempotency_key as idempotency_key
from ceap.model import Candidate
from ceap.store.base import Store
from ceap.store.sql_common import CANDIDATES_DUE, SELECT_CANDIDATE, candidate_from_row
from ceap.store.tx import Tx


class Outbox(OutboxRecovery, OutboxReads):
    """Claims, planning, attempts and their outcomes, retries, dead letters, fail-over,
    crash recovery and receipts (the reads in ``OutboxReads``)."""

    def __init__(self, store: Store, worker: str, lease: timedelta = timedelta(seconds=30)):
        self.store = store
        self.worker = worker
        self.lease = lease

    # -- candidates ------------------------------------------------------
    def expire(self, now: datetime) -> int:
        with self.store.tx() as tx:
            cur = tx.execute("UPDATE candidates SET status = 'expired', updated_at = ? "
                             "WHERE status IN ('pending', 'shadow') AND expires_at <= ?",
                             (tx.ts(now), tx.ts(now)))
            return int(cur.rowcount or 0)

    def claim_candidates(self, now: datetime, limit: int,
                         programs: Iterable[str] | None = None) -> list[Candidate]:
        """Lease up to ``limit`` due candidates, best first (priority, then score): one
        ``UPDATE ... RETURNING`` over the first entries of the ``candidates_due`` index."""
        with self.store.tx() as tx:
            where = [CANDIDATES_DUE, "not_before <= ?", "expires_at > ?",
                     "(claimed_until IS NULL OR claimed_until < ?)"]
            params: list[Any] = [tx.ts(now)] * 3
            names = list(programs or [])
            if programs is not None:
                if not names:
                    return []
                where.append(f"program IN ({tx.placeholders(len(names))})")
                params.extend(names)
            lock = " FOR UPDATE SKIP LOCKED" if tx.dialect == "postgres" else ""
            pick = (f"SELECT id FROM candidates WHERE {' AND '.join(where)} "
                    f"ORDER BY priority DESC, score DESC, id LIMIT ?{lock}")
            lease = ("UPDATE candidates SET worker = ?, claimed_until = ?, updated_at = ?, "
                     "version = version + 1 WHERE id IN ")
            held = (self.worker, tx.ts(now + self.lease), tx.ts(now))
            if tx.dialect == "sqlite":  # the writer is ours alone: pick, lease, read (see select_rows)
                (ids,) = tx.execute(f"SELECT json_group_array(id) FROM ({pick})", (*params, limit)).fetchone()
                tx.execute(lease + "(SELECT value FROM json_each(?))", (*held, ids))
                mine = f"{SELECT_CANDIDATE} WHERE id IN (SELECT value FROM json_each(?))"
                found = embedded_candidates(tx, mine, (ids,))
                rows = [] if found is not None else [scored(r) for r in select_rows(
                    tx, CANDIDATE_JSON, mine, (ids,))]
            else:
                found = None
                rows = tx.execute(f"{lease}({pick}) RETURNING {CANDIDATE_RETURNING}",
                                  (*held, *params, limit)).fetchall()
        claimed = found if found is not None else [candidate_from_row(r) for r in rows]
        # RETURNING keeps no order: best first again (a candidate without a score last)
        claimed.sort(key=lambda c: (-c.priority, c.score is None, -(c.score or 0.0), c.id))
        return claimed

    def plan(self, candidates: dict[int, Candidate], decisions: Sequence[Decision],
             now: datetime, lease: bool = False) -> dict[str, int]:
        """Turn decisions into deliveries and candidate states, in one transaction
        (one statement per kind of change, executed over all the rows). ``lease``: the
        queued deliveries are born leased to this worker (it sends them next), so its
        claim reads them instead of writing each row a second time; still ``queued``, no
        attempt counted: a crash leaves them to any worker once the lease runs out."""
        counts = {"planned": 0, "suppressed": 0, "deferred": 0}
        inserts: list[tuple[Any, ...]] = []
        deferred: list[tuple[Any, ...]] = []
        states: list[tuple[Any, ...]] = []
        with self.store.tx() as tx:
            stamp = tx.ts(now)
            held = (tx.ts(now + self.lease), self.worker) if lease else (None, None)
            for d in decisions:
                c = candidates[d.candidate_id]
                shadow = c.status == "shadow"
                if d.defer_until is not None:
                    deferred.append((tx.ts(d.defer_until), d.note, stamp, c.id))
                    counts["deferred"] += 1
                elif d.suppress is not None:
                    channel = c.channels[0] if c.channels else "-"
                    inserts.append((*self._row(c, channel, 0, [], "suppressed", stamp, shadow,
                                               d.suppress), None, None))
                    states.append(("suppressed", f"{d.suppress}: {d.note}" if d.note else d.suppress,
                                   stamp, c.id))
                    counts["suppressed"] += 1
                else:
                    chain = list(d.send)
                    for step, ch in enumerate(chain[:1] if d.fallback else chain):
                        rest = chain[1:] if d.fallback else []
                        inserts.append((*self._row(c, ch, step, rest, "queued", stamp, shadow, None),
                                        *held))
                    states.append(("shadowed" if shadow else "dispatched", d.note, stamp, c.id))
                    counts["planned"] += 1
            if inserts:
                insert_deliveries(tx, inserts)
            if deferred:
                tx.executemany("UPDATE candidates SET not_before = ?, claimed_until = NULL, "
                               "worker = NULL, status_reason = ?, updated_at = ? WHERE id = ?", deferred)
            groups: dict[tuple[str, str | None], list[int]] = {}
            for status, reason, _, cid in states:  # one statement per (status, reason)
                groups.setdefault((status, reason), []).append(cid)
            for (status, reason), ids in groups.items():
                update_in(tx, "UPDATE candidates SET status = ?, claimed_until = NULL, status_reason = ?, "
                          "updated_at = ? WHERE id IN ({ids})", (status, reason, stamp), ids)
        return counts

    @staticmethod
    def _row(c: Candidate, channel: str, step: int, remaining: list[str], status: str, stamp: Any,
             shadow: bool, policy: str | None) -> tuple[Any, ...]:
        return (c.tenant_id, c.id, c.program, c.customer_id, channel, step,
                json.dumps(remaining) if remaining else "[]",
                idempotency_key(c, channel), status, stamp, c.category, shadow, policy, stamp, stamp)

    def _insert(self, tx: Tx, c: Candidate, channel: str, step: int, remaining: list[str],
                status: str, now: datetime, shadow: bool, policy: str | None = None) -> None:
        row = self._row(c, channel, step, remaining, status, tx.ts(now), shadow, policy)
        tx.execute(INSERT_DELIVERY, (*row, None, None))

    # -- deliveries ------------------------------------------------------
    def claim_deliveries(self, now: datetime, quotas: dict[str, int],
                         held: Collection[int] = ()) -> list[Delivery]:
        """Lease due attempts to this worker, at most ``quotas[channel]`` per channel, oldest
        due first. They stay ``queued`` with their attempts: ``begin`` marks each one as it
        goes to the provider. Attempts already leased to this worker (``plan(lease=True)``)
        are read, not written again; only the others get a lease (one ``UPDATE``). ``held``:
        ids this worker claimed already and still has in hand (a batch not yet sent): skipped."""
        claimed: list[Delivery] = []
        with self.store.tx() as tx:
            stamp = tx.ts(now)
            # a retry never goes out after its candidate has expired
            tx.execute("UPDATE deliveries SET status = 'expired', lease_until = NULL, updated_at = ? "
                       "WHERE status = 'queued' AND candidate_id IN (SELECT id FROM candidates "
                       "WHERE expires_at <= ?)", (stamp, stamp))
            lock = " FOR UPDATE SKIP LOCKED" if tx.dialect == "postgres" else ""
            until = tx.ts(now + self.lease)
            skip = ""
            skipped: tuple[Any, ...] = ()
            if held:  # in SQL: rows handed back only to be dropped would cost their decoding
                skip = (" AND NOT (id = ANY(?::bigint[]))" if tx.dialect == "postgres"
                        else " AND id NOT IN (SELECT value FROM json_each(?))")
                ids = sorted(held)
                skipped = (ids if tx.dialect == "postgres" else json.dumps(ids),)
            for channel, quota in quotas.items():
                if quota <= 0:
                    continue
                rows = select_rows(
                    tx, f"{DELIVERY_COLS}, mine",
                    f"SELECT {DELIVERY_COLS}, worker = ? AND lease_until >= ? AS mine FROM deliveries "
                    "WHERE status = 'queued' AND channel = ? AND next_attempt_at <= ? "
                    f"AND (lease_until IS NULL OR lease_until < ? OR worker = ?){skip} "
                    f"ORDER BY next_attempt_at, id LIMIT ?{lock}",
                    (self.worker, stamp, channel, stamp, stamp, self.worker, *skipped, quota))
                others = [r[0] for r in rows if not r[-1]]
                if others:  # not leased to this worker yet (or its lease ran out): lease them
                    update_in(tx, "UPDATE deliveries SET lease_until = ?, worker = ?, updated_at = ? "
                              "WHERE id IN ({ids})", (until, self.worker, stamp), others)
                fresh = set(others)
                times: dict[Any, Any] = {}  # the rows share a few timestamps
                for r in sorted(rows, key=lambda r: r[0]):  # by id, as before
                    d = delivery_from_row(r[:-1], times)
                    if d.id in fresh:
                        d.updated_at = now
                    claimed.append(d)
        return claimed

    def release(self, ids: Sequence[int]) -> None:
        """Give up this worker's lease on claimed attempts not begun (still ``queued``)."""
        with self.store.tx() as tx:
            for start in range(0, len(ids), 500):
                chunk = list(ids[start:start + 500])
                tx.execute(f"UPDATE deliveries SET lease_until = NULL, worker = NULL WHERE id IN "
                           f"({tx.placeholders(len(chunk))}) AND status = 'queued' AND worker = ?",
                           (*chunk, self.worker))

    def release_all(self) -> int:
        """Give up every lease this worker holds on attempts not begun (a run that ends: what
        it planned and could not send, e.g. held by a rate limit, is any worker's at once)."""
        with self.store.tx() as tx:
            cur = tx.execute("UPDATE deliveries SET lease_until = NULL, worker = NULL "
                             "WHERE status = 'queued' AND worker = ?", (self.worker,))
            return int(cur.rowcount or 0)

    def begin(self, ids: Sequence[int], now: datetime) -> set[int]:
        """Mark claimed attempts ``sending`` (attempts + 1, lease from ``now``), in one
        transaction, right before their messages go to the provider; see ``begin_in``."""
        with self.store.tx() as tx:
            return self.begin_in(tx, ids, now)

    def begin_in(self, tx: Tx, ids: Sequence[int], now: datetime) -> set[int]:
        """``begin`` inside ``tx``. Returns the ids granted: those this statement moved from
        ``queued`` (leased to this worker) to ``sending``; any other was taken over (or
        expired, or resolved, or already begun) and must not be sent."""
        granted: set[int] = set()
        lease, stamp = tx.ts(now + self.lease), tx.ts(now)
        for start in range(0, len(ids), 500):
            chunk = list(ids[start:start + 500])
            marks = tx.placeholders(len(chunk))
            if tx.dialect == "sqlite":  # the writer is ours alone: read the ids, then move them
                # (two steps of the driver, where RETURNING takes one a row; see select_rows);
                # by id: SQLite would otherwise walk the status index over every queued delivery
                (moved,) = tx.execute(
                    f"SELECT json_group_array(id) FROM deliveries WHERE id IN ({marks}) "
                    "AND +status = 'queued' AND worker = ?", (*chunk, self.worker)).fetchone()
                found = orjson.loads(moved)
                if found:
                    tx.execute("UPDATE deliveries SET status = 'sending', attempts = attempts + 1, "
                               "lease_until = ?, updated_at = ? WHERE id IN (SELECT value FROM json_each(?))",
                               (lease, stamp, moved))
                    granted.update(found)
                continue
            granted.update(r[0] for r in tx.execute(
                f"UPDATE deliveries SET status = 'sending', attempts = attempts + 1, "
                f"lease_until = ?, updated_at = ? WHERE id IN ({marks}) AND status = 'queued' "
                "AND worker = ? RETURNING id", (lease, stamp, *chunk, self.worker)).fetchall())
        return granted

    def record(self, outcomes: Sequence[tuple[Delivery, SendResult]], now: datetime,
               retry: Retry, jitter: Iterable[float]) -> dict[str, int]:
        """Record provider outcomes: sent, retry later, or dead (then the fallback).
        ``Delivery.attempts`` is the number of attempts made, this one included (stored)."""
        with self.store.tx() as tx:
            return self.record_in(tx, outcomes, now, retry, jitter)

    def record_in(self, tx: Tx, outcomes: Sequence[tuple[Delivery, SendResult]], now: datetime,
                  retry: Retry, jitter: Iterable[float]) -> dict[str, int]:
        """``record`` inside ``tx``."""
        counts = {"sent": 0, "retry": 0, "dead": 0, "fallback": 0}
        noise = iter(jitter)
        stamp = tx.ts(now)
        sent: list[tuple[Any, ...]] = []
        retried: list[tuple[Any, ...]] = []
        for d, r in outcomes:
            if r.status in ("sent", "delivered", "duplicate"):
                status = "delivered" if r.status == "delivered" else "sent"
                sent.append((status, r.provider_id, d.attempts, stamp, stamp, d.id))
            elif r.retryable and d.attempts < retry.max_attempts:
                wait = retry.delay(d.attempts, next(noise, 0.5), r.retry_after)
                retried.append((tx.ts(now + timedelta(seconds=wait)), r.error, d.attempts, stamp, d.id))
            else:
                reason = r.error or "failed"
                if r.retryable:
                    reason = f"gave up after {d.attempts} attempts: {reason}"
                counts["fallback" if self._dead(tx, d, reason, now) else "dead"] += 1
        if sent:
            self._record_sent(tx, sent, stamp)
            done = sorted({d.candidate_id for d, r in outcomes
                           if r.status in ("sent", "delivered", "duplicate")})
            update_in(tx, "UPDATE candidates SET status = 'sent', updated_at = ? "
                      "WHERE id IN ({ids}) AND status <> 'sent'", (stamp,), done)
        if retried:
            tx.executemany("UPDATE deliveries SET status = 'queued', next_attempt_at = ?, "
                           "last_error = ?, attempts = ?, lease_until = NULL, updated_at = ? WHERE id = ?",
                           retried)
        counts["sent"], counts["retry"] = len(sent), len(retried)
        return counts

    @staticmethod
    def _record_sent(tx: Tx, sent: list[tuple[Any, ...]], stamp: Any) -> None:
        """Mark ``sent`` rows (status, provider id, attempts, stamp, stamp, id) as sent. On
        SQLite one statement over one JSON text (``UPDATE ... FROM json_each``): an
        ``executemany`` steps once per row. Elsewhere: one statement per (status, attempts)
        over an id list for the rows without a provider id, one execution per row for the
        others."""
        if tx.dialect == "sqlite":
            for start in range(0, len(sent), 5000):
                rows = [[did, status, provider_id, attempts]
                        for status, provider_id, attempts, _, _, did in sent[start:start + 5000]]
                tx.execute(SENT_FROM_JSON, (stamp, stamp, orjson.dumps(rows).decode()))
            return
        plain: dict[tuple[str, int], list[int]] = {}
        for status, provider_id, attempts, _, _, did in sent:
            if provider_id is None:
                plain.setdefault((status, attempts), []).append(did)
        for (status, attempts), ids in plain.items():
            update_in(tx, "UPDATE deliveries SET status = ?, provider_id = NULL, attempts = ?, "
                      "sent_at = ?, lease_until = NULL, last_error = NULL, updated_at = ? "
                      "WHERE id IN ({ids})", (status, attempts, stamp, stamp), ids)
        named = [row for row in sent if row[1] is not None]
        if named:
            tx.executemany("UPDATE deliveries SET status = ?, provider_id = ?, attempts = ?, "
                           "sent_at = ?, lease_until = NULL, last_error = NULL, updated_at = ? "
                           "WHERE id = ?", named)

    def _dead(self, tx: Tx, d: Delivery, reason: str, now: datetime) -> bool:
        """Dead-letter ``d``; plan its fallback channel if it has one. True if it had."""
        row = tx.execute("SELECT remaining FROM deliveries WHERE id = ?", (d.id,)).fetchone()
        remaining = json.loads(row[0]) if row and row[0] else []
        tx.execute("UPDATE deliveries SET status = 'dead', last_error = ?, attempts = ?, lease_until = NULL, "
                   "updated_at = ? WHERE id = ?", (reason, d.attempts, tx.ts(now), d.id))
        if remaining:
            c = candidate_from_row(tx.execute(f"{SELECT_CANDIDATE} WHERE id = ?",
                                              (d.candidate_id,)).fetchone())
            self._insert(tx, c, remaining[0], d.step + 1, remaining[1:], "queued", now, d.shadow)
            return True
        open_ = tx.execute("SELECT count(*) FROM deliveries WHERE candidate_id = ? AND status IN "
                           "('queued', 'sending', 'sent', 'delivered')", (d.candidate_id,)).fetchone()
        if not open_[0]:
            tx.execute("UPDATE candidates SET status = 'failed', status_reason = ?, updated_at = ? "
                       "WHERE id = ?", (f"{d.channel}: {reason}", tx.ts(now), d.candidate_id))
        return False

    def fail_over(self, channel: str, reason: str, now: datetime) -> int:
        """Move queued attempts on ``channel`` that have a fallback to it (breaker open)."""
        with self.store.tx() as tx:
            rows = tx.execute(f"SELECT {DELIVERY_COLS} FROM deliveries WHERE status = 'queued' "
                              "AND channel = ? AND remaining <> '[]' "
                              "AND (lease_until IS NULL OR lease_until < ? OR worker = ?)",
                              (channel, tx.ts(now), self.worker)).fetchall()
            for row in rows:
                self._dead(tx, delivery_from_row(row), reason, now)
        return len(rows)

    def record_shadow(self, deliveries: Sequence[tuple[Delivery, str]], now: datetime) -> None:
        """Record what shadow deliveries would have sent (``detail``), sending nothing."""
        with self.store.tx() as tx:
            for d, detail in deliveries:
                tx.execute("UPDATE deliveries SET status = 'shadow', lease_until = NULL, "
                           "updated_at = ? WHERE id = ?", (tx.ts(now), d.id))
                self._event(tx, d, "shadow", detail, now)

    # -- receipts --------------------------------------------------------
    def receipt(self, tenant_id: str, provider_id: str | None, key: str | None, status: str,
                detail: str | None, now: datetime) -> Delivery | None:
        """Apply a provider's receipt (delivered, bounced, failed, complained), and record
        it as an engagement of the same type in the same transaction (once per delivery
        and type: a provider's retried callback adds nothing)."""
        from ceap.outcomes.engagement import RECEIPT_TYPES, DeliveryRef, record_in

        with self.store.tx() as tx:
            column, value = ("provider_id", provider_id) if provider_id else ("idempotency_key", key)
            row = tx.execute(f"SELECT {DELIVERY_COLS} FROM deliveries WHERE tenant_id = ? AND {column} = ?",
                             (tenant_id, value)).fetchone()
            if row is None:
                return None
            d = delivery_from_row(row)
            tx.execute("UPDATE deliveries SET status = ?, updated_at = ? WHERE id = ?",
                       (status, tx.ts(now), d.id))
            self._event(tx, d, status, detail, now)
            if status in RECEIPT_TYPES:
                record_in(tx, [DeliveryRef.of(d).engagement(status, now, "receipt")], now)
        return d
