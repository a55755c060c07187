"""Row writes per message of the dispatcher (issue 11, fifth pass): a delivery is born
leased to the dispatcher that planned it, so its claim reads it instead of writing it a
second time; ``begin`` grants only the attempts it moved to ``sending``."""

from __future__ import annotations

import re
import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from ceap.delivery.dispatcher import Dispatcher
from ceap.delivery.outbox import Outbox
from ceap.model import CandidateQuery
from ceap.store import Store, open_store
from ceap.testing.doubles import FakeClock
from tests.test_crash_window import by_status, rows
from tests.test_dispatcher import T0, flaky, seed


def test_a_planned_delivery_is_leased_to_its_planner(store: Store) -> None:
    seed(store, 3)
    clock = FakeClock(T0)
    planner = Dispatcher(store, {"email": flaky()}, clock=clock, worker="planner")
    planner.plan()
    assert rows(store, "SELECT DISTINCT status, worker FROM deliveries") == [("queued", "planner")]
    other = Outbox(store, "other")
    assert other.claim_deliveries(clock(), {"email": 10}) == []  # not before the lease runs out
    mine = planner.outbox.claim_deliveries(clock(), {"email": 10})
    assert [(d.status, d.attempts) for d in mine] == [("queued", 0)] * 3
    # ... the planner dies before sending: once its lease ran out anyone claims them
    clock.advance(seconds=31)
    assert sorted(d.id for d in other.claim_deliveries(clock(), {"email": 10})) == \
        sorted(d.id for d in mine)
    assert planner.outbox.begin([d.id for d in mine], clock()) == set()  # not the planner's now
    assert rows(store, "SELECT DISTINCT worker FROM deliveries") == [("other",)]


def test_a_claim_skips_what_this_worker_holds(store: Store) -> None:
    seed(store, 4)
    clock = FakeClock(T0)
    d = Dispatcher(store, {"email": flaky()}, clock=clock, worker="w")
    d.plan()
    first = d.outbox.claim_deliveries(clock(), {"email": 2})
    held = {x.id for x in first}
    second = d.outbox.claim_deliveries(clock(), {"email": 2}, held)
    assert len(second) == 2 and not held & {x.id for x in second}
    assert d.outbox.claim_deliveries(clock(), {"email": 2}, held | {x.id for x in second}) == []


def test_begin_never_grants_an_attempt_already_begun(store: Store) -> None:
    seed(store, 2)
    clock = FakeClock(T0)
    d = Dispatcher(store, {"email": flaky()}, clock=clock, worker="w")
    d.plan()
    ids = [x.id for x in d.outbox.claim_deliveries(clock(), {"email": 10})]
    assert d.outbox.begin(ids[:1], clock()) == set(ids[:1])
    assert d.outbox.begin(ids, clock()) == set(ids[1:])  # the first is at its provider already
    assert rows(store, "SELECT attempts FROM deliveries ORDER BY id") == [(1,), (1,)]


def test_a_pipelined_run_sends_each_message_once(store: Store) -> None:
    seed(store, 60)
    email = flaky()
    stats = Dispatcher(store, {"email": email}, clock=FakeClock(T0), batch_size=7, worker="w").run()
    assert (stats.sent, stats.leased, stats.attempted) == (60, 60, 60)
    assert len(email.accepted) == 60 and len({m.idempotency_key for m in email.accepted}) == 60
    assert by_status(store) == {"sent": 60}


def _count_row_writes(store: Any) -> Counter[str]:
    """Rows changed per table by the statements run on ``store``'s write connection."""
    conn = store._conn
    counts: Counter[str] = Counter()
    state: dict[str, Any] = {"table": None, "total": conn.total_changes}
    lock = threading.Lock()

    def trace(sql: str) -> None:
        with lock:
            total = conn.total_changes
            if state["table"] is not None:
                counts[state["table"]] += total - state["total"]
            state["total"] = total
            found = re.match(r"\s*(?:INSERT(?: OR \w+)? INTO|UPDATE|DELETE FROM)\s+(\w+)", sql, re.I)
            state["table"] = found.group(1) if found else None

    conn.set_trace_callback(trace)
    return counts


def test_row_writes_per_message(tmp_path: Path) -> None:
    """A delivery row is written three times (planned, begun, recorded), its candidate
    three times (claimed, dispatched, sent): the delivery's claim used to be a fourth."""
    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
    try:
        seed(store, 40)
        with store.tx() as tx:  # due now, whatever the clock says
            tx.execute("UPDATE candidates SET not_before = ?, expires_at = ?",
                       (tx.ts(T0), tx.ts(T0 + timedelta(days=7))))
        counts = _count_row_writes(store)
        email = flaky()
        stats = Dispatcher(store, {"email": email}, clock=FakeClock(T0), batch_size=10).run()
        store._conn.execute("SELECT 1")  # closes the count of the last statement
        store._conn.set_trace_callback(None)
        assert stats.sent == 40 and len(email.accepted) == 40
        assert counts["deliveries"] == 3 * 40
        assert counts["candidates"] == 3 * 40
    finally:
        store.close()


