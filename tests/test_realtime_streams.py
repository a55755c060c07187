"""Two streams of one store (ceap.yaml ``streams:``) never share a partition's watermark,
keyed state or absence timers, though both name their partition ``""`` (every stream
without partitions does, and two Kinesis streams share shard ids): the event log and the
timers hold each row's stream (migration 0010). Rows written before it (no stream) are
read by every stream's worker, as before."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ceap.model import CandidateQuery, utcnow
from ceap.plugin import PluginContext
from ceap.realtime.embedded import EmbeddedConfig, EmbeddedStream
from ceap.realtime.worker import Worker
from ceap.store import Store
from tests.conftest import require_service
from tests.test_realtime_eventtime import _project

PROGRAMS: dict[str, dict[str, Any]] = {
    "crashes": {"source": {"type": "events", "on": ["app_crash"], "lateness": "60m"},
                "state": {"crashes": {"count": "app_crash", "window": "24h"}},
                "filters": [{"id": "two", "expr": "crashes >= 2"}],
                "action": {"type": "alert", "channels": ["email"]}},
    "abandoned": {"source": {"type": "events", "on": [], "lateness": "60m"},
                  "state": {"no_order": {"absence": {"after": "cart_updated", "missing": "order_placed"},
                                         "within": "20m"}},
                  "filters": [{"id": "abandoned", "expr": "no_order"}],
                  "action": {"type": "offer", "channels": ["email"]}},
}


def _publish(store: Store, stream: str, *events: tuple[str, str, str, datetime]) -> None:
    queue = EmbeddedStream(EmbeddedConfig(type="embedded", stream=stream), PluginContext(store=store))
    queue.publish([json.dumps({"id": e, "customer_id": c, "type": t, "ts": ts.isoformat()}).encode()
                   for e, c, t, ts in events])


def _work(root: Path, store: Store, stream: str) -> Worker:
    """``ceap worker --stream <stream> --until-idle`` on the embedded queue ``stream``."""
    context = _project(root, store, PROGRAMS)
    source = EmbeddedStream(EmbeddedConfig(type="embedded", stream=stream), context)
    worker = Worker(store, source, root / "programs", context, stream=stream)
    try:
        worker.run(until_idle=True)
    finally:
        worker.close()
    return worker


def _customers(store: Store, program: str) -> list[str]:
    return sorted(c.customer_id for c in store.candidates(
        CandidateQuery(program=program, limit=100, include_expired=True)))


@pytest.fixture
def now() -> datetime:
    return utcnow().astimezone(UTC).replace(microsecond=0)


def test_a_stream_restores_neither_the_watermark_nor_the_state_of_another(
        store: Store, tmp_path: Path, now: datetime) -> None:
    """The repro of issue 10: a crash at now on ``events``, then one at now - 2h on
    ``other``: the second is not late (its stream's watermark is its own), and the state
    ``other``'s worker restores holds none of ``events``'s events (two crashes of one
    customer, one per stream, are not two in either stream's state)."""
    _publish(store, "events", ("a1", "C1", "app_crash", now))
    first = _work(tmp_path, store, "events")
    assert first.stats.late == 0
    _publish(store, "other", ("b1", "C1", "app_crash", now - timedelta(hours=2)))
    second = _work(tmp_path, store, "other")
    assert second.stats.late == 0
    assert second.keyed is not None and second.keyed.event_ids("").to_pylist() == ["b1"]
    assert second.watermarks.by_partition[""] == (now - timedelta(hours=2)).replace(tzinfo=None)
    assert _customers(store, "crashes") == []
    with store.tx() as tx:
        rows = tx.execute("SELECT event_id, stream, partition_key FROM event_log "
                          "ORDER BY event_id").fetchall()
    assert [tuple(r) for r in rows] == [("a1", "events", ""), ("b1", "other", "")]


def test_a_timer_armed_on_one_stream_is_fired_by_its_own_worker_only(
        store: Store, tmp_path: Path, now: datetime) -> None:
    _publish(store, "events", ("cart", "C1", "cart_updated", now - timedelta(hours=3)))
    _work(tmp_path, store, "events")  # armed for now - 2h40m; the watermark: now - 3h
    # ``other``'s watermark passes the fire time plus the lateness: not its timer
    _publish(store, "other", ("v1", "C2", "page_view", now))
    _work(tmp_path, store, "other")
    assert _customers(store, "abandoned") == []
    with store.tx() as tx:
        assert tx.execute("SELECT stream, claimed_until FROM timers").fetchall() == [("events", None)]
    # once ``events``'s own watermark passes it, it fires there
    _publish(store, "events", ("v2", "C3", "page_view", now))
    _work(tmp_path, store, "events")
    assert _customers(store, "abandoned") == ["C1"]


def test_rows_logged_before_streams_were_recorded_are_read_by_every_stream(
        store: Store, tmp_path: Path, now: datetime) -> None:
    """Event-log rows and timers without a stream (written before migration 0010) are
    restored and fired by the worker of any stream, as before."""
    _publish(store, "events", ("cart", "C1", "cart_updated", now - timedelta(hours=3)))
    _work(tmp_path, store, "events")
    with store.tx() as tx:  # as an older release wrote them
        tx.execute("UPDATE event_log SET stream = NULL")
        tx.execute("UPDATE timers SET stream = NULL")
    _publish(store, "other", ("old", "C2", "app_crash", now - timedelta(hours=4, minutes=30)),
             ("new", "C2", "app_crash", now))
    worker = _work(tmp_path, store, "other")
    assert worker.stats.late == 1  # against the restored watermark, now - 3h, minus 1h
    assert worker.keyed is not None and "cart" in worker.keyed.event_ids("").to_pylist()
    assert _customers(store, "abandoned") == ["C1"]  # the timer fired by ``other``'s worker


def test_redis_timers_of_two_streams_are_apart_and_old_keys_still_fire() -> None:
    require_service("redis")
    import redis

    from ceap.realtime.events import EVENT_SCHEMA
    from ceap.realtime.state_redis import RedisEventLog, RedisTimers

    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    ns = f"ceap-test-{uuid.uuid4().hex[:8]}"
    log = RedisEventLog(client, namespace=ns)
    t0 = datetime(2026, 11, 20, 10, 0)
    try:
        armed = [{"event_id": e, "tenant_id": "default", "customer_id": c, "type": "cart_updated",
                  "ts": t0, "attributes": "{}"} for e, c in (("e1", "C1"), ("e2", "C2"))]
        import pyarrow as pa

        log.append(pa.Table.from_pylist(armed, schema=EVENT_SCHEMA))
        fire = t0 + timedelta(minutes=20)
        RedisTimers(client, log, "events").add("p#f", [("default", "C1", "e1", t0, fire, "")])
        RedisTimers(client, log).add("p#f", [("default", "C2", "e2", t0, fire, "")])  # an old key
        later = fire + timedelta(hours=1)
        other = RedisTimers(client, log, "other")
        assert other.fire("p#f", "f", "order_placed", "", later).column("customer_id").to_pylist() == ["C2"]
        other.done("p#f")
        events = RedisTimers(client, log, "events")
        assert events.fire("p#f", "f", "order_placed", "", later).column("customer_id").to_pylist() == ["C1"]
        events.done("p#f")
        assert events.fire("p#f", "f", "order_placed", "", later).num_rows == 0
    finally:
        keys = list(client.scan_iter(f"{ns}:*"))
        if keys:
            client.delete(*keys)


def test_pruning_on_one_stream_keeps_another_streams_events(store: Store) -> None:
    """A worker prunes by its own watermark: another stream's events (maybe behind) stay;
    events logged without a stream go, as before."""
    import pyarrow as pa

    from ceap.realtime.events import EVENT_SCHEMA
    from ceap.realtime.state import EventLog

    t0 = datetime(2026, 11, 20, 10, 0)

    def rows(*ids: str) -> pa.Table:
        return pa.Table.from_pylist([{"event_id": e, "tenant_id": "default", "customer_id": "C1",
                                      "type": "app_crash", "ts": t0, "attributes": "{}"} for e in ids],
                                    schema=EVENT_SCHEMA)

    EventLog(store, "events").append(rows("a"))
    EventLog(store, "other").append(rows("b"))
    EventLog(store).append(rows("c"))
    assert EventLog(store, "events").prune(t0 + timedelta(hours=1)) == 2
    with store.tx() as tx:
        assert [tuple(r) for r in tx.execute("SELECT event_id, stream FROM event_log").fetchall()] \
            == [("b", "other")]


def test_taking_a_partition_over_releases_its_own_streams_timers_only(store: Store) -> None:
    """A worker that claims partition ``""`` of ``other`` leaves the leases of ``events``'s
    timers of partition ``""`` alone; one that claims ``events``'s releases them."""
    from ceap.realtime.claims import Claims
    from ceap.realtime.timers import Timers

    start = datetime(2026, 11, 20, 10, 0)
    with store.tx() as tx:
        tx.execute("INSERT INTO event_log (tenant_id, event_id, customer_id, type, ts, attributes, stream) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)",
                   ("default", "e1", "C1", "cart_updated", tx.ts(start.replace(tzinfo=UTC)), "{}", "events"))
    Timers(store, "events").add("p#f", [("default", "C1", "e1", start, start + timedelta(minutes=1), "")])
    cut = start + timedelta(minutes=2)
    dead = Timers(store, "events")
    assert dead.fire("p#f", "f", "order_placed", "", cut).num_rows == 1  # then killed: no done()
    heir = Timers(store, "events")
    Claims(store, "default", "other", "o").take([""])
    assert heir.fire("p#f", "f", "order_placed", "", cut).num_rows == 0  # still leased
    Claims(store, "default", "events", "heir").take([""])
    assert heir.fire("p#f", "f", "order_placed", "", cut).column("customer_id").to_pylist() == ["C1"]
