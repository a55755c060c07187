"""Two dispatchers on one PostgreSQL store, each with its own connection, running at
the same time: a frequency cap and a channel's rate limit hold across them."""

from __future__ import annotations

import threading
from typing import Any

import pyarrow as pa

from ceap.delivery.delivery_config import DeliveryConfig
from ceap.delivery.dispatcher import Dispatcher, DispatchStats
from ceap.delivery.policies.caps import FrequencyCaps
from ceap.delivery.profiles import upsert_profiles
from ceap.model import RunRecord
from ceap.store import open_store
from ceap.testing.doubles import FakeClock, make_candidates
from tests.test_dispatcher import T0, FlakyChannel, FlakyConfig

CUSTOMERS = 30


def seed(store: Any, program: str, offset: float, n: int = CUSTOMERS) -> None:
    """One candidate per customer; scores interleave the programs (c0 A, c0 B, c1 A, ...),
    so that two dispatchers claiming one at a time claim the same customer together."""
    table = make_candidates(n, now=T0, program=program, channels=["email"],
                            customer_id=lambda i: f"c{i}", dedup_key=lambda i: f"{program}-{i}",
                            score=lambda i: round(1.0 - i / 100 - offset, 6))
    store.write_run(RunRecord(f"r-{program}", "default", program, "succeeded", T0), table)


def together(dispatchers: list[Dispatcher], **kw: Any) -> list[DispatchStats]:
    results: list[DispatchStats] = [DispatchStats() for _ in dispatchers]
    start = threading.Barrier(len(dispatchers))

    def go(i: int) -> None:
        start.wait()
        results[i] = dispatchers[i].run(**kw)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(dispatchers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def test_a_frequency_cap_holds_across_two_dispatchers(pg_url: str) -> None:
    stores = [open_store(pg_url) for _ in range(2)]
    try:
        seed(stores[0], "promo_a", 0.0)
        seed(stores[0], "promo_b", 0.001)
        upsert_profiles(stores[0], pa.table({
            "customer_id": [f"c{i}" for i in range(CUSTOMERS)],
            "email": [f"c{i}@example.com" for i in range(CUSTOMERS)]}), "default")
        config = DeliveryConfig.model_validate({"caps": {"per_customer": [{"max": 1, "window": "1d"}]}})
        clock = FakeClock(T0)
        channels = [FlakyChannel(FlakyConfig()) for _ in range(2)]
        dispatchers = [Dispatcher(s, {"email": ch}, policies=[FrequencyCaps(config)],  # type: ignore[list-item]
                                  batch_size=1, clock=clock) for s, ch in zip(stores, channels, strict=True)]
        stats = together(dispatchers)
        sent = [m.customer_id for ch in channels for m in ch.accepted]
        assert sorted(sent) == sorted(f"c{i}" for i in range(CUSTOMERS))   # one each, none twice
        assert sum(s.suppressed for s in stats) == CUSTOMERS
        assert all(ch.accepted for ch in channels)                          # both did a share
    finally:
        for s in stores:
            s.close()


def test_a_rate_limit_holds_across_two_dispatchers(pg_url: str) -> None:
    stores = [open_store(pg_url) for _ in range(2)]
    try:
        seed(stores[0], "promo", 0.0)
        upsert_profiles(stores[0], pa.table({
            "customer_id": [f"c{i}" for i in range(CUSTOMERS)],
            "email": [f"c{i}@example.com" for i in range(CUSTOMERS)]}), "default")
        clock = FakeClock(T0)        # time stands still: no token comes back
        channels = [FlakyChannel(FlakyConfig(rate_per_sec=5)) for _ in range(2)]
        dispatchers = [Dispatcher(s, {"email": ch}, batch_size=3, clock=clock)
                       for s, ch in zip(stores, channels, strict=True)]
        stats = together(dispatchers, wait=False)
        # one bucket of 5 (a second's worth) for both: in-process buckets would send 10
        assert sum(len(ch.accepted) for ch in channels) == 5
        assert sum(s.attempted for s in stats) == 5
        assert max(s.held_rate_limit for s in stats) == CUSTOMERS - 5
        clock.advance(seconds=1)     # a second later, 5 more between them
        stats = together(dispatchers, wait=False)
        assert sum(len(ch.accepted) for ch in channels) == 10
    finally:
        for s in stores:
            s.close()