def test_a_run_that_ends_leaves_nothing_leased(store: Store) -> None:
    """What a one-shot run planned and a rate limit held back is any worker's at once."""
    seed(store, 10)
    clock = FakeClock(T0)  # time stands still: no token comes back
    email = flaky(rate_per_sec=4)
    stats = Dispatcher(store, {"email": email}, clock=clock, worker="w").run(wait=False)
    assert (stats.sent, stats.held_rate_limit) == (4, 6)
    assert rows(store, "SELECT count(*) FROM deliveries WHERE status = 'queued' "
                       "AND worker IS NOT NULL") == [(0,)]
    assert len(Outbox(store, "other").claim_deliveries(clock(), {"email": 10})) == 6


def test_a_claim_reads_scores_and_rows_as_stored(store: Store) -> None:
    """Claims read their rows back in one piece on SQLite (JSON): scores keep every digit,
    text, JSON columns and NULLs come back as a row-by-row read gives them."""
    scores = [0.1 + 0.2, 1 / 3, 1e-300, None, 123456789.12345679]
    seed(store, len(scores), score=lambda i: scores[i], payload=lambda i: {"i": i, "t": "héllo ✓ \"q\""})
    expected = {c.id: c for c in store.candidates(CandidateQuery(limit=100, include_expired=True))}
    claimed = Outbox(store, "w").claim_candidates(T0, 100)
    assert sorted(c.id for c in claimed) == sorted(expected)
    for c in claimed:
        want = expected[c.id]
        assert (c.score, c.payload, c.channels, c.context, c.holdout, c.created_at, c.dedup_key) == \
            (want.score, want.payload, want.channels, want.context, want.holdout, want.created_at,
             want.dedup_key)
        assert c.version == want.version + 1
    assert {c.score for c in claimed} == set(scores)


def test_a_large_plan_and_claim_keep_every_row(store: Store) -> None:
    """More deliveries than one multi-row statement holds (500): each planned once, claimed
    once, in due order; a key planned again is ignored."""
    seed(store, 1203)
    clock = FakeClock(T0)
    planner = Dispatcher(store, {"email": flaky()}, clock=clock, worker="w", batch_size=2000)
    stats = planner.plan()
    assert stats.planned == 1203
    [(n, keys)] = rows(store, "SELECT count(*), count(DISTINCT idempotency_key) FROM deliveries")
    assert (n, keys) == (1203, 1203)
    claimed = planner.outbox.claim_deliveries(clock(), {"email": 2000})
    assert len(claimed) == 1203 and len({d.id for d in claimed}) == 1203
    assert {(d.status, d.attempts, d.shadow, d.channel) for d in claimed} == {("queued", 0, False, "email")}
    ids = [d.id for d in claimed]
    assert planner.outbox.begin(ids[:600], clock()) == set(ids[:600])
    assert planner.outbox.begin(ids[590:610], clock()) == set(ids[600:610])  # begun once only
    assert by_status(store) == {"sending": 610, "queued": 593}



def test_record_writes_each_sent_row_its_own_status_provider_id_and_attempts(store: Store) -> None:
    """``record`` writes a batch's sent rows in one statement on SQLite (``SENT_FROM_JSON``):
    each row keeps its own status, provider id (or none) and attempts, on every backend."""
    from ceap.channels.base import SendResult
    from ceap.delivery.outbox import Retry

    seed(store, 4)
    clock = FakeClock(T0)
    planner = Dispatcher(store, {"email": flaky()}, clock=clock, worker="w")
    planner.plan()
    claimed = planner.outbox.claim_deliveries(clock(), {"email": 10})
    assert planner.outbox.begin([d.id for d in claimed], clock()) == {d.id for d in claimed}
    answers = [SendResult("", "sent", provider_id="p-0"), SendResult("", "delivered"),
               SendResult("", "duplicate", provider_id="p-2"), SendResult("", "sent")]
    attempts = [1, 2, 1, 3]
    outcomes = []
    for d, answer, n in zip(sorted(claimed, key=lambda d: d.id), answers, attempts, strict=True):
        d.attempts = n
        outcomes.append((d, answer))
    counts = planner.outbox.record(outcomes, clock(), Retry(), iter(()))
    assert counts["sent"] == 4
    assert rows(store, "SELECT status, provider_id, attempts, sent_at IS NOT NULL, lease_until, last_error "
                "FROM deliveries ORDER BY id") == [
        ("sent", "p-0", 1, True, None, None), ("delivered", None, 2, True, None, None),
        ("sent", "p-2", 1, True, None, None), ("sent", None, 3, True, None, None)]
    assert rows(store, "SELECT DISTINCT status FROM candidates") == [("sent",)]
