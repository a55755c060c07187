"""The reads of deliveries keep their indexes now that these are partial (migration 0007):
SQLite uses a partial index only when a query names its WHERE term, so each read the
dispatcher, the held lists and the dashboard make is planned here, and the dashboard's
counts by day are checked against a plain GROUP BY over deliveries in every status."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from ceap.delivery.held import store_totals
from ceap.delivery.outbox import Outbox
from ceap.store import Store, open_store
from ceap.testing.doubles import FakeClock
from ceap.ui import queries
from tests.test_crash_window import crash_in_flight
from tests.test_dispatcher import T0


def _store(tmp_path: Path) -> tuple[Store, FakeClock]:
    """Five deliveries in flight, then one of each other status by hand."""
    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
    clock = FakeClock(T0)
    ids = crash_in_flight(store, clock, 5)
    with store.tx() as tx:
        for i, status in zip(ids[1:], ("queued", "dead", "ambiguous", "sent"), strict=True):
            tx.execute("UPDATE deliveries SET status = ?, sent_at = ? WHERE id = ?",
                       (status, tx.ts(clock()) if status == "sent" else None, i))
    return store, clock


def _plans(store: Store, call: Callable[[], Any]) -> list[str]:
    """The query plans of the reads of ``deliveries`` that ``call`` makes (a claim is an
    ``UPDATE ... WHERE id IN (SELECT ... FROM deliveries ...)``)."""
    seen: list[str] = []
    conn = store._conn  # type: ignore[attr-defined]
    conn.set_trace_callback(seen.append)
    try:
        call()
    finally:
        conn.set_trace_callback(None)
    return [" | ".join(str(r[3]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql))
            for sql in seen
            if sql.lstrip().upper().startswith(("SELECT", "UPDATE")) and "FROM deliveries" in sql]


def test_the_reads_of_open_deliveries_use_the_partial_indexes(tmp_path: Path) -> None:
    store, clock = _store(tmp_path)
    outbox = Outbox(store, "w")
    later = clock() + timedelta(hours=1)
    expected: dict[str, tuple[Callable[[], Any], set[str]]] = {
        "claim": (lambda: outbox.claim_deliveries(later, {"email": 10}), {"deliveries_due"}),
        "due": (lambda: outbox.due(later), {"deliveries_due"}),
        "recover": (lambda: outbox.recover(clock(), set()), {"deliveries_held"}),
        "totals": (lambda: store_totals(store),
                   {"deliveries_held", "deliveries_due", "deliveries_ambiguous"}),
        "dead list": (lambda: outbox.deliveries("default", status="dead"), {"deliveries_held"}),
        "held page": (lambda: queries.deliveries_by(store, "default", ["ambiguous"], 1),
                      {"deliveries_held"}),
        "days": (lambda: queries.delivery_days(store, "default"),
                 {"deliveries_by_day", "deliveries_due", "deliveries_held"}),
    }
    for name, (call, indexes) in expected.items():
        plans = _plans(store, call)
        assert plans, name
        used = {word for plan in plans for word in plan.replace("(", " ").split()
                if word.startswith("deliveries_")}
        assert used == indexes, (name, plans)
        assert all("USING" in plan for plan in plans), (name, plans)  # no walk of the table


def test_the_dashboards_counts_by_day_match_a_plain_count(tmp_path: Path) -> None:
    store, clock = _store(tmp_path)
    with store.tx() as tx:  # a settled delivery of another day and channel
        tx.execute("UPDATE deliveries SET created_at = ?, channel = 'sms' WHERE status = 'dead'",
                   (tx.ts(clock() - timedelta(days=1)),))
        plain = [(str(d), str(ch), str(s), int(n)) for d, ch, s, n in tx.execute(
            "SELECT substr(created_at, 1, 10), channel, status, count(*) FROM deliveries "
            "WHERE tenant_id = 'default' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3")]
    assert {s for _, _, s, _ in plain} == {"sending", "queued", "dead", "ambiguous", "sent"}
    assert queries.delivery_days(store, "default") == plain


def test_a_claim_of_candidates_reads_the_due_index_in_claim_order(tmp_path: Path) -> None:
    store, clock = _store(tmp_path)
    seen: list[str] = []
    conn = store._conn  # type: ignore[attr-defined]
    conn.set_trace_callback(seen.append)
    try:
        Outbox(store, "w").claim_candidates(clock(), 10)
    finally:
        conn.set_trace_callback(None)
    claims = [sql for sql in seen if "FROM candidates" in sql and "ORDER BY priority" in sql]
    assert len(claims) == 1
    plan = " | ".join(str(r[3]) for r in conn.execute("EXPLAIN QUERY PLAN " + claims[0]))
    assert "candidates_due" in plan and "TEMP B-TREE" not in plan, plan  # no sort of them all


def test_claims_take_the_best_due_candidates_first_and_each_once(tmp_path: Path) -> None:
    from ceap.model import RunRecord
    from ceap.testing.doubles import make_candidates

    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
    clock = FakeClock(T0)
    store.write_run(RunRecord("r1", "default", "p", "succeeded", clock()),
                    make_candidates(6, now=clock(), program="p", channels=["email"],
                                    priority=lambda i: i % 2, score=lambda i: float(i)))
    first = Outbox(store, "a").claim_candidates(clock(), 3)
    second = Outbox(store, "b").claim_candidates(clock(), 10)
    # priority 1 (scores 5, 3, 1), then priority 0 (4, 2, 0); the second worker gets the rest
    assert [(c.priority, c.score) for c in first] == [(1, 5.0), (1, 3.0), (1, 1.0)]
    assert [(c.priority, c.score) for c in second] == [(0, 4.0), (0, 2.0), (0, 0.0)]
    assert Outbox(store, "c").claim_candidates(clock(), 10) == []
