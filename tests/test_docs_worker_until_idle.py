"""``ceap worker --until-idle`` on a broker whose consumer group is still joining.

Found by following docs/realtime.md with Kafka (Tansu): ``ceap publish`` then ``ceap worker
--stream kafka --until-idle`` stopped after 0 events, because a Kafka consumer's first polls
come back empty until the group has assigned it its partitions, while the topic held the
events (``lag 2`` in the progress line)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ceap.model import CandidateQuery, utcnow
from ceap.plugin import PluginContext
from ceap.realtime.replay import ReplayConfig, ReplayConnector
from ceap.realtime.source import Received
from ceap.realtime.worker import Worker
from ceap.store import open_store
from tests.test_realtime_eventtime import _project

PROGRAM = {"crashes": {"source": {"type": "events", "on": ["app_crash"], "lateness": "1h"},
                       "state": {"crashes": {"count": "app_crash", "window": "24h"}},
                       "filters": [{"id": "more_than_3", "expr": "crashes > 3"}],
                       "action": {"type": "alert", "channels": ["sms"]}}}


class JoiningStream(ReplayConnector):
    """A replay whose first ``joining`` polls come back empty, as a Kafka consumer's do
    until its group is joined; ``lag()`` tells the messages wait all along."""

    joining = 3

    def poll(self, max_messages: int, timeout: float) -> list[Received]:
        if self.joining:
            self.joining -= 1
            return []
        return super().poll(max_messages, timeout)


def test_until_idle_waits_while_the_stream_says_messages_wait(tmp_path: Path) -> None:
    now = utcnow().replace(microsecond=0)
    events = [{"id": f"e{i}", "type": "app_crash", "customer_id": "C1",
               "ts": now.isoformat()} for i in range(4)]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}", context=PluginContext(base_dir=tmp_path))
    context = _project(tmp_path, store, PROGRAM)
    source = JoiningStream(ReplayConfig(type="replay", path="events.jsonl"), context)
    worker = Worker(store, source, tmp_path / "programs", context, wait=0.01)
    try:
        stats = worker.run(until_idle=True)
    finally:
        worker.close()
    assert stats.events == 4
    assert [c.customer_id for c in store.candidates(CandidateQuery(program="crashes"))] == ["C1"]
    store.close()


def test_until_idle_stops_on_an_empty_stream(tmp_path: Path) -> None:
    (tmp_path / "events.jsonl").write_text("")
    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}", context=PluginContext(base_dir=tmp_path))
    context = _project(tmp_path, store, PROGRAM)
    source = JoiningStream(ReplayConfig(type="replay", path="events.jsonl"), context)
    worker = Worker(store, source, tmp_path / "programs", context, wait=0.01)
    try:
        stats: Any = worker.run(until_idle=True)
    finally:
        worker.close()
    assert stats.events == 0 and stats.polls == 2
    store.close()
