"""The dispatcher and its outbox: sends, retries, dead letters, fallbacks,
the circuit breaker, crash recovery, shadow mode and concurrent workers."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

import pyarrow as pa

from ceap.channels.base import Channel, ChannelConfig, Message, SendResult
from ceap.channels.inapp import InAppChannel
from ceap.delivery.dispatcher import Dispatcher
from ceap.delivery.outbox import Retry
from ceap.delivery.profiles import upsert_profiles
from ceap.model import CandidateQuery
from ceap.plugin import PluginContext
from ceap.store import Store, open_store
from ceap.testing.doubles import FakeClock, make_candidates

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


class FlakyConfig(ChannelConfig):
    type: Literal["flaky"] = "flaky"
    fail_first: int = 0          # retryable failures before it works
    fail_forever: bool = False
    permanent: bool = False      # a non-retryable refusal


class FlakyChannel(Channel[FlakyConfig]):
    """Records what it accepts; fails as configured. Needs an e-mail address."""

    config_model: ClassVar[type[ChannelConfig]] = FlakyConfig
    address: ClassVar[str | None] = "email"

    def __init__(self, config: FlakyConfig, context: Any = None):
        super().__init__(config, context)
        self.calls = 0
        self.accepted: list[Message] = []

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        out = []
        for m in messages:
            self.calls += 1
            if self.config.permanent:
                out.append(SendResult(m.idempotency_key, "failed", error="invalid address"))
            elif self.config.fail_forever or self.calls <= self.config.fail_first:
                out.append(SendResult(m.idempotency_key, "failed", error="503 unavailable",
                                      retryable=True))
            else:
                self.accepted.append(m)
                out.append(SendResult(m.idempotency_key, "sent", provider_id=f"p{self.calls}"))
        return out


def seed(store: Store, n: int = 3, channels: list[str] | None = None, **kw: Any) -> None:
    table = make_candidates(n, now=T0, channels=channels or ["email"],
                            customer_id=lambda i: f"c{i}", **kw)
    from ceap.model import RunRecord

    store.write_run(RunRecord("r1", "default", "conformance", "succeeded", T0), table)
    upsert_profiles(store, pa.table({"customer_id": [f"c{i}" for i in range(n)],
                                     "email": [f"c{i}@example.com" for i in range(n)]}), "default")


def flaky(**kw: Any) -> FlakyChannel:
    return FlakyChannel(FlakyConfig(**kw))


def statuses(store: Store) -> set[str]:
    return {c.status for c in store.candidates(CandidateQuery(limit=1000, include_expired=True))}


def test_sends_each_candidate_once(store: Store) -> None:
    seed(store, 3)
    email = flaky()
    clock = FakeClock(T0)
    stats = Dispatcher(store, {"email": email}, clock=clock).run()
    assert (stats.claimed, stats.planned, stats.sent) == (3, 3, 3)
    assert sorted(m.to for m in email.accepted) == [f"c{i}@example.com" for i in range(3)]
    assert statuses(store) == {"sent"}
    again = Dispatcher(store, {"email": email}, clock=clock).run()
    assert (again.claimed, again.attempted) == (0, 0)
    assert len(email.accepted) == 3
    keys = {m.idempotency_key for m in email.accepted}
    assert keys == {f"default:dedup-{i}:email" for i in range(3)}


def test_retries_with_backoff_then_succeeds(store: Store) -> None:
    seed(store, 1)
    email = flaky(fail_first=2)
    clock = FakeClock(T0)
    d = Dispatcher(store, {"email": email}, clock=clock, retry=Retry(base=10, cap=100))
    first = d.run()
    assert (first.retry, first.sent) == (1, 0)
    clock.advance(seconds=4)
    assert d.run().attempted == 0          # the backoff (5 to 10 s) has not passed
    clock.advance(seconds=7)
    assert d.run().retry == 1              # second failure: next wait 10 to 20 s
    clock.advance(seconds=21)
    assert d.run().sent == 1
    [delivery] = d.outbox.deliveries("default")
    assert (delivery.status, delivery.attempts) == ("sent", 3)


def test_gives_up_into_a_dead_letter_with_the_reason(store: Store) -> None:
    seed(store, 1)
    clock = FakeClock(T0)
    d = Dispatcher(store, {"email": flaky(fail_forever=True)}, clock=clock,
                   retry=Retry(base=1, cap=1, max_attempts=3))
    for _ in range(5):
        d.run()
        clock.advance(seconds=2)
    [delivery] = d.outbox.deliveries("default")
    assert delivery.status == "dead" and delivery.attempts == 3
    assert delivery.last_error == "gave up after 3 attempts: 503 unavailable"
    [c] = store.candidates(CandidateQuery(include_expired=True))
    assert c.status == "failed"


def test_permanent_failure_falls_back_to_the_next_channel(store: Store) -> None:
    seed(store, 2, channels=["email", "inapp"])
    inapp = InAppChannel.from_dict({"type": "inapp"}, PluginContext(store=store))
    stats = Dispatcher(store, {"email": flaky(permanent=True), "inapp": inapp}, clock=FakeClock(T0)).run()
    assert (stats.fallback, stats.sent) == (2, 2)
    assert [i.title for i in store.inbox_list("default", "c0")] == ["Conformance"]
    assert statuses(store) == {"sent"}


def test_missing_address_skips_the_channel(store: Store) -> None:
    seed(store, 1, channels=["email", "inapp"])
    upsert_profiles(store, pa.table({"customer_id": ["c0"], "email": [None]}), "default")
    inapp = InAppChannel.from_dict({"type": "inapp"}, PluginContext(store=store))
    email = flaky()
    Dispatcher(store, {"email": email, "inapp": inapp}, clock=FakeClock(T0)).run()
    assert email.accepted == [] and len(store.inbox_list("default", "c0")) == 1


def test_no_reachable_channel_is_suppressed_with_the_policy(store: Store) -> None:
    seed(store, 1, channels=["email"])
    upsert_profiles(store, pa.table({"customer_id": ["c0"], "email": [None]}), "default")
    stats = Dispatcher(store, {"email": flaky()}, clock=FakeClock(T0)).run()
    assert stats.suppressed == 1
    [c] = store.candidates(CandidateQuery(include_expired=True))
    assert (c.status, c_reason(store)) == ("suppressed", "no_address:email")


def c_reason(store: Store) -> str:
    with store.tx() as tx:
        return tx.execute("SELECT status_reason FROM candidates").fetchone()[0]


def test_breaker_opens_and_traffic_moves_to_the_fallback(store: Store) -> None:
    seed(store, 6, channels=["email", "inapp"])
    inapp = InAppChannel.from_dict({"type": "inapp"}, PluginContext(store=store))
    email = FlakyChannel(FlakyConfig(fail_forever=True, breaker_failures=3, breaker_cooldown=60))
    clock = FakeClock(T0)
    d = Dispatcher(store, {"email": email, "inapp": inapp}, clock=clock, batch_size=3,
                   retry=Retry(base=1, cap=1, max_attempts=8))
    for _ in range(4):
        d.run()
        clock.advance(seconds=2)
    assert d.breakers["email"].state == "open"
    assert email.calls < 6 * 8          # it stopped hammering the failing provider
    assert statuses(store) == {"sent"}  # everyone got the in-app message instead
    assert all(len(store.inbox_list("default", f"c{i}")) == 1 for i in range(6))


def test_all_mode_sends_on_every_channel(store: Store) -> None:
    from ceap.spec import parse_program

    program = parse_program({"name": "conformance", "source": {"type": "csv", "path": "x"},
                             "action": {"type": "alert", "channels": ["email", "inapp"],
                                        "deliver": "all"}})
    seed(store, 1, channels=["email", "inapp"])
    inapp = InAppChannel.from_dict({"type": "inapp"}, PluginContext(store=store))
    email = flaky()
    Dispatcher(store, {"email": email, "inapp": inapp}, programs={"conformance": program},
               clock=FakeClock(T0)).run()
    assert len(email.accepted) == 1 and len(store.inbox_list("default", "c0")) == 1


def test_shadow_candidates_are_recorded_not_sent(store: Store) -> None:
    seed(store, 2, status="shadow")
    email = flaky()
    stats = Dispatcher(store, {"email": email}, clock=FakeClock(T0)).run()
    assert stats.shadow == 2 and email.accepted == []
    assert statuses(store) == {"shadowed"}
    with store.tx() as tx:
        details = [r[0] for r in tx.execute("SELECT detail FROM delivery_events").fetchall()]
    assert sorted(details) == [f"to=c{i}@example.com title='Conformance'" for i in range(2)]


def test_expired_candidates_are_not_sent(store: Store) -> None:
    seed(store, 1)
    clock = FakeClock(T0 + timedelta(days=8))
    email = flaky()
    stats = Dispatcher(store, {"email": email}, clock=clock).run()
    assert stats.expired == 1 and email.accepted == [] and statuses(store) == {"expired"}


def test_crash_in_flight_is_ambiguous_unless_the_provider_deduplicates(store: Store) -> None:
    seed(store, 2, channels=["email"])
    with store.tx() as tx:  # candidate 2 goes to the in-app inbox instead
        tx.execute("UPDATE candidates SET channels = ? WHERE customer_id = 'c1'",
                   ('["inapp"]',))
    inapp = InAppChannel.from_dict({"type": "inapp"}, PluginContext(store=store))
    clock = FakeClock(T0)
    crashed = Dispatcher(store, {"email": flaky(), "inapp": inapp}, clock=clock,
                         lease=timedelta(seconds=30))
    crashed.plan()
    in_flight = crashed.outbox.claim_deliveries(clock(), {"email": 10, "inapp": 10})
    assert crashed.outbox.begin([d.id for d in in_flight], clock()) == {d.id for d in in_flight}
    assert {d.status for d in crashed.outbox.deliveries("default")} == {"sending"}
    assert len(in_flight) == 2  # ... and the worker dies here, with both at their providers
    clock.advance(seconds=10)
    email = flaky()
    fresh = Dispatcher(store, {"email": email, "inapp": inapp}, clock=clock)
    assert fresh.run().sent == 0      # leases still running: nobody takes them over
    clock.advance(seconds=30)
    stats = fresh.run()
    assert (stats.ambiguous, stats.requeued, stats.sent) == (1, 1, 1)
    by_channel = {d.channel: (d.status, d.ambiguity) for d in fresh.outbox.deliveries("default")}
    assert by_channel == {"email": ("ambiguous", "held"), "inapp": ("delivered", "deduplicated")}
    assert {d.ambiguous_at for d in fresh.outbox.deliveries("default", ambiguous=True)} == {clock()}
    assert email.accepted == []       # never silently resent
    assert len(store.inbox_list("default", "c1")) == 1


def test_opt_in_resend_after_a_crash(store: Store) -> None:
    seed(store, 1)
    clock = FakeClock(T0)
    crashed = Dispatcher(store, {"email": flaky()}, clock=clock)
    crashed.plan()
    claimed = crashed.outbox.claim_deliveries(clock(), {"email": 10})
    crashed.outbox.begin([d.id for d in claimed], clock())
    clock.advance(seconds=60)
    email = FlakyChannel(FlakyConfig(resend_in_flight=True))
    fresh = Dispatcher(store, {"email": email}, clock=clock)
    stats = fresh.run()
    assert (stats.requeued, stats.sent) == (1, 1) and len(email.accepted) == 1
    with store.tx() as tx:
        events = tx.execute("SELECT status, detail FROM delivery_events").fetchall()
    assert events == [("ambiguous", "in flight at a crash; resent")]
    # sent now, and still listed as a possible duplicate
    [d] = fresh.outbox.deliveries("default", ambiguous=True)
    assert (d.status, d.ambiguity, d.attempts) == ("sent", "resent", 2)
    assert fresh.outbox.deliveries("default", status="ambiguous") == []


def test_concurrent_dispatchers_send_each_candidate_once(pg_url: str) -> None:
    setup = open_store(pg_url)
    seed(setup, 300)
    email_a, email_b = flaky(), flaky()
    stores = [open_store(pg_url), open_store(pg_url)]
    clock = FakeClock(T0)  # the candidates' own time, whatever today's date (they expire at T0 + 7 d)
    dispatchers = [Dispatcher(stores[0], {"email": email_a}, batch_size=20, clock=clock),
                   Dispatcher(stores[1], {"email": email_b}, batch_size=20, clock=clock)]
    threads = [threading.Thread(target=d.run) for d in dispatchers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    keys = [m.idempotency_key for m in email_a.accepted + email_b.accepted]
    assert len(keys) == 300 and len(set(keys)) == 300
    assert email_a.accepted and email_b.accepted  # both took a share
    assert statuses(setup) == {"sent"}


def test_channel_max_attempts_overrides_the_dispatcher(store: Store) -> None:
    seed(store, 1)
    clock = FakeClock(T0)
    email = FlakyChannel(FlakyConfig(fail_forever=True, max_attempts=2))
    d = Dispatcher(store, {"email": email}, clock=clock, retry=Retry(base=1, cap=1, max_attempts=8))
    for _ in range(4):
        d.run()
        clock.advance(seconds=2)
    [delivery] = d.outbox.deliveries("default")
    assert (delivery.status, delivery.attempts) == ("dead", 2)


def test_a_retry_never_goes_out_after_the_candidate_expired(store: Store) -> None:
    seed(store, 1)
    clock = FakeClock(T0)
    email = flaky(fail_first=1)
    d = Dispatcher(store, {"email": email}, clock=clock, retry=Retry(base=3600, cap=3600))
    d.run()                                   # first attempt fails; the retry is an hour+ away
    clock.advance(days=8)                     # ... by then the candidate (7-day expiry) is gone
    d.run()
    [delivery] = d.outbox.deliveries("default")
    assert delivery.status == "expired" and email.accepted == []


def test_sweep_keeps_candidates_with_deliveries_in_flight(store: Store) -> None:
    seed(store, 1)
    clock = FakeClock(T0)
    d = Dispatcher(store, {"email": flaky(fail_first=1)}, clock=clock, retry=Retry(base=10, cap=10))
    d.run()                                   # one retry queued
    assert store.sweep_expired(T0 + timedelta(days=30)) == 0
    clock.advance(seconds=20)
    d.run()
    assert store.sweep_expired(T0 + timedelta(days=30)) == 1


def test_loading_profiles_without_a_column_keeps_its_values(store: Store) -> None:
    from ceap.delivery.profiles import load_profiles

    upsert_profiles(store, pa.table({"customer_id": ["c0"], "email": ["a@x.example"],
                                     "phone": ["+1555"]}), "default")
    upsert_profiles(store, pa.table({"customer_id": ["c0"], "email": ["b@x.example"]}), "default")
    profile = load_profiles(store, [("default", "c0")])[("default", "c0")]
    assert (profile.email, profile.phone) == ("b@x.example", "+1555")


def test_the_payload_may_name_the_address(store: Store) -> None:
    seed(store, 1, payload={"to_email": "before-the-change@example.com"})
    email = flaky()
    Dispatcher(store, {"email": email}, clock=FakeClock(T0)).run()
    assert [m.to for m in email.accepted] == ["before-the-change@example.com"]
