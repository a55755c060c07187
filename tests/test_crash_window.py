"""The crash window of the dispatcher: a claim is a lease, not an attempt; an
attempt is ``sending`` only while its message is at the provider (the attempt
journal, group-committed across the lanes); what a crash leaves in flight is
marked for good and can be resolved without SQL."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
from typer.testing import CliRunner

from ceap.channels.base import ChannelConfig, Message, SendResult
from ceap.channels.external import ExternalChannel, ExternalConfig
from ceap.cli import app
from ceap.delivery.dispatcher import Dispatcher
from ceap.delivery.held import ResolveError, resolve, store_totals
from ceap.delivery.journal import AttemptJournal
from ceap.delivery.outbox import Outbox, Retry
from ceap.model import CandidateQuery, utcnow
from ceap.store import Store, open_store
from ceap.testing.doubles import FakeClock
from tests.test_dispatcher import T0, FlakyChannel, FlakyConfig, flaky, seed


def rows(store: Store, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with store.tx() as tx:
        return [tuple(r) for r in tx.execute(sql, params).fetchall()]


def by_status(store: Store) -> dict[str, int]:
    return {s: int(n) for s, n in rows(store, "SELECT status, count(*) FROM deliveries GROUP BY status")}


def crash_in_flight(store: Store, clock: FakeClock, n: int, *, worker: str = "dead") -> list[int]:
    """Plan ``n`` candidates, claim them and begin them: a worker that dies with all of
    them at the provider. Returns the delivery ids."""
    seed(store, n)
    with store.tx() as tx:  # due now, whatever ``clock`` says
        tx.execute("UPDATE candidates SET created_at = ?, not_before = ?, expires_at = ?",
                   (tx.ts(clock()), tx.ts(clock()), tx.ts(clock() + timedelta(days=7))))
    dead = Dispatcher(store, {"email": flaky()}, clock=clock, worker=worker)
    dead.plan()
    claimed = dead.outbox.claim_deliveries(clock(), {"email": 100})
    assert dead.outbox.begin([d.id for d in claimed], clock()) == {d.id for d in claimed}
    return sorted(d.id for d in claimed)


# -- a claim is a lease ---------------------------------------------------------------


def test_a_claimed_attempt_is_leased_not_in_flight(store: Store) -> None:
    seed(store, 3)
    clock = FakeClock(T0)
    dead = Dispatcher(store, {"email": flaky()}, clock=clock, worker="dead")
    dead.plan()
    claimed = dead.outbox.claim_deliveries(clock(), {"email": 10})
    assert [(d.status, d.attempts) for d in claimed] == [("queued", 0)] * 3
    assert rows(store, "SELECT DISTINCT worker FROM deliveries") == [("dead",)]
    # ... the worker dies before sending. While its lease runs nobody takes them over:
    email = flaky()
    fresh = Dispatcher(store, {"email": email}, clock=clock, worker="fresh")
    clock.advance(seconds=10)
    assert fresh.outbox.claim_deliveries(clock(), {"email": 10}) == []
    # once it ran out they are simply claimed again: sent, never ambiguous, one attempt each
    clock.advance(seconds=30)
    stats = fresh.run()
    assert (stats.ambiguous, stats.requeued, stats.sent) == (0, 0, 3)
    assert [(d.status, d.attempts, d.ambiguous_at) for d in fresh.outbox.deliveries("default")] == \
        [("sent", 1, None)] * 3
    assert len(email.accepted) == 3
    assert rows(store, "SELECT count(*) FROM delivery_events") == [(0,)]


def test_begin_is_refused_once_another_worker_took_the_claim(store: Store) -> None:
    seed(store, 2)
    clock = FakeClock(T0)
    slow = Dispatcher(store, {"email": flaky()}, clock=clock, worker="slow")
    slow.plan()
    mine = [d.id for d in slow.outbox.claim_deliveries(clock(), {"email": 10})]
    clock.advance(seconds=31)  # its lease ran out before it got to them; another worker claims
    other = Outbox(store, "other")
    assert [d.id for d in other.claim_deliveries(clock(), {"email": 10})] == mine
    assert slow.outbox.begin(mine, clock()) == set()  # must not send them
    assert other.begin(mine, clock()) == set(mine)
    assert by_status(store) == {"sending": 2}
    assert rows(store, "SELECT DISTINCT attempts FROM deliveries") == [(1,)]


# -- the journal -------------------------------------------------------------------------


class GatedOutbox(Outbox):
    """Holds its first ``begin_in`` until ``gate`` is set (so other lanes queue up)."""

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.gate, self.entered, self.calls = threading.Event(), threading.Event(), 0

    def begin_in(self, tx: Any, ids: Sequence[int], now: datetime) -> set[int]:
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            assert self.gate.wait(30)
        return super().begin_in(tx, ids, now)


def test_the_journal_commits_the_lanes_that_wait_together(store: Store) -> None:
    seed(store, 4)
    clock = FakeClock(T0)
    planner = Dispatcher(store, {"email": flaky()}, clock=clock, worker="w")
    planner.plan()
    outbox = GatedOutbox(store, "w")
    claimed = outbox.claim_deliveries(clock(), {"email": 10})
    messages = [Message(d.tenant_id, d.idempotency_key, d.customer_id, d.program, d.channel)
                for d in claimed]
    granted: list[bool] = []
    with AttemptJournal(outbox, claimed, clock, Retry(), lambda: 0.5) as journal:
        lanes = [threading.Thread(target=lambda m=m: granted.append(journal.begin(m))) for m in messages]
        lanes[0].start()
        assert outbox.entered.wait(30)  # the first commit is under way ...
        for lane in lanes[1:]:
            lane.start()
        while journal.waiting() < 3:  # ... while the three other lanes queue behind it
            threading.Event().wait(0.001)
        outbox.gate.set()
        for lane in lanes:
            lane.join(30)
        assert granted == [True] * 4 and journal.commits == 2
        for m in messages:  # queued: the lanes go on; committed together
            journal.end(m, SendResult(m.idempotency_key, "sent"))
    assert journal.commits <= 6
    assert by_status(store) == {"sent": 4}
    assert journal.counts["sent"] == 4 and journal.peak_in_flight == 4


def test_the_journal_waits_for_every_lane_before_committing(store: Store) -> None:
    """Two lanes ask one after the other: one commit answers both (the committer waits for
    the second, up to ``linger``: an hour here, so committing early would show as two)."""
    seed(store, 2)
    clock = FakeClock(T0)
    Dispatcher(store, {"email": flaky()}, clock=clock, worker="w").plan()
    outbox = Outbox(store, "w")
    claimed = outbox.claim_deliveries(clock(), {"email": 10})
    messages = [Message(d.tenant_id, d.idempotency_key, d.customer_id, d.program, d.channel)
                for d in claimed]
    granted: list[bool] = []
    with AttemptJournal(outbox, claimed, clock, Retry(), lambda: 0.5, lanes=2, linger=3600) as journal:
        first = threading.Thread(target=lambda: granted.append(journal.begin(messages[0])))
        first.start()
        while journal.waiting() < 1 and journal.commits == 0:  # the first lane waits ...
            threading.Event().wait(0.001)
        assert journal.commits == 0 and by_status(store) == {"queued": 2}
        granted.append(journal.begin(messages[1]))  # ... until the second asks
        first.join(30)
        assert granted == [True, True] and journal.commits == 1
        assert by_status(store) == {"sending": 2}
        for m in messages:  # the last results: no lane is left to wait for
            journal.end(m, SendResult(m.idempotency_key, "sent"))
    assert by_status(store) == {"sent": 2} and journal.counts["sent"] == 2


class ProbeConfig(ExternalConfig):
    type: Literal["probe"] = "probe"
    concurrency: int = 4
    unreachable_first: bool = False


class ProbeChannel(ExternalChannel[ProbeConfig]):
    """At each call, reads the outbox: how many attempts are ``sending``, and whether the
    message's own delivery is one of them. ``hold`` (when set) keeps calls after the
    ``release_after``-th waiting at the provider."""

    config_model: ClassVar[type[ChannelConfig]] = ProbeConfig

    def __init__(self, config: ProbeConfig, context: Any = None, store: Store | None = None):
        super().__init__(config, context)
        self.store = store
        self.lock = threading.Lock()
        self.calls: list[str] = []
        self.sending_seen: list[int] = []
        self.own_state: list[tuple[str, int]] = []
        self.hold: threading.Event | None = None
        self.release_after = 0
        self.stuck = threading.Semaphore(0)

    def deliver_one(self, m: Message) -> SendResult:
        assert self.store is not None
        with self.lock:
            self.calls.append(m.idempotency_key)
            n = len(self.calls)
        [(sending,)] = rows(self.store, "SELECT count(*) FROM deliveries WHERE status = 'sending'")
        [(status, attempts)] = rows(self.store, "SELECT status, attempts FROM deliveries "
                                                "WHERE idempotency_key = ?", (m.idempotency_key,))
        with self.lock:
            self.sending_seen.append(int(sending))
            self.own_state.append((status, int(attempts)))
        if self.config.unreachable_first and n == 1:
            return SendResult(m.idempotency_key, "failed", error="unreachable: refused", retryable=True)
        if self.hold is not None and n > self.release_after:
            self.stuck.release()
            self.hold.wait(60)
            return SendResult(m.idempotency_key, "failed", error="the worker died", retryable=True)
        threading.Event().wait(0.001)  # a provider round trip, so that the lanes overlap
        return SendResult(m.idempotency_key, "sent", provider_id=f"p-{m.idempotency_key}")


def probe(store: Store, **kw: Any) -> ProbeChannel:
    return ProbeChannel(ProbeConfig(**kw), store=store)


def test_a_journaled_channel_has_at_most_its_lanes_in_flight(store: Store) -> None:
    seed(store, 120)
    channel = probe(store)
    stats = Dispatcher(store, {"email": channel}, clock=FakeClock(T0)).run()
    assert stats.sent == 120 and len(channel.calls) == 120
    # every message was durably "sending" (attempt counted) before the provider got it ...
    assert set(channel.own_state) == {("sending", 1)}
    # ... and never more than one per lane at once, though the lanes did overlap
    assert max(channel.sending_seen) <= 4
    assert max(channel.sending_seen) >= 2
    assert by_status(store) == {"sent": 120}


def test_messages_never_handed_to_the_provider_count_no_attempt(store: Store) -> None:
    seed(store, 10)
    channel = probe(store, concurrency=1, unreachable_first=True)
    clock = FakeClock(T0)
    stats = Dispatcher(store, {"email": channel}, clock=clock, retry=Retry(base=10, cap=10)).run()
    assert len(channel.calls) == 1 and stats.retry == 10  # the provider is down: one call only
    assert (stats.leased, stats.attempted) == (10, 1)
    attempts = sorted(a for (a,) in rows(store, "SELECT attempts FROM deliveries WHERE status = 'queued'"))
    assert attempts == [0] * 9 + [1]
    assert rows(store, "SELECT count(*) FROM deliveries WHERE lease_until IS NOT NULL") == [(0,)]


def test_a_plain_channel_gets_at_most_in_flight_messages_per_call(store: Store) -> None:
    seed(store, 20)
    seen: list[tuple[int, int]] = []

    class Counting(FlakyChannel):
        def send(self, messages: Sequence[Message]) -> list[SendResult]:
            (n,) = rows(store, "SELECT count(*) FROM deliveries WHERE status = 'sending'")[0]
            seen.append((len(messages), int(n)))
            return super().send(messages)

    stats = Dispatcher(store, {"email": Counting(FlakyConfig())}, clock=FakeClock(T0)).run()
    assert stats.sent == 20
    assert seen == [(8, 8), (8, 8), (4, 4)]  # FlakyChannel keeps Channel.in_flight (8)


def test_a_crash_leaves_only_the_messages_at_the_provider_in_flight(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ceap.db'}"
    store = open_store(url)
    seed(store, 60)
    clock = FakeClock(T0)
    channel = probe(store)
    channel.hold, channel.release_after = threading.Event(), 20
    worker = threading.Thread(target=Dispatcher(store, {"email": channel}, clock=clock).run)
    worker.start()
    try:
        for _ in range(4):  # the four lanes are at the provider, waiting for its answer ...
            assert channel.stuck.acquire(timeout=60)
        with channel.lock:
            stuck = set(channel.calls[20:])
            delivered = set(channel.calls[:20])
        # ... when the process dies: the store as it is on disk now
        crashed = sqlite3.connect(tmp_path / "crashed.db")
        with sqlite3.connect(tmp_path / "ceap.db") as live:
            live.backup(crashed)
        crashed.close()
    finally:
        channel.hold.set()
        worker.join(60)
        store.close()
    after = open_store(f"sqlite:///{tmp_path / 'crashed.db'}")
    assert len(stuck) == 4 and len(delivered) == 20
    assert by_status(after) == {"sent": 20, "sending": 4, "queued": 36}
    assert {k for (k,) in rows(after, "SELECT idempotency_key FROM deliveries WHERE status = 'sending'")} \
        == stuck
    clock.advance(seconds=31)
    email = flaky()
    stats = Dispatcher(after, {"email": email}, clock=clock).run()
    assert (stats.ambiguous, stats.sent) == (4, 36)  # only the four at the provider are held
    held = Outbox(after, "cli").deliveries("default", ambiguous=True)
    assert {d.idempotency_key for d in held} == stuck
    assert {(d.status, d.ambiguity) for d in held} == {("ambiguous", "held")}
    assert not stuck & {m.idempotency_key for m in email.accepted}
    assert not delivered & {m.idempotency_key for m in email.accepted}
    after.close()


# -- the marks and the resolution ----------------------------------------------------------


def test_store_totals_count_held_and_possible_duplicates(store: Store) -> None:
    clock = FakeClock(T0)
    crash_in_flight(store, clock, 3)
    clock.advance(seconds=31)
    resend = FlakyChannel(FlakyConfig(resend_in_flight=True))
    Dispatcher(store, {"email": resend}, clock=clock).run()
    totals = store_totals(store)
    assert (totals.held, totals.possible_duplicates, totals.queued, totals.dead) == (0, 3, 0, 0)
    # the marks survived the later "sent"
    marked = Outbox(store, "cli").deliveries("default", ambiguous=True)
    assert {(d.status, d.ambiguity) for d in marked} == {("sent", "resent")} and len(marked) == 3


def test_resend_requeues_a_held_delivery_with_its_key(store: Store) -> None:
    clock = FakeClock(T0)
    ids = crash_in_flight(store, clock, 2)
    clock.advance(seconds=31)
    d = Dispatcher(store, {"email": flaky()}, clock=clock)
    assert d.run().ambiguous == 2
    assert store_totals(store).held == 2
    done = resolve(store, "default", "resend", "not in the relay's log", clock(), ids=[ids[0]])
    assert [x.id for x in done] == [ids[0]]
    email = flaky()
    assert Dispatcher(store, {"email": email}, clock=clock).run().sent == 1
    [(key,)] = rows(store, "SELECT idempotency_key FROM deliveries WHERE id = ?", (ids[0],))
    assert [m.idempotency_key for m in email.accepted] == [key]
    first, second = sorted(Outbox(store, "cli").deliveries("default", ambiguous=True), key=lambda x: x.id)
    assert (first.status, first.ambiguity, first.attempts) == ("sent", "resent", 2)
    assert (second.status, second.ambiguity) == ("ambiguous", "held")
    assert rows(store, "SELECT status, detail FROM delivery_events WHERE delivery_id = ? ORDER BY id",
                (ids[0],)) == [("ambiguous", "in flight at a crash; not resent"),
                               ("resolved", "resend: not in the relay's log")]
    totals = store_totals(store)
    assert (totals.held, totals.possible_duplicates) == (1, 1)


def test_mark_sent_and_drop_end_held_deliveries_without_sending(store: Store) -> None:
    clock = FakeClock(T0)
    ids = crash_in_flight(store, clock, 2)
    clock.advance(seconds=31)
    Dispatcher(store, {"email": flaky()}, clock=clock).run()
    resolve(store, "default", "mark-sent", "the relay has it", clock(), ids=[ids[0]])
    resolve(store, "default", "drop", "sent by hand", clock(), ids=[ids[1]])
    email = flaky()
    assert Dispatcher(store, {"email": email}, clock=clock).run().attempted == 0
    assert email.accepted == []
    got = {d.id: (d.status, d.ambiguity) for d in Outbox(store, "cli").deliveries("default")}
    assert got == {ids[0]: ("sent", "marked_sent"), ids[1]: ("cancelled", "dropped")}
    candidates = {c.id: c.status for c in store.candidates(CandidateQuery(include_expired=True, limit=10))}
    of = dict(rows(store, "SELECT id, candidate_id FROM deliveries"))
    assert candidates == {of[ids[0]]: "sent", of[ids[1]]: "cancelled"}
    [(reason,)] = rows(store, "SELECT status_reason FROM candidates WHERE id = ?", (of[ids[1]],))
    assert reason == "delivery dropped by hand after a crash: sent by hand"
    totals = store_totals(store)
    assert (totals.held, totals.possible_duplicates) == (0, 0)


def test_resolving_what_is_not_held_changes_nothing(store: Store) -> None:
    clock = FakeClock(T0)
    ids = crash_in_flight(store, clock, 2)
    clock.advance(seconds=31)
    Dispatcher(store, {"email": flaky()}, clock=clock).run()
    resolve(store, "default", "mark-sent", "ok", clock(), ids=[ids[0]])
    with pytest.raises(ResolveError, match=rf"delivery {ids[0]} is sent, not held .*; delivery 999: "
                                           "not found for tenant 'default': nothing was changed"):
        resolve(store, "default", "drop", "x", clock(), ids=[ids[1], ids[0], 999])
    with pytest.raises(ResolveError, match="reason is required"):
        resolve(store, "default", "drop", "  ", clock(), ids=[ids[1]])
    with pytest.raises(ResolveError, match="not found for tenant 'other'"):
        resolve(store, "other", "drop", "x", clock(), ids=[ids[1]])
    assert by_status(store) == {"sent": 1, "ambiguous": 1}


def test_old_databases_get_the_crash_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the deliveries table as the previous version made it
        db.execute("CREATE TABLE deliveries (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, "
                   "candidate_id INTEGER NOT NULL, program TEXT NOT NULL, customer_id TEXT NOT NULL, "
                   "channel TEXT NOT NULL, step INTEGER NOT NULL, remaining TEXT NOT NULL DEFAULT '[]', "
                   "idempotency_key TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL "
                   "DEFAULT 0, next_attempt_at TEXT NOT NULL, lease_until TEXT, worker TEXT, "
                   "last_error TEXT, policy TEXT, provider_id TEXT, shadow INTEGER NOT NULL DEFAULT 0, "
                   "category TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, "
                   "sent_at TEXT, UNIQUE (tenant_id, idempotency_key))")
    store = open_store(f"sqlite:///{path}")
    with sqlite3.connect(path) as db:
        columns = {r[1] for r in db.execute("PRAGMA table_info(deliveries)")}
        indexes = {r[1] for r in db.execute("PRAGMA index_list(deliveries)")}
    assert {"ambiguous_at", "ambiguity"} <= columns and "deliveries_ambiguous" in indexes
    store.close()


# -- the commands ------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CEAP_STORE", raising=False)
    (tmp_path / "programs").mkdir()
    return tmp_path


def test_dispatch_reports_the_store_totals_and_the_commands_resolve(project: Path) -> None:
    runner = CliRunner()
    store = open_store(f"sqlite:///{project / '.ceap' / 'ceap.db'}")
    now = utcnow()
    # a worker that died with three attempts at the provider (its lease already ran out)
    seed_now = FakeClock(now)
    ids = crash_in_flight(store, seed_now, 3)
    with store.tx() as tx:
        tx.execute("UPDATE deliveries SET lease_until = ?", (tx.ts(now - timedelta(seconds=1)),))
    store.close()
    result = runner.invoke(app, ["dispatch"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()  # piped: one `outcome<TAB>count` line each
    assert "ambiguous\t3" in lines and "store_held\t3" in lines  # this run's and the store's
    assert "3 delivery(ies) are held as ambiguous" in result.stderr
    listed = runner.invoke(app, ["deliveries", "--ambiguous", "--json"])
    assert listed.exit_code == 0
    marks = sorted((d["id"], d["ambiguity"]) for d in json.loads(listed.stdout))
    assert marks == [(i, "held") for i in sorted(ids)]

    wrong = runner.invoke(app, ["deliveries", "mark-sent", str(ids[0]), "999", "--reason", "x"])
    assert wrong.exit_code == 2 and "delivery 999: not found" in wrong.stderr
    neither = runner.invoke(app, ["deliveries", "drop", "--reason", "x"])
    assert neither.exit_code == 2 and "give delivery ids, --all-ambiguous or --all-dead" in neither.stderr
    assert runner.invoke(app, ["deliveries", "drop", str(ids[0])]).exit_code == 2  # --reason required

    ok = runner.invoke(app, ["deliveries", "mark-sent", str(ids[0]), "--reason", "in the relay's log"])
    assert ok.exit_code == 0 and f"1 held delivery(ies) recorded as sent: {ids[0]}" in ok.stdout
    rest = runner.invoke(app, ["deliveries", "resend", "--all-ambiguous", "--channel", "email",
                               "--reason", "not in the log"])
    assert rest.exit_code == 0 and f"2 held delivery(ies) requeued for sending: {ids[1]}, {ids[2]}" \
        in rest.stdout
    store = open_store(f"sqlite:///{project / '.ceap' / 'ceap.db'}")
    assert by_status(store) == {"sent": 1, "queued": 2}
    totals = store_totals(store)
    assert (totals.held, totals.queued) == (0, 2)
    store.close()
    again = runner.invoke(app, ["deliveries", "--ambiguous", "--status", "queued"])
    rows = again.stdout.splitlines()[1:]  # piped: a header, then one line per delivery
    assert len(rows) == 2 and all(r.split("\t")[-1].startswith("resent ") for r in rows)


def test_concurrent_dispatchers_with_journaled_channels_send_each_once(pg_url: str) -> None:
    setup = open_store(pg_url)
    seed(setup, 300)
    stores = [open_store(pg_url), open_store(pg_url)]
    channels = [probe(stores[0]), probe(stores[1])]
    clock = FakeClock(T0)
    dispatchers = [Dispatcher(s, {"email": ch}, batch_size=20, clock=clock)
                   for s, ch in zip(stores, channels, strict=True)]
    threads = [threading.Thread(target=d.run) for d in dispatchers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    keys = channels[0].calls + channels[1].calls
    assert len(keys) == 300 and len(set(keys)) == 300
    assert channels[0].calls and channels[1].calls  # both took a share
    assert by_status(setup) == {"sent": 300}
    assert max(channels[0].sending_seen + channels[1].sending_seen) <= 2 * 4
    for s in (setup, *stores):
        s.close()


# -- SMTP: the point of no return is DATA ---------------------------------------------------------


class StubJournal:
    """A SendJournal that records when it was asked, and what the server had seen by then."""

    def __init__(self, mailbox: Any, refuse: set[str] = frozenset()):  # type: ignore[assignment]
        self.mailbox, self.refuse = mailbox, refuse
        self.begun: list[tuple[str, list[str], int]] = []  # key, recipients seen, messages received
        self.ended: list[tuple[str, str]] = []

    def begin(self, message: Message) -> bool:
        self.begun.append((message.idempotency_key, list(self.mailbox.rcpts),
                           len(self.mailbox.received)))
        return message.idempotency_key not in self.refuse

    def begin_soon(self, message: Message) -> Any:
        return lambda: self.begin(message)  # the channel waits for it at its point of no return

    def end(self, message: Message, result: SendResult) -> None:
        self.ended.append((message.idempotency_key, result.status))


def smtp_pair(pipelining: bool = False, **handler: Any) -> Any:
    from tests.test_channel_email import Mailbox, PipeliningMailbox, Smtpd

    class Recording(PipeliningMailbox if pipelining else Mailbox):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.rcpts: list[str] = []

        async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                              options: list[str]) -> str:
            answer = await super().handle_RCPT(server, session, envelope, address, options)
            self.rcpts.append(address)
            return answer

    return Smtpd(Recording(), **handler)


@pytest.mark.parametrize("pipelining", [False, True], ids=["plain", "pipelining"])
def test_smtp_marks_the_attempt_after_the_envelope_and_before_data(pipelining: bool) -> None:
    """Also with PIPELINING (MAIL FROM, RCPT TO and DATA in one write): the mark is waited
    for after the replies to the envelope and before the body."""
    from ceap.channels.email_smtp import SmtpChannel
    from tests.test_channel_email import msg

    server = smtp_pair(pipelining)
    try:
        channel = SmtpChannel.from_dict(server.config(concurrency=1))
        batch = [msg(idempotency_key=f"k{i}", to=to) for i, to in
                 enumerate(["a@example.com", "b@example.com", "rcpt450@example.com", "c@example.com"], 1)]
        journal = StubJournal(server.handler, refuse={"k2"})
        results = channel.send(batch, journal=journal)
        channel.close()
    finally:
        server.stop()
    # each message was marked (the channel waited for it) once the server had the recipient,
    # and before it had the message
    assert journal.begun == [("k1", ["a@example.com"], 0),
                             ("k2", ["a@example.com", "b@example.com"], 1),
                             ("k3", ["a@example.com", "b@example.com", "rcpt450@example.com"], 1),
                             ("k4", ["a@example.com", "b@example.com", "rcpt450@example.com",
                                     "c@example.com"], 1)]
    # k2 was refused: no body (plain: no DATA, RSET; pipelining: the connection closed
    # after DATA's 354), and k4 was delivered
    assert [r.status for r in results] == ["sent", "failed", "failed", "sent"]
    assert results[1].error == "not attempted: another worker took it over"
    assert [rcpt for _, rcpt, _ in server.handler.received] == [["a@example.com"], ["c@example.com"]]
    # k3 failed at RCPT: its mark (asked for when the envelope started) is settled, its
    # attempt recorded
    assert journal.ended == [("k1", "sent"), ("k3", "failed"), ("k4", "sent")]


def test_a_recipient_refused_in_the_envelope_counts_an_attempt(store: Store) -> None:
    from ceap.channels.email_smtp import SmtpChannel

    server = smtp_pair()
    try:
        seed(store, 1)
        with store.tx() as tx:
            tx.execute("UPDATE profiles SET email = 'rcpt450@example.com'")
        channel = SmtpChannel.from_dict(server.config())
        clock = FakeClock(T0)
        stats = Dispatcher(store, {"email": channel}, clock=clock, retry=Retry(base=10, cap=10)).run()
        channel.close()
    finally:
        server.stop()
    assert (stats.retry, stats.attempted) == (1, 1)
    [d] = Outbox(store, "cli").deliveries("default")
    assert (d.status, d.attempts, d.last_error) == ("queued", 1, "SMTP 450: 4.2.1 mailbox busy, try later")


def test_smtputf8_addresses_need_the_servers_support() -> None:
    from ceap.channels.email_smtp import SmtpChannel
    from tests.test_channel_email import msg

    for enabled in (False, True):
        server = smtp_pair(enable_SMTPUTF8=enabled)
        try:
            channel = SmtpChannel.from_dict(server.config())
            [result] = channel.send([msg(to="jörg@bücher.example")])
            channel.close()
        finally:
            server.stop()
        if enabled:
            assert result.status == "sent" and [r for _, r, _ in server.handler.received] == \
                [["jörg@bücher.example"]]
        else:
            assert (result.status, result.retryable) == ("failed", False)
            assert result.error and result.error.startswith("SMTPNotSupportedError")


def test_an_unreachable_smtp_server_counts_one_attempt_and_marks_nothing(store: Store) -> None:
    from ceap.channels.email_smtp import SmtpChannel
    from tests.test_channel_email import free_port

    seed(store, 3)
    channel = SmtpChannel.from_dict({"type": "smtp", "host": "127.0.0.1", "port": free_port(),
                                     "security": "none", "from_address": "news@acme.example",
                                     "concurrency": 1})
    stats = Dispatcher(store, {"email": channel}, clock=FakeClock(T0), retry=Retry(base=10, cap=10)).run()
    channel.close()
    # the connection failed before the envelope: never sending, but the try counts; the other
    # two were not tried (the server is down) and count nothing
    assert (stats.retry, stats.attempted) == (3, 0)
    assert sorted(a for (a,) in rows(store, "SELECT attempts FROM deliveries")) == [0, 0, 1]
