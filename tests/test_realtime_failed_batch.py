"""A worker failing after a micro-batch's candidates and events are stored, before its
messages are committed, gets the batch again: no candidate lost, none written twice
(docs/realtime.md, "Recovery rule")."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

import ceap.realtime.worker as worker_module
from ceap.realtime.source import Received
from ceap.realtime.worker import Worker
from ceap.store import open_store
from ceap.store.base import Store
from tests.test_realtime_eventtime import PROGRAMS, ListStream, _event, _found, _message, _project


class Redelivering(ListStream):
    """Each poll returns the oldest batch not committed yet (a broker's redelivery)."""

    redelivers: ClassVar[bool] = True

    def __init__(self, batches: Sequence[Sequence[Received]]):
        super().__init__(batches)
        self.committed: list[Any] = []

    def poll(self, max_messages: int, timeout: float) -> list[Received]:
        return list(self.batches[0]) if self.batches else []

    def commit(self, tokens: Sequence[Any]) -> None:
        if not tokens:  # an empty poll
            return
        assert [r.token for r in self.batches[0]] == list(tokens)
        self.committed.extend(tokens)
        self.batches.pop(0)


def _batches() -> list[list[Received]]:
    events = [_event(f"e{i}", f"C{i % 2}", "app_crash", i) for i in range(8)]
    return [[_message(e, "p0") for e in events[:4]], [_message(e, "p0") for e in events[4:]]]


def _logged(store: Store) -> int:
    with store.tx() as tx:
        return int(tx.execute("SELECT count(*) FROM event_log").fetchone()[0])


def _clean(root: Path) -> list[tuple[str, str, str]]:
    store = open_store(f"sqlite:///{root}.db")
    worker = Worker(store, Redelivering(_batches()), root / "programs", _project(root, store, PROGRAMS))
    while worker.step():
        pass
    found = _found(store)
    worker.close()
    store.close()
    return found


def test_a_failure_after_a_batch_is_stored_before_its_commit_replays_it_writing_nothing_twice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _clean(tmp_path / "clean")
    assert expected  # the batches make candidates
    root = tmp_path / "failing"
    store = open_store(f"sqlite:///{root}.db")
    stream = Redelivering(_batches())
    worker = Worker(store, stream, root / "programs", _project(root, store, PROGRAMS))
    assert worker.step() == 4
    real = worker_module.record_event_outcomes

    def failing(*args: Any, **kwargs: Any) -> None:  # after the programs wrote their candidates
        raise RuntimeError("killed mid-batch")

    monkeypatch.setattr(worker_module, "record_event_outcomes", failing)
    with pytest.raises(RuntimeError, match="killed mid-batch"):
        worker.step()
    assert _logged(store) == 8      # the programs and the log committed before the failure
    assert stream.committed == ["e0", "e1", "e2", "e3"]  # its messages not committed
    monkeypatch.setattr(worker_module, "record_event_outcomes", real)
    assert worker.step() == 4       # the batch again: its events already logged
    assert worker.step() == 0
    assert worker.stats.duplicates == 4
    assert _found(store) == expected  # nothing lost, nothing twice
    worker.close()
    again = Worker(store, Redelivering(_batches()), root / "programs", worker.context)
    assert again.step() == 4 and again.step() == 4  # a replay from the start: all duplicates
    assert again.stats.duplicates == 8
    assert _found(store) == expected  # nothing written twice
    again.close()
    store.close()
