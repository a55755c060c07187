"""Catching up: while polls come back full, the worker merges up to ``catch_up`` of them
into one micro-batch (docs/realtime.md, "Catching up")."""

from __future__ import annotations

from pathlib import Path

from ceap.realtime.source import Received
from ceap.realtime.worker import Worker
from ceap.store import open_store
from tests.test_realtime_eventtime import PROGRAMS, ListStream, _event, _found, _message, _project


def _batches() -> list[list[Received]]:
    events = [_event(f"e{i}", f"C{i % 2}", "app_crash", i) for i in range(9)]
    messages = [_message(e, "p0") for e in events]
    sizes = [2, 2, 2, 1, 2]  # three full polls, a short one, a full one
    out, start = [], 0
    for size in sizes:
        out.append(messages[start:start + size])
        start += size
    return out


def _worker(root: Path, catch_up: int, steps: int) -> tuple[Worker, list[int]]:
    store = open_store(f"sqlite:///{root}.db")
    context = _project(root, store, PROGRAMS)
    worker = Worker(store, ListStream(_batches()), root / "programs", context, batch=2, catch_up=catch_up)
    sizes = [worker.step() for _ in range(steps)]
    return worker, sizes


def test_full_polls_are_merged_up_to_catch_up_and_a_short_one_ends_the_batch(tmp_path: Path) -> None:
    merged, sizes = _worker(tmp_path / "merged", catch_up=3, steps=4)
    assert sizes == [6, 1, 2, 0]
    single, one_by_one = _worker(tmp_path / "single", catch_up=1, steps=6)
    assert one_by_one == [2, 2, 2, 1, 2, 0]
    assert merged.stats.events == 9
    assert _found(merged.store) == _found(single.store) != []  # the same candidates either way
    for worker in (merged, single):
        worker.close()
        worker.store.close()
