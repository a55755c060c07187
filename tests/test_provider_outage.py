"""Provider outages against a real local HTTP provider (``tests/provider_server.py``).

The dispatcher runs on a fake clock (``Dispatcher(clock=...)``), which times
the retry schedule and the circuit breaker's cool-down alike; the provider is
a real HTTP server on 127.0.0.1 reached by the real webhook channel.

- An endpoint answers 503 to its first N calls, then recovers: every message
  ends sent, exactly once; each retry waited at least its backoff; once the
  breaker opened, the failing provider saw one probe per cool-down, not a
  retry storm; the provider saw N + M calls in all.
- An endpoint that keeps timing out: the first time-out stops the rest of the
  batch, the breaker opens, and the queued attempts move to the fallback
  channel (in-app); the provider saw at most ``concurrency`` calls.
"""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from ceap.channels.inapp import InAppChannel
from ceap.channels.webhook import WebhookChannel
from ceap.delivery.dispatcher import Dispatcher
from ceap.delivery.outbox import Retry
from ceap.model import RunRecord
from ceap.plugin import PluginContext
from ceap.store import Store
from ceap.testing.doubles import FakeClock, make_candidates
from tests.provider_server import ProviderServer, Recorded, Reply, serve

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ProviderServer]:
    monkeypatch.setenv("HOOK_SECRET", "whsec_" + "c2VjcmV0LXNpZ25pbmcta2V5LTMyLWJ5dGVzLWxvbmch")
    yield from serve()


def hook(server: ProviderServer, path: str, **kw: Any) -> WebhookChannel:
    return WebhookChannel.from_dict({"type": "webhook", "url": server.url + path, "secret_env": "HOOK_SECRET",
                                     "allow_private": True, "timeout": 2.0, **kw})


def seed(store: Store, n: int, channels: list[str]) -> None:
    store.write_run(RunRecord("r1", "default", "conformance", "succeeded", T0),
                    make_candidates(n, now=T0, channels=channels, customer_id=lambda i: f"c{i}"))


def rows(store: Store, sql: str) -> list[tuple[Any, ...]]:
    with store.tx() as tx:
        return [tuple(r) for r in tx.execute(sql).fetchall()]


def test_503s_then_recovery_every_message_sent_once_with_backoff(store: Store,
                                                                 server: ProviderServer) -> None:
    messages, failing, cooldown = 20, 30, 10.0
    clock = FakeClock(T0)
    calls: list[tuple[datetime, str, int]] = []   # (fake time, webhook-id, status answered)
    numbers = itertools.count()
    lock = threading.Lock()

    def provider(r: Recorded) -> Reply:
        with lock:
            status = 503 if next(numbers) < failing else 202
            calls.append((clock(), r.headers["webhook-id"], status))
        return Reply(status, {"ok": status < 300})

    server.route("/flaky", provider)
    seed(store, messages, ["hook"])
    retry = Retry(base=2, cap=60, max_attempts=8)
    channel = hook(server, "/flaky", concurrency=1, breaker_failures=5, breaker_cooldown=cooldown)
    d = Dispatcher(store, {"hook": channel}, clock=clock, retry=retry, rng=random.Random(7))
    try:
        for _ in range(600):
            d.run()
            if not rows(store, "SELECT id FROM deliveries WHERE status <> 'sent'"):
                break
            clock.advance(seconds=1)
    finally:
        channel.close()

    # every message ends sent, exactly once, and the provider saw N + M calls
    assert rows(store, "SELECT status, count(*) FROM deliveries GROUP BY status") == [("sent", messages)]
    assert rows(store, "SELECT status, count(*) FROM candidates GROUP BY status") == [("sent", messages)]
    accepted = [key for _, key, status in calls if status < 300]
    assert len(accepted) == len(set(accepted)) == messages
    assert len(calls) == failing + messages
    # attempts recorded = calls made, within the retry budget
    attempts = dict(rows(store, "SELECT idempotency_key, attempts FROM deliveries"))
    per_key: dict[str, list[datetime]] = {}
    for at, key, _ in calls:
        per_key.setdefault(key, []).append(at)
    assert {k: len(v) for k, v in per_key.items()} == attempts
    assert max(attempts.values()) <= retry.max_attempts
    # each retry waited at least its backoff (equal jitter: half the exponential step, or more)
    for key, times in per_key.items():
        for n, (before, after) in enumerate(itertools.pairwise(times), start=1):
            floor = min(retry.cap, retry.base * 2 ** (n - 1)) / 2
            assert (after - before).total_seconds() >= floor, (key, n, times)
    # once the breaker opened, one probe per cool-down until the provider recovered
    first_batch = [c for c in calls if c[0] == T0]
    assert len(first_batch) == messages and all(s == 503 for *_, s in first_batch)
    recovered = next(at for at, _, s in calls if s < 300)
    probes = [at for at, _, s in calls if T0 < at < recovered or (at == recovered and s == 503)]
    assert len(probes) == len(set(probes)) == failing - messages
    assert all((b - a).total_seconds() >= cooldown for a, b in itertools.pairwise([T0, *probes]))
    print(f"\noutage: {failing} x 503 then recovery; {messages} messages sent after "
          f"{(recovered - T0).total_seconds():.0f} s (fake clock), {len(calls)} provider calls, "
          f"max {max(attempts.values())} attempts per message")


def test_time_outs_open_the_breaker_and_the_fallback_channel_is_used(store: Store,
                                                                     server: ProviderServer) -> None:
    messages, concurrency = 20, 2
    server.route("/slow", Reply(200, {"ok": True}, delay=1.5))
    clock = FakeClock(T0)
    seed(store, messages, ["hook", "inapp"])
    channel = hook(server, "/slow", timeout=0.3, concurrency=concurrency, breaker_failures=3,
                   breaker_cooldown=60)
    inapp = InAppChannel.from_dict({"type": "inapp"}, PluginContext(store=store))
    d = Dispatcher(store, {"hook": channel, "inapp": inapp}, clock=clock,
                   retry=Retry(base=1, cap=10, max_attempts=8))
    try:
        for _ in range(5):
            d.run()
            clock.advance(seconds=2)
    finally:
        channel.close()

    assert d.breakers["hook"].state == "open"
    # the provider saw at most one time-out per thread: the rest of the batch was not attempted
    calls = len(server.calls("/slow"))
    assert 1 <= calls <= concurrency
    by_channel = rows(store, "SELECT channel, status, count(*), sum(attempts) FROM deliveries "
                             "GROUP BY channel, status ORDER BY channel")
    # ... and counts no attempt: the attempts are the calls the provider saw
    assert by_channel == [("hook", "dead", messages, calls), ("inapp", "delivered", messages, messages)]
    reasons = {r[0] for r in rows(store, "SELECT last_error FROM deliveries WHERE channel = 'hook'")}
    assert reasons == {"circuit open"}
    assert rows(store, "SELECT status, count(*) FROM candidates GROUP BY status") == [("sent", messages)]
    assert all(len(store.inbox_list("default", f"c{i}")) == 1 for i in range(messages))
