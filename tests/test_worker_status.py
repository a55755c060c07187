"""A worker's report of itself in the store (``worker_status``): partitions with their
watermarks, lag, counts; what the dashboard's Real-time page shows, per tenant."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from ceap.plugin import PluginContext
from ceap.realtime.replay import ReplayConnector
from ceap.realtime.status import StatusReporter, worker_name, worker_reports
from ceap.realtime.worker import Worker

PROGRAM = {"name": "crashes", "source": {"type": "events", "on": ["app_crash"]},
           "state": {"crashes_24h": {"count": "app_crash", "window": "24h"}},
           "filters": [{"id": "many", "expr": "crashes_24h > 1"}],
           "action": {"type": "alert", "channels": ["sms"]}}


def test_a_worker_reports_its_partitions_lag_and_counts(store: Any, tmp_path: Path) -> None:
    (tmp_path / "programs").mkdir()
    (tmp_path / "programs" / "crashes.yaml").write_text(yaml.safe_dump(PROGRAM))
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    events = [{"id": f"e{i}", "customer_id": f"c{i % 3}", "type": "app_crash",
               "ts": (t0 + timedelta(minutes=i)).isoformat(), "attributes": {}} for i in range(9)]
    (tmp_path / "events.jsonl").write_text("\n".join(json.dumps(e) for e in events))
    context = PluginContext(base_dir=tmp_path, store=store)
    source = ReplayConnector.from_dict({"type": "replay", "path": "events.jsonl"}, context)
    worker = Worker(store, source, tmp_path / "programs", context, batch=4, stream="replayed")
    worker.run(until_idle=True)

    [report] = worker_reports(store, context.tenant)
    assert report.worker == worker_name() and report.stream == "replayed"
    assert report.events == 9 and report.messages == 9 and report.lag == 0
    [(partition, mark)] = report.partitions.items()
    assert partition == "0"
    assert datetime.fromisoformat(mark) == t0 + timedelta(minutes=8)  # the latest event time read
    assert report.updated_at is not None and report.started_at is not None
    assert worker_reports(store, "another-tenant") == []


def test_a_report_replaces_the_workers_previous_one(store: Any) -> None:
    now = datetime.now(UTC)
    reporter = StatusReporter(store, "acme", "events", now)
    reporter.report({"p1": now.replace(tzinfo=None)}, 5, 10, 10, now)
    reporter.report({"p1": now.replace(tzinfo=None), "p2": now.replace(tzinfo=None)}, 2, 30, 28,
                    now + timedelta(seconds=2))
    [report] = worker_reports(store, "acme")
    assert (report.lag, report.messages, report.events) == (2, 30, 28)
    assert sorted(report.partitions) == ["p1", "p2"]
    assert report.rate is not None and report.rate > 0
