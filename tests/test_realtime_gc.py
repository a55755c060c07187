"""The worker runs with a higher young-generation threshold for the collector, and gives the
process its own back when it stops (even when a micro-batch fails)."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest

from ceap.plugin import PluginContext
from ceap.realtime.replay import ReplayConnector
from ceap.realtime.worker import GC_YOUNG_THRESHOLD, Worker
from ceap.store import open_store


def _worker(tmp_path: Path) -> Worker:
    store = open_store(f"sqlite:///{tmp_path / 'gc.db'}")
    (tmp_path / "programs").mkdir()
    (tmp_path / "events.jsonl").write_text(json.dumps(
        {"id": "e1", "customer_id": "c1", "type": "login", "ts": "2026-11-20T10:00:00+00:00"}))
    context = PluginContext(base_dir=tmp_path, store=store)
    source = ReplayConnector.from_dict({"type": "replay", "path": "events.jsonl"}, context)
    return Worker(store, source, tmp_path / "programs", context)


def test_the_worker_raises_the_young_threshold_while_it_runs_and_restores_it(tmp_path: Path) -> None:
    before = gc.get_threshold()
    gc.set_threshold(700, *before[1:])
    try:
        seen: list[tuple[int, ...]] = []
        worker = _worker(tmp_path)
        stats = worker.run(until_idle=True, on_progress=lambda _: seen.append(gc.get_threshold()), every=0)
        assert stats.events == 1
        assert seen and all(t == (GC_YOUNG_THRESHOLD, *before[1:]) for t in seen)
        assert gc.get_threshold() == (700, *before[1:])
    finally:
        gc.set_threshold(*before)


def test_a_failing_pass_still_restores_the_threshold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = gc.get_threshold()
    worker = _worker(tmp_path)

    def broken() -> int:
        raise RuntimeError("store down")

    monkeypatch.setattr(worker, "step", broken)
    with pytest.raises(RuntimeError, match="store down"):
        worker.run(until_idle=True)
    assert gc.get_threshold() == before
