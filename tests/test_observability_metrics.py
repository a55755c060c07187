"""Prometheus metrics, scraped after real requests, runs, dispatches, worker batches and
scheduler ticks: each value moved by what was done."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from ceap.api import create_app
from ceap.delivery.dispatcher import Dispatcher
from ceap.delivery.outbox import Retry
from ceap.delivery.profiles import upsert_profiles
from ceap.errors import CeapError
from ceap.model import RunRecord
from ceap.plugin import PluginContext
from ceap.realtime.embedded import EmbeddedStream
from ceap.realtime.worker import Worker
from ceap.runtime.batch import run_program
from ceap.runtime.scheduler import Scheduler
from ceap.spec import parse_program
from ceap.spec.schedule import SchedulerConfig
from ceap.store import Store, open_store
from ceap.testing import FakeClock
from ceap.testing.doubles import make_candidates
from tests.helpers import ORDERS, ORDERS_HEADER, base_program, write_csv
from tests.obs_helpers import local, value
from tests.test_dispatcher import T0, FlakyChannel, FlakyConfig, seed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_api_requests_are_counted_by_route_template_and_status(store: Store) -> None:
    api = TestClient(create_app(store, auth=False))
    before = api.get("/metrics").text
    for customer in ("cust-a", "cust-b", "cust-c"):
        assert api.get(f"/v1/customers/{customer}/candidates").status_code == 200
    assert api.get("/v1/customers/cust-a/candidates?limit=0").status_code == 422
    assert api.get("/no/such/path/cust-a").status_code == 404
    response = api.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text
    route = "/v1/customers/{customer_id}/candidates"
    for status, n in (("200", 3), ("422", 1)):
        delta = (value(after, "ceap_http_requests_total", method="GET", route=route, status=status)
                 - value(before, "ceap_http_requests_total", method="GET", route=route, status=status))
        assert delta == n
    assert (value(after, "ceap_http_request_duration_seconds_count", method="GET", route=route)
            - value(before, "ceap_http_request_duration_seconds_count", method="GET", route=route)) == 4
    assert (value(after, "ceap_http_requests_total", method="GET", route="<unmatched>", status="404")
            - value(before, "ceap_http_requests_total", method="GET", route="<unmatched>",
                    status="404")) == 1
    assert "cust-a" not in after  # paths never become labels
    assert "/metrics" not in api.get("/openapi.json").text


def test_batch_runs_count_outcomes_funnel_stages_and_durations(store: Store, tmp_path: Path) -> None:
    write_csv(tmp_path / "orders.csv", ORDERS_HEADER, ORDERS)
    context = PluginContext(base_dir=tmp_path)
    before = local()
    now = datetime.now(UTC).replace(microsecond=0)
    result = run_program(parse_program(base_program(), "big_carts.yaml"), store, context, now=now)
    strict = base_program(source={**base_program()["source"], "max_bad_share": 0.0})
    with pytest.raises(CeapError):
        run_program(parse_program(strict, "big_carts.yaml"), store, context, now=now)
    after = local()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("ceap_runs_total", program="big_carts", status="succeeded") == 1
    assert delta("ceap_runs_total", program="big_carts", status="failed") == 1
    assert delta("ceap_run_duration_seconds_count", program="big_carts") == 2
    f = result.funnel
    assert f.written > 0
    # the funnel of the succeeded run only: the failed one wrote nothing
    assert delta("ceap_run_rows_total", program="big_carts", stage="read") == f.read
    assert delta("ceap_run_rows_total", program="big_carts", stage="quarantined") == f.quarantined
    assert delta("ceap_run_rows_total", program="big_carts", stage="written") == f.written
    assert delta("ceap_run_rows_total", program="big_carts", stage="selected") == f.selected
    assert delta("ceap_run_rows_total", program="big_carts", stage="filtered") == sum(f.filters.values())
    assert value(after, "ceap_run_last_success_timestamp_seconds", program="big_carts") == now.timestamp()


def test_dispatch_counts_deliveries_provider_calls_breakers_and_store_totals(store: Store) -> None:
    seed(store, 4)
    before = local()
    clock = FakeClock(T0)
    good = Dispatcher(store, {"email": FlakyChannel(FlakyConfig())}, clock=clock, batch_size=2)
    good.run()
    after_sent = local()
    assert (value(after_sent, "ceap_deliveries_total", channel="email", outcome="sent")
            - value(before, "ceap_deliveries_total", channel="email", outcome="sent")) == 4
    assert (value(after_sent, "ceap_dispatch_candidates_total", outcome="claimed")
            - value(before, "ceap_dispatch_candidates_total", outcome="claimed")) == 4
    assert (value(after_sent, "ceap_provider_call_duration_seconds_count", channel="email")
            - value(before, "ceap_provider_call_duration_seconds_count", channel="email")) >= 2
    assert value(after_sent, "ceap_breaker_state", channel="email") == 0
    assert value(after_sent, "ceap_store_deliveries", status="queued") == 0
    assert value(after_sent, "ceap_store_deliveries", status="dead") == 0

    # a provider that always fails: retries, dead letters, the breaker opens
    more = make_candidates(3, now=T0, channels=["email"], customer_id=lambda i: f"d{i}",
                           program="other", run_id="r2", dedup_key=lambda i: f"other-{i}")
    store.write_run(RunRecord("r2", "default", "other", "succeeded", T0), more)
    upsert_profiles(store, pa.table({"customer_id": [f"d{i}" for i in range(3)],
                                     "email": [f"d{i}@example.com" for i in range(3)]}), "default")
    failing = FlakyChannel(FlakyConfig(fail_forever=True, breaker_failures=2, breaker_cooldown=600))
    bad = Dispatcher(store, {"email": failing}, clock=clock, batch_size=10,
                     retry=Retry(base=1, cap=1, max_attempts=1))
    bad.run()
    clock.advance(seconds=5)
    bad.run()  # the next pass sees the open breaker
    after = local()
    assert (value(after, "ceap_deliveries_total", channel="email", outcome="dead")
            - value(after_sent, "ceap_deliveries_total", channel="email", outcome="dead")) == 3
    assert value(after, "ceap_breaker_state", channel="email") == 2
    assert value(after, "ceap_store_deliveries", status="dead") == 3

    with store.tx() as tx:  # as crash recovery leaves one: held for a person
        tx.execute("UPDATE deliveries SET status = 'ambiguous' WHERE id = "
                   "(SELECT min(id) FROM deliveries WHERE status = 'dead')")
    bad.export_store_totals()
    final = local()
    assert value(final, "ceap_store_deliveries", status="ambiguous") == 1
    assert value(final, "ceap_store_deliveries", status="dead") == 2


CRASH = {"name": "crash", "source": {"type": "events", "on": ["app_crash"]},
         "state": {"crashes_24h": {"count": "app_crash", "window": "24h"}},
         "filters": [{"id": "more_than_1_crash", "expr": "crashes_24h > 1"}],
         "action": {"type": "alert", "channels": ["sms"]}}


def crash_project(folder: Path, stream_name: str) -> tuple[Store, PluginContext, EmbeddedStream]:
    """A project folder with the ``crash`` program, its SQLite store and an embedded stream."""
    import yaml

    (folder / "programs").mkdir()
    (folder / "programs" / "crash.yaml").write_text(yaml.safe_dump(CRASH))
    store = open_store(f"sqlite:///{folder / 'rt.db'}")
    context = PluginContext(base_dir=folder, store=store)
    return store, context, EmbeddedStream.from_dict({"type": "embedded", "stream": stream_name}, context)


def test_worker_counts_events_dead_letters_candidates_and_lag(tmp_path: Path) -> None:
    store, context, stream = crash_project(tmp_path, "obs")
    try:
        t0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
        events = [{"id": f"e{k}", "customer_id": "A", "type": "app_crash",
                   "ts": (t0 + timedelta(minutes=k)).isoformat()} for k in range(3)]
        bodies = [json.dumps(e).encode() for e in events]
        bodies += [b"not json", json.dumps(events[0]).encode()]  # a dead letter, a duplicate
        stream.publish(bodies)
        before = local()
        worker = Worker(store, stream, tmp_path / "programs", context, batch=2, stream="obs")
        stats = worker.run(until_idle=True)
        after = local()
    finally:
        store.close()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert stats.candidates == 1 and stats.rejected == 1 and stats.duplicates == 1
    assert delta("ceap_worker_messages_total", stream="obs") == 5
    assert delta("ceap_worker_events_total", stream="obs") == stats.events
    assert delta("ceap_worker_dead_letters_total", stream="obs") == stats.rejected
    assert delta("ceap_worker_events_dropped_total", stream="obs", reason="duplicate") == 1
    assert delta("ceap_worker_candidates_total", stream="obs") == 1
    assert delta("ceap_worker_batch_duration_seconds_count", stream="obs") == 3  # 5 messages, by 2
    assert value(after, "ceap_worker_lag_messages", stream="obs") == 0


def test_scheduler_exports_next_window_last_success_and_leadership(tmp_path: Path) -> None:
    write_csv(tmp_path / "orders.csv", ORDERS_HEADER, ORDERS)
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    t0 = datetime(2026, 3, 2, 12, 0, 10, tzinfo=UTC)
    clock = FakeClock(t0)
    spec = parse_program(base_program(name="hourly_obs", schedule="hourly"), "hourly_obs.yaml")
    specs = [spec]
    sched = Scheduler(store, PluginContext(base_dir=tmp_path), lambda: specs, clock=clock,
                      config=SchedulerConfig(poll=timedelta(seconds=30), lease=timedelta(seconds=60)))
    try:
        before = local()
        sched.tick()  # first seen: nothing is made up, the next window is 13:00
        first = local()
        assert value(first, "ceap_scheduler_leader", tenant="default") == 1
        assert value(first, "ceap_scheduler_last_tick_timestamp_seconds", tenant="default") == \
            t0.timestamp()
        assert value(first, "ceap_schedule_next_run_timestamp_seconds", program="hourly_obs") == \
            datetime(2026, 3, 2, 13, 0, tzinfo=UTC).timestamp()
        clock.now = datetime(2026, 3, 2, 13, 0, 5, tzinfo=UTC)
        report = sched.tick()
        assert [d.status for d in report.decisions] == ["succeeded"]
        second = local()
        assert value(second, "ceap_schedule_last_success_timestamp_seconds", program="hourly_obs") == \
            datetime(2026, 3, 2, 13, 0, tzinfo=UTC).timestamp()
        assert value(second, "ceap_schedule_next_run_timestamp_seconds", program="hourly_obs") == \
            datetime(2026, 3, 2, 14, 0, tzinfo=UTC).timestamp()
        assert (value(second, "ceap_schedule_windows_total", program="hourly_obs", status="succeeded")
                - value(before, "ceap_schedule_windows_total", program="hourly_obs",
                        status="succeeded")) == 1
        # the program's file is removed: its gauges go (no false "late" alert)
        specs.clear()
        clock.now += timedelta(hours=2)
        sched.tick()
        gone = local()
        assert 'program="hourly_obs"' not in "\n".join(
            line for line in gone.splitlines() if line.startswith("ceap_schedule_next_run"))
        specs.append(spec)
        sched.tick()
        assert value(local(), "ceap_schedule_next_run_timestamp_seconds", program="hourly_obs") > 0
        # another scheduler holds the lease: this one stands by and exports no schedule
        with store.tx() as tx:
            tx.execute("UPDATE scheduler_lease SET holder = 'other', until = ?",
                       (tx.ts(clock.now + timedelta(hours=1)),))
        clock.now += timedelta(seconds=30)
        assert not sched.tick().leader
        standby = local()
        assert value(standby, "ceap_scheduler_leader", tenant="default") == 0
        assert value(standby, "ceap_schedule_next_run_timestamp_seconds", program="hourly_obs") == 0
    finally:
        store.close()


def test_metrics_port_serves_the_long_running_commands_metrics(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ceap.cli import app

    port = free_port()
    url = f"sqlite:///{tmp_path / 'd.db'}"
    open_store(url).close()
    result = CliRunner().invoke(app, ["--project", str(tmp_path), "--store", url, "dispatch",
                                      "--metrics-port", str(port), "--metrics-addr", "127.0.0.1"])
    assert result.exit_code == 0, result.output
    # the server thread outlives the command here (a real process would stop with it)
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert "ceap_store_deliveries" in text
    assert value(text, "ceap_store_deliveries", status="queued") == 0


def test_a_journaled_channel_times_each_provider_call(store: Store) -> None:
    from tests.test_crash_window import probe

    seed(store, 12)
    channel = probe(store)
    before = local()
    stats = Dispatcher(store, {"email": channel}, clock=FakeClock(T0)).run()
    after = local()
    assert stats.sent == 12
    # one observation per message handed to the provider (the channel's lanes run in parallel)
    assert (value(after, "ceap_provider_call_duration_seconds_count", channel="email")
            - value(before, "ceap_provider_call_duration_seconds_count", channel="email")) == 12
    assert (value(after, "ceap_deliveries_total", channel="email", outcome="sent")
            - value(before, "ceap_deliveries_total", channel="email", outcome="sent")) == 12


def test_worker_quarantines_each_bad_event_once_as_its_text(tmp_path: Path) -> None:
    store, context, stream = crash_project(tmp_path, "dl")
    try:
        good = {"id": "e1", "customer_id": "A", "type": "app_crash", "ts": "2026-11-20T10:00:00+00:00"}
        bad_ts = {**good, "id": "e2", "ts": "yesterday"}
        listed = [{**good, "id": "e3"}, {**good, "id": "e4", "type": "bad type"}]
        stream.publish([b"not json", json.dumps(good).encode(), json.dumps(bad_ts).encode(),
                        json.dumps(listed).encode()])
        worker = Worker(store, stream, tmp_path / "programs", context, batch=10, stream="dl")
        stats = worker.run(until_idle=True)
        rows = store.quarantined("default", "stream")
    finally:
        store.close()
    assert stats.rejected == 3 and stats.events == 2
    assert len(rows) == 3
    by_reason = {q["reason"].split(":")[0]: q["row"] for q in rows}
    assert by_reason["not JSON"] == "not json"  # the body's text
    assert json.loads(by_reason["ts"]) == bad_ts
    assert json.loads(by_reason["type"]) == {**good, "id": "e4", "type": "bad type"}
