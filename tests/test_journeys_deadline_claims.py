"""Two workers claiming journey wait deadlines at once on PostgreSQL: each deadline is
taken by one of them (the second skips the rows the first holds, never waits for them
and claims them again)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from ceap.journeys import deadlines
from ceap.store import Store, open_store

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    opened = open_store(pg_url)
    yield opened
    opened.close()


def test_a_claim_skips_deadlines_another_claim_holds(pg_store: Store, pg_url: str) -> None:
    with pg_store.tx() as tx:
        deadlines.arm(
            tx, "nudge", [("default", f"c{i}", i, 1, T0, T0 + timedelta(hours=1)) for i in range(5)]
        )
    now = T0 + timedelta(hours=2)
    first = psycopg.connect(pg_url)  # a first worker's claim, its transaction not yet committed
    try:
        first.execute(
            "UPDATE timers SET claimed_until = %s WHERE program = %s",
            (now + LEASE, deadlines.timer_program("nudge")),
        )
        second: list[object] = []
        worker = threading.Thread(
            target=lambda: second.extend(deadlines.claim(pg_store, ["nudge"], now, LEASE))
        )
        worker.start()
        worker.join(5)  # skips the held rows at once (before the fix it waited here for the commit)
        first.commit()
        worker.join()
    finally:
        first.close()
    assert second == []  # not claimed a second time once the first claim committed
    # once the first claim's lease has lapsed, they are taken again
    assert len(deadlines.claim(pg_store, ["nudge"], now + LEASE + timedelta(seconds=1), LEASE)) == 5
