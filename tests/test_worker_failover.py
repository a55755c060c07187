"""Two `ceap worker` processes share a Redis Streams consumer group; one is killed
with SIGKILL mid-stream; the other takes over its unacknowledged messages and no
event is lost: every customer whose events qualify gets exactly one candidate."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from ceap.model import CandidateQuery
from ceap.store import open_store
from tests.conftest import require_service

CUSTOMERS = 300
PER_CUSTOMER = 4  # the 4th crash within 24 h qualifies


def start_worker(root: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "ceap", "--project", str(root), "worker",
                             "--batch", "50", "--wait", "0.05"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_killed_worker_is_taken_over_and_no_event_is_lost(tmp_path: Path, pg_url: str) -> None:
    require_service("redis")
    import redis

    stream = f"ceap-failover-{uuid.uuid4().hex[:8]}"
    (tmp_path / "programs").mkdir()
    (tmp_path / "ceap.yaml").write_text(yaml.safe_dump({
        "store": pg_url,
        "streams": {"events": {"type": "redis_streams", "stream": stream, "group": "workers",
                               "claim_idle": 1.0}}}))
    (tmp_path / "programs" / "crash.yaml").write_text(yaml.safe_dump({
        "name": "crash", "source": {"type": "events", "on": ["app_crash"]},
        "state": {"crashes_24h": {"count": "app_crash", "window": "24h"}},
        "filters": [{"id": "more_than_3", "expr": "crashes_24h > 3"}],
        "action": {"type": "alert", "channels": ["sms"]}}))
    t0 = datetime.now(UTC) - timedelta(hours=2)
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        workers = [start_worker(tmp_path), start_worker(tmp_path)]
        # time-ordered, customers interleaved: both workers see every customer's events
        for k in range(PER_CUSTOMER):
            pipe = client.pipeline()
            for c in range(CUSTOMERS):
                event = {"id": f"e-{c}-{k}", "type": "app_crash", "customer_id": f"C{c:04d}",
                         "ts": (t0 + timedelta(minutes=k * 10, seconds=c / 100)).isoformat()}
                pipe.xadd(stream, {"body": json.dumps(event)})
            pipe.execute()
            if k == 1:
                time.sleep(0.5)
                # mid-stream: whatever the first worker had read but not committed is now
                # pending in the group, owned by a dead consumer, until the survivor claims it
                workers[0].send_signal(signal.SIGKILL)
                workers[0].wait(10)
        store = open_store(pg_url)
        deadline = time.monotonic() + 90
        found: list = []
        while time.monotonic() < deadline:
            found = store.candidates(CandidateQuery(program="crash", limit=10_000, include_expired=True))
            try:
                pending = client.xpending(stream, "workers")["pending"]
            except redis.exceptions.ResponseError:  # the group is not there yet
                pending = -1
            if len(found) == CUSTOMERS and pending == 0:
                break
            time.sleep(0.5)
        with store.tx() as tx:
            logged = tx.execute("SELECT count(*) FROM event_log").fetchone()[0]
        store.close()
        assert workers[1].poll() is None, "the surviving worker must still be running"
        assert len(found) == CUSTOMERS                  # none lost ...
        assert len({c.customer_id for c in found}) == CUSTOMERS  # ... none twice
        assert logged == CUSTOMERS * PER_CUSTOMER       # every event reached the state
        assert client.xpending(stream, "workers")["pending"] == 0
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
                try:
                    w.wait(10)
                except subprocess.TimeoutExpired:
                    w.kill()
        client.delete(stream)
