"""HTTP channels driven from one thread (``http_loop``): the same results as a thread
per lane, the journal's begins committed (in the sending thread) before each
request, at most ``concurrency`` attempts in flight, TLS, time-outs, refusals
and a failing journal."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ceap.channels.base import Message, SendResult
from ceap.channels.webhook import WebhookChannel
from ceap.delivery.dispatcher import Dispatcher
from ceap.delivery.journal import AttemptJournal
from ceap.delivery.model import Delivery
from ceap.delivery.outbox import Outbox, Retry
from ceap.delivery.timed_journal import TimedJournal
from ceap.store import Store
from ceap.testing import make_messages
from ceap.testing.doubles import FakeClock
from tests.channel_helpers import tls_server
from tests.provider_server import ProviderServer, Recorded, Reply, serve
from tests.test_crash_window import by_status, rows
from tests.test_dispatcher import T0, flaky, seed

SECRET = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


@pytest.fixture
def server() -> Iterator[ProviderServer]:
    yield from serve()


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_SECRET", SECRET)


def hook(url: str, **kw: Any) -> WebhookChannel:
    return WebhookChannel.from_dict({"type": "webhook", "url": url, "secret_env": "HOOK_SECRET",
                                     "allow_private": True, "timeout": 2.0, **kw})


def key_of(r: Recorded) -> str:
    return str(r.json()["data"]["idempotency_key"])


def test_the_dispatcher_begins_each_message_before_the_loop_sends_it(store: Store,
                                                                     server: ProviderServer) -> None:
    seed(store, 60, channels=["webhook"])
    seen: list[tuple[str, int, int]] = []
    lock = threading.Lock()

    def provider(r: Recorded) -> Reply:  # what the store says while the request is at the provider
        [(status, attempts)] = rows(store, "SELECT status, attempts FROM deliveries "
                                           "WHERE idempotency_key = ?", (key_of(r),))
        [(sending,)] = rows(store, "SELECT count(*) FROM deliveries WHERE status = 'sending'")
        with lock:
            seen.append((str(status), int(attempts), int(sending)))
        return Reply(204)

    server.default = provider
    channel = hook(server.url + "/hook", concurrency=4)
    assert channel.loop_ready()
    try:
        stats = Dispatcher(store, {"webhook": channel}, clock=FakeClock(T0)).run()
    finally:
        channel.close()
    assert stats.sent == 60 and len(server.calls("/hook")) == 60
    assert len({key_of(r) for r in server.calls("/hook")}) == 60  # each once
    assert {(s, a) for s, a, _ in seen} == {("sending", 1)}  # committed before the request
    assert max(n for *_, n in seen) <= 4  # at most one per lane in flight
    assert by_status(store) == {"sent": 60}
    assert rows(store, "SELECT DISTINCT attempts FROM deliveries") == [(1,)]
    assert len(channel.client._all) <= 4  # one kept-alive connection per lane


REPLIES = {"c0": Reply(200), "c1": Reply(204), "c2": Reply(503, "down"), "c3": Reply(404),
           "c4": Reply(302, headers={"Location": "/elsewhere"}), "c5": Reply(400, {"detail": "SECRET"}),
           "c6": Reply(500, "SECRET"), "c7": Reply(201)}


@pytest.mark.parametrize("concurrency", [1, 3])
def test_the_loop_gives_the_threaded_lanes_results(server: ProviderServer, concurrency: int) -> None:
    for customer, reply in REPLIES.items():
        server.route(f"/hook/{customer}/", reply)
    messages = make_messages(len(REPLIES), channel="webhook")
    results = {}
    for one_thread in (True, False):
        channel = hook(server.url + "/hook/{customer_id}/x", concurrency=concurrency, one_thread=one_thread)
        assert channel.loop_ready() is one_thread
        try:
            results[one_thread] = channel.send(messages)
            again = channel.send(messages)  # the ledger: what was accepted is a duplicate now
        finally:
            channel.close()
        assert [r.status for r in again] == ["duplicate", "duplicate", "failed", "failed", "failed",
                                             "failed", "failed", "duplicate"]
    shown = [[(r.idempotency_key, r.status, r.error, r.retryable, r.retry_after) for r in rs]
             for rs in results.values()]
    assert shown[0] == shown[1]
    assert [r.status for r in results[True]] == ["sent", "sent"] + ["failed"] * 5 + ["sent"]
    assert len(server.calls("/hook")) == 2 * (8 + 5)


def test_a_time_out_closes_its_connection_and_fails_retryably(server: ProviderServer) -> None:
    server.route("/hook/c0/", Reply(200, delay=1.0))
    channel = hook(server.url + "/hook/{customer_id}/", concurrency=2, timeout=0.3)
    try:
        results = channel.send(make_messages(1, channel="webhook"))
        assert results[0].error == "unreachable: time-out after 0.3 s" and results[0].retryable
        later = channel.send(make_messages(3, channel="webhook", customer_id=lambda i: f"d{i}",
                                           idempotency_key=lambda i: f"later-{i}"))
    finally:
        channel.close()
    assert [r.status for r in later] == ["sent"] * 3  # a fresh connection afterwards


def test_a_closed_connection_is_opened_again(server: ProviderServer) -> None:
    server.default = lambda _r: Reply(200, headers={"Connection": "close"})
    channel = hook(server.url + "/hook", concurrency=2)
    try:
        results = channel.send(make_messages(7, channel="webhook"))
    finally:
        channel.close()
    assert [r.status for r in results] == ["sent"] * 7 and len(server.calls("/hook")) == 7


def claimed(store: Store, n: int, worker: str = "w") -> tuple[Outbox, list[Delivery], list[Message]]:
    seed(store, n, channels=["webhook"])
    Dispatcher(store, {"webhook": flaky()}, clock=FakeClock(T0), worker=worker).plan()
    outbox = Outbox(store, worker)
    got = outbox.claim_deliveries(T0, {"webhook": 100})
    return outbox, got, [Message(d.tenant_id, d.idempotency_key, d.customer_id, d.program, d.channel)
                         for d in got]


def test_the_batch_form_commits_ends_with_the_next_begins(store: Store) -> None:
    outbox, got, messages = claimed(store, 4)
    with AttemptJournal(outbox, got, lambda: T0, Retry(), lambda: 0.5, lanes=2) as journal:
        assert journal.begin_many(messages[:2]) == [True, True] and journal.commits == 1
        assert by_status(store) == {"sending": 2, "queued": 2}
        journal.end_many([(m, SendResult(m.idempotency_key, "sent")) for m in messages[:2]])
        assert by_status(store) == {"sending": 2, "queued": 2}  # queued, not committed yet
        assert journal.begin_many(messages[2:]) == [True, True] and journal.commits == 2
        assert by_status(store) == {"sent": 2, "sending": 2}
        journal.end_many([(messages[2], SendResult(messages[2].idempotency_key, "sent"))])
        journal.flush()
        journal.end_many([(messages[3], SendResult(messages[3].idempotency_key, "failed", error="x"))])
    assert by_status(store) == {"sent": 3, "dead": 1} and journal.commits == 4
    assert journal.peak_in_flight == 2 and journal._thread is None  # no committer thread
    assert [journal.state(d) for d in got] == ["recorded"] * 4


def test_a_message_another_worker_took_over_is_not_sent(store: Store, server: ProviderServer) -> None:
    outbox, got, messages = claimed(store, 3, worker="slow")
    other = Outbox(store, "other")
    assert len(other.claim_deliveries(T0 + timedelta(seconds=31), {"webhook": 10})) == 3
    channel = hook(server.url + "/hook", concurrency=2)
    try:
        with AttemptJournal(outbox, got, lambda: T0, Retry(), lambda: 0.5, lanes=2) as journal:
            results = channel.send(messages, journal=TimedJournal(journal, "webhook"))
    finally:
        channel.close()
    assert [r.error for r in results] == ["not attempted: another worker took it over"] * 3
    assert server.calls("/hook") == [] and journal.refused == {d.id for d in got}


class FailingOutbox(Outbox):
    """Its second ``begin_in`` fails (the store went away)."""

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.calls = 0

    def begin_in(self, tx: Any, ids: Sequence[int], now: datetime) -> set[int]:
        self.calls += 1
        if self.calls == 2:
            raise OSError("the store went away")
        return super().begin_in(tx, ids, now)


def test_a_failing_commit_stops_the_loop_and_leaves_the_begun_open(store: Store,
                                                                     server: ProviderServer) -> None:
    _, got, messages = claimed(store, 6)
    outbox = FailingOutbox(store, "w")
    channel = hook(server.url + "/hook", concurrency=2)
    try:
        with AttemptJournal(outbox, got, lambda: T0, Retry(), lambda: 0.5, lanes=2) as journal, \
                pytest.raises(OSError, match="went away"):
            channel.send(messages, journal=TimedJournal(journal, "webhook"))
    finally:
        channel.close()
    # the first round only: both its requests were written before the failing commit, but
    # the loop may stop before the second answer (the receiver records it in its own thread)
    deadline = time.monotonic() + 10
    while len(server.calls("/hook")) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(server.calls("/hook")) == 2
    assert [journal.state(d) for d in got] == ["open"] * 2 + ["unstarted"] * 4
    assert by_status(store) == {"sending": 2, "queued": 4}  # crash recovery's, as after a kill


def test_https_through_the_loop_keeps_alive_and_checks_the_certificate(tmp_path: Path) -> None:
    with tls_server(tmp_path, {"ok": True}) as server:
        channel = hook(server.url, concurrency=1)
        channel.client.tls = ssl.create_default_context(cafile=str(server.cafile))
        results = channel.send(make_messages(4, channel="webhook"))
        channel.close()
        assert [r.status for r in results] == ["sent"] * 4
        assert len(set(server.peers)) == 1  # one TLS connection for the four requests
        untrusted = hook(server.url, concurrency=1)
        failed = untrusted.send(make_messages(2, channel="webhook", idempotency_key=lambda i: f"u{i}"))
        untrusted.close()
        assert failed[0].error == "unreachable: SSLCertVerificationError" and failed[0].retryable
        assert failed[1].error == "not attempted: unreachable: SSLCertVerificationError"
