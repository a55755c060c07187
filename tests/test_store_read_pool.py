"""Reads on their own connections (SQLite: one read-only connection per thread; PostgreSQL:
a pool): they see every committed write at once, a thread inside ``tx()`` sees its own
writes, and a read never waits for another thread's open transaction."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from ceap.model import CandidateQuery, InboxItem, RunRecord, utcnow
from ceap.store import open_store
from ceap.testing.doubles import make_candidates


def _run(store: Any, run_id: str, n: int, start: int = 0) -> None:
    now = utcnow() - timedelta(minutes=1)
    table = make_candidates(n, now=now, customer_id="alice", run_id=run_id,
                            dedup_key=lambda i: f"{run_id}-{start + i}")
    store.write_run(RunRecord(run_id, "default", "conformance", "succeeded", now), table)


def _count(store: Any) -> int:
    return len(store.candidates(CandidateQuery(customer_id="alice", status="pending", limit=100)))


def test_reads_from_many_threads_see_each_committed_write(store: Any) -> None:
    with ThreadPoolExecutor(8) as pool:
        for step in range(1, 6):
            _run(store, f"r{step}", 3, start=step * 10)
            seen = list(pool.map(lambda _: _count(store), range(16)))
            assert seen == [3 * step] * 16  # every thread's connection, right after the commit


def test_inbox_reads_follow_writes_and_marks(store: Any) -> None:
    store.inbox_add([InboxItem("default", "bob", f"k{i}", "p", f"t{i}", "b") for i in range(3)])
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda _: len(store.inbox_list("default", "bob")), range(8))) == [3] * 8
        ids = [i.id for i in store.inbox_list("default", "bob")]
        assert store.inbox_mark_read("default", "bob", ids[:2]) == 2
        unread = list(pool.map(lambda _: len(store.inbox_list("default", "bob", unread_only=True)),
                               range(8)))
    assert unread == [1] * 8


def test_a_read_inside_tx_sees_the_transaction_own_writes(store: Any) -> None:
    _run(store, "r1", 2)
    with store.tx() as tx:
        tx.execute("UPDATE candidates SET status = 'cancelled' WHERE customer_id = 'alice'")
        assert _count(store) == 0  # the writer's own uncommitted change
    assert _count(store) == 0


def test_a_read_does_not_wait_for_another_thread_open_transaction(store: Any) -> None:
    _run(store, "r1", 2)
    inside, read_done = threading.Event(), threading.Event()
    seen: list[int] = []

    def writer() -> None:
        with store.tx() as tx:
            tx.execute("UPDATE candidates SET status = 'cancelled' WHERE customer_id = 'alice'")
            inside.set()
            read_done.wait(30)  # holds its transaction (and the write lock) until the read is done

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert inside.wait(30)
        seen.append(_count(store))  # on a read connection: neither blocked nor a dirty read
        read_done.set()
    finally:
        read_done.set()
        thread.join(30)
    assert seen == [2]
    assert _count(store) == 0  # and the commit is seen once it is made


def test_a_store_opened_elsewhere_sees_writes_at_once(store_url: str) -> None:
    writer, reader = open_store(store_url), open_store(store_url, migrate=False)
    try:
        assert _count(reader) == 0
        _run(writer, "r1", 4)
        assert _count(reader) == 4
        writer.inbox_add([InboxItem("default", "bob", "k1", "p", "t", "b")])
        assert [i.idempotency_key for i in reader.inbox_list("default", "bob")] == ["k1"]
    finally:
        writer.close()
        reader.close()


def test_closed_store_reads_fail(store_url: str) -> None:
    opened = open_store(store_url)
    _count(opened)  # opens this thread's read connection (or the pool)
    opened.close()
    with pytest.raises(Exception):  # noqa: B017 - each driver has its own "closed" error
        _count(opened)
