"""The serving API's hot reads on PostgreSQL, on the event loop (ceap.store.pg_serving):
the same answers as ``candidates(servable=True)`` and ``inbox_list``, byte for byte once
made JSON, and a bounded set of connections that survives waits, cancellations and
failures."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from ceap.api.app import inbox_plain, json_bytes, plain
from ceap.model import CandidateQuery, InboxItem, RunRecord, utcnow
from ceap.store import open_store
from ceap.store.pg_serving import (
    CONNECTIONS_ENV,
    PIPELINE_DEPTH,
    PgServingReads,
    connections_from_env,
)
from ceap.store.postgres import PostgresStore
from ceap.testing import FakeClock
from ceap.testing.doubles import make_candidates

pytestmark = pytest.mark.service("postgres")

STATUSES = ["pending", "dispatched", "sent", "cancelled", "pending", "pending", "pending",
            "shadow", "pending", "sent", "failed", "pending"]


@pytest.fixture
def store(pg_url: str) -> Iterator[PostgresStore]:
    s = open_store(pg_url)
    assert isinstance(s, PostgresStore)
    now = utcnow().replace(microsecond=120000) - timedelta(minutes=1)  # isoformat: ".120000"
    s.clock = FakeClock(now + timedelta(minutes=1))  # type: ignore[method-assign]
    n = len(STATUSES)
    s.write_run(RunRecord("r", "default", "recs", "succeeded", now), make_candidates(
        n, now=now, customer_id="alice", status=lambda i: STATUSES[i],
        holdout=lambda i: i == 4, program=lambda i: "recs" if i % 2 else "churn",
        not_before=lambda i: now + timedelta(hours=1) if i == 5 else now,
        expires_at=lambda i: now + timedelta(minutes=30) if i == 6 else (
            now.replace(microsecond=0) if i == 2 else now) + timedelta(days=2),
        channels=lambda i: ["inapp", "email"] if i % 3 == 0 else ["email"],
        score=lambda i: [1.0, 1.0, 1e-7, 0.1, 0.3, 0.0, 2.5e20, 0.9, None, 1 / 3, 0.5, float("nan")][i],
        subject_id=lambda i: 'q"b\\c\nd\te\x01ü' if i == 1 else f"s{i}",
        priority=lambda i: i % 2, context=lambda i: None if i == 9 else {"n": i},
        payload=lambda i: None if i == 8 else {"big": 2**70} if i == 0 else {"f": i / 10, "t": "é✓"}))
    s.write_run(RunRecord("r2", "other", "recs", "succeeded", now),
                make_candidates(2, now=now, tenant_id="other", customer_id="alice"))
    s.inbox_add([InboxItem("default", "alice", f"m{i}", "recs", f"Title {i}", "Body",
                           {"i": i} if i != 2 else {}) for i in range(4)])
    s.clock.now = s.clock.now.replace(microsecond=0)  # type: ignore[attr-defined]
    s.inbox_add([InboxItem("default", "alice", "m4", "recs", "Whole second", "Body")])  # the oldest
    s.inbox_add([InboxItem("other", "alice", "m0", "recs", "Theirs", "Body")])
    s.inbox_mark_read("default", "alice", [i.id for i in s.inbox_list("default", "alice")][:2])
    yield s
    s.close()


def _candidates(store: PostgresStore, channel: str | None, program: str | None, limit: int) -> bytes:
    found = asyncio.run(store.serving_reads().candidates("default", "alice", channel, program, limit))
    return json_bytes(found)


def _stored(store: PostgresStore, channel: str | None, program: str | None, limit: int) -> bytes:
    query = CandidateQuery(customer_id="alice", channel=channel, program=program, limit=limit,
                           servable=True)
    return json_bytes([plain(c) for c in store.candidates(query)])


def test_candidates_are_those_of_the_store_query(store: PostgresStore) -> None:
    every = _candidates(store, None, None, 100)
    assert every.count(b'"id"') == 7  # servable: 4 of the 12 are not, holdout, due later
    for channel in (None, "inapp", "push"):
        for program in (None, "recs", "nope"):
            for limit in (1, 3, 100):
                assert _candidates(store, channel, program, limit) == _stored(store, channel, program, limit)
    store.clock.advance(hours=1)  # type: ignore[attr-defined]
    # one expired, one due now: the store's clock, not the database server's
    assert _candidates(store, None, None, 100) == _stored(store, None, None, 100) != every


def test_inbox_is_that_of_the_store(store: PostgresStore) -> None:
    for unread in (False, True):
        found = asyncio.run(store.serving_reads().inbox("default", "alice", unread))
        assert len(found) == (3 if unread else 5)
        assert json_bytes(found) == json_bytes(
            [inbox_plain(i) for i in store.inbox_list("default", "alice", unread_only=unread)])
    assert asyncio.run(store.serving_reads().inbox("default", "nobody", False)) == []


def _reads(store: PostgresStore, size: int, name: str = "ceap_test") -> PgServingReads:
    return PgServingReads(f"{store._conninfo}{'&' if '?' in store._conninfo else '?'}"
                          f"application_name={name}", store.clock, size)


def _backends(store: PostgresStore, name: str) -> int:
    """The database's open connections named ``name`` (another test's are named otherwise)."""
    with psycopg.connect(store._conninfo, autocommit=True) as admin:
        row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                            (name,)).fetchone()
    return int(row[0]) if row else 0


def test_reads_in_flight_together_share_one_connection(store: PostgresStore) -> None:
    # a few reads at a time (a steady rate) keep one database process busy, not several
    # idle ones (a burst after a quiet second woke each: bench/README.md, issue 11)
    name = f"ceap_share_{id(store)}"
    reads = _reads(store, 10, name)

    async def four() -> list[list[dict[str, Any]]]:
        return await asyncio.gather(*[reads.candidates("default", "alice", None, None, 5)
                                      for _ in range(PIPELINE_DEPTH)])

    async def rounds() -> None:
        for _ in range(5):
            answers = await four()
            assert len({json_bytes(a) for a in answers}) == 1 and answers[0]

    try:
        asyncio.run(rounds())
        assert _backends(store, name) == 1
    finally:
        reads.close()


def test_a_second_connection_takes_reads_only_past_the_first_ones_depth(
        store: PostgresStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from ceap.store import pg_serving

    reads = _reads(store, 10)
    used: list[int] = []
    submit = pg_serving._Conn.submit

    def spy(conn: Any, name: bytes, params: list[bytes]) -> Any:
        used.append(reads._conns.index(conn))
        return submit(conn, name, params)

    async def together(n: int) -> None:
        await asyncio.gather(*[reads.inbox("default", "alice", False) for _ in range(n)])

    async def go() -> None:
        await together(3 * PIPELINE_DEPTH)  # a burst: more than one connection opened
        assert len(reads._conns) > 1
        monkeypatch.setattr(pg_serving._Conn, "submit", spy)
        for _ in range(5):
            await together(2)  # two at a time: the first connection's pipeline has room

    try:
        asyncio.run(go())
        assert used == [0] * 10
    finally:
        reads.close()


def test_reads_past_the_size_share_the_connections(store: PostgresStore) -> None:
    name = f"ceap_size_{id(store)}"
    reads = _reads(store, 2, name)

    async def many() -> list[list[dict[str, Any]]]:
        return await asyncio.gather(*[reads.candidates("default", "alice", None, None, 5)
                                      for _ in range(30)])

    try:
        answers = asyncio.run(many())
        assert len({json_bytes(a) for a in answers}) == 1 and answers[0]
        assert len(reads._conns) == _backends(store, name) == 2  # never more than its size
        asyncio.run(many())  # another event loop, the same connections
        assert len(reads._conns) == _backends(store, name) == 2
    finally:
        reads.close()


def test_a_cancelled_read_leaves_the_others_served(store: PostgresStore) -> None:
    reads = _reads(store, 1)
    locker = psycopg.connect(store._conninfo)  # holds a lock the reads wait for, until commit

    async def go() -> list[Any]:
        locker.execute("LOCK TABLE inbox IN ACCESS EXCLUSIVE MODE")
        first = asyncio.create_task(reads.inbox("default", "alice", False))
        middle = asyncio.create_task(reads.inbox("default", "alice", True))
        last = asyncio.create_task(reads.inbox("default", "alice", False))
        await asyncio.sleep(0)  # all three sent on the one connection, waiting for the lock
        [conn] = reads._conns
        assert not first.done() and len(conn.inflight) == 3
        first.cancel()  # mid-read: its answer is dropped, the connection goes on
        middle.cancel()
        await asyncio.sleep(0)
        locker.commit()
        return await asyncio.gather(first, middle, last, return_exceptions=True)

    try:
        asyncio.run(reads.inbox("default", "alice", False))  # the connection is open and idle
        first, middle, last = asyncio.run(go())
        assert isinstance(first, asyncio.CancelledError) and isinstance(middle, asyncio.CancelledError)
        assert len(last) == 5
        [conn] = reads._conns
        assert not conn.inflight and not conn.broken
        assert len(asyncio.run(reads.inbox("default", "alice", True))) == 3  # the same one, in step
    finally:
        locker.close()
        reads.close()


def test_a_read_error_is_its_own(store: PostgresStore) -> None:
    reads = _reads(store, 1)

    async def go() -> list[Any]:
        return await asyncio.gather(
            reads.candidates("default", "alice", None, None, 5),
            reads.candidates("default", "alice", None, None, -1),  # LIMIT -1: an error
            reads.inbox("default", "alice", False), return_exceptions=True)

    try:
        good, bad, inbox = asyncio.run(go())
        assert isinstance(bad, psycopg.errors.InvalidRowCountInLimitClause)
        assert len(good) == 5 and len(inbox) == 5
        [conn] = reads._conns
        assert not conn.broken
    finally:
        reads.close()


def test_a_failed_connection_is_dropped(store: PostgresStore) -> None:
    reads = _reads(store, 1)
    try:
        asyncio.run(reads.inbox("default", "alice", False))
        [conn] = reads._conns
        with psycopg.connect(store._conninfo, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s, 10000)", (conn.pg.backend_pid,))  # and gone
        with pytest.raises(psycopg.OperationalError):
            asyncio.run(reads.inbox("default", "alice", False))
        assert len(asyncio.run(reads.inbox("default", "alice", False))) == 5  # a new connection
        assert len(reads._conns) == 1 and reads._conns[0] is not conn
    finally:
        reads.close()


def test_a_connection_closed_while_idle_is_replaced_not_used(store: PostgresStore) -> None:
    reads = _reads(store, 1)

    async def go() -> list[Any]:
        await reads.inbox("default", "alice", False)
        [conn] = reads._conns
        with psycopg.connect(store._conninfo, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s, 10000)", (conn.pg.backend_pid,))
        for _ in range(500):  # the event loop hears the connection end
            if conn.broken:
                break
            await asyncio.sleep(0.01)
        assert conn.broken
        return await reads.inbox("default", "alice", False)  # on a new connection, no error

    try:
        assert len(asyncio.run(go())) == 5
        assert len(reads._conns) == 1
    finally:
        reads.close()


def test_closed_from_another_thread_its_loop_unregisters_it_first(store: PostgresStore) -> None:
    import threading
    import time

    reads = _reads(store, 1)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()

    async def unregister(fd: int) -> bool:
        return loop.remove_reader(fd)  # False: not registered (any more)

    try:
        asyncio.run_coroutine_threadsafe(reads.inbox("default", "alice", False), loop).result(30)
        [conn] = reads._conns
        fd = conn.fd
        assert conn.loop is loop
        reads.close()  # from this thread, while the loop runs in its own
        for _ in range(500):
            if conn.loop is None:
                break
            time.sleep(0.01)
        assert conn.loop is None and conn.pg.status == psycopg.pq.ConnStatus.BAD  # finished
        assert asyncio.run_coroutine_threadsafe(unregister(fd), loop).result(30) is False
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def test_answer_fields_are_those_the_api_shows() -> None:
    from ceap.store.pg_serving import CANDIDATE_FIELDS, INBOX_FIELDS, _candidate, _inbox_item

    times = ["2026-01-02T03:04:05"] * 2
    assert tuple(_candidate(*["x"] * 6, "0.5", *["x"] * 5, *times)) == CANDIDATE_FIELDS
    assert tuple(_inbox_item(*["x"] * 6, times[0], True)) == INBOX_FIELDS


def test_times_are_written_as_isoformat_writes_them() -> None:
    from datetime import UTC, datetime

    from ceap.store.pg_serving import _iso

    for micro in (0, 1, 10, 840000, 120000, 999999, 500000):
        t = datetime(2026, 12, 7, 12, 24, 4, micro, tzinfo=UTC)
        pg = t.replace(tzinfo=None).isoformat().rstrip("0") if micro else t.replace(tzinfo=None).isoformat()
        assert _iso(pg.rstrip(".")) == t.isoformat()  # PostgreSQL drops a fraction's last zeros


def test_closed_store_reads_fail(store: PostgresStore) -> None:
    reads = store.serving_reads()
    asyncio.run(reads.inbox("default", "alice", False))
    store.close()
    with pytest.raises(psycopg.OperationalError):
        asyncio.run(reads.inbox("default", "alice", False))


def test_connections_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert connections_from_env() == 10
    monkeypatch.setenv(CONNECTIONS_ENV, "12")
    assert connections_from_env() == 12
    for bad in ("0", "-1", "two", "101"):
        monkeypatch.setenv(CONNECTIONS_ENV, bad)
        with pytest.raises(ValueError, match=CONNECTIONS_ENV):
            connections_from_env()


def test_json_columns_keep_integers_past_64_bits() -> None:
    from ceap.store.schema import loads

    for text in ('{"big": 1180591620717411303424, "t": "é"}', '[-1180591620717411303424, 0.5]'):
        assert loads(text) == loads(text.encode()) == json.loads(text)  # orjson alone: a float
    assert type(loads('{"big": 1180591620717411303424}')["big"]) is int


def test_text_with_a_nul_is_refused_not_cut(store: PostgresStore) -> None:
    reads = store.serving_reads()
    for customer in ("alice\x00", "al\x00ice"):  # libpq would read "alice" or "al"
        with pytest.raises(psycopg.DataError):
            asyncio.run(reads.inbox("default", customer, False))
        with pytest.raises(psycopg.DataError):
            asyncio.run(reads.candidates("default", "alice", customer, None, 5))
