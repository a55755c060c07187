"""CPU cuts of the dispatcher and the webhook (issue 11, sixth session): a claim's
candidates decoded from one JSON text, request heads from a ``HeaderSet``, and the
heap a run starts with kept out of the collector's passes while it runs."""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ceap.channels.base import Message, SendResult
from ceap.channels.http_client import HeaderSet, HttpClient, _Connection, _head
from ceap.delivery.dispatcher import Dispatcher, settled_heap
from ceap.delivery.outbox_rows import CANDIDATE_JSON, embedded_candidates, scored, select_rows
from ceap.model import RunRecord, utcnow
from ceap.store import Store, open_store
from ceap.store.sql_common import SELECT_CANDIDATE, candidate_from_row
from ceap.testing.doubles import CaptureConfig, CapturingChannel, make_candidates


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
    yield store
    store.close()


def _seed(store: Store, n: int, **overrides: Any) -> None:
    store.write_run(RunRecord("r1", "default", "p", "succeeded", utcnow()),
                    make_candidates(n, program="p", channels=["capture"], **overrides))


def _both(store: Store, where: str = "") -> tuple[list[Any] | None, list[Any]]:
    with store.tx() as tx:
        fast = embedded_candidates(tx, SELECT_CANDIDATE + where, ())
        usual = [candidate_from_row(scored(r))
                 for r in select_rows(tx, CANDIDATE_JSON, SELECT_CANDIDATE + where, ())]
    return fast, usual


def test_embedded_candidates_are_the_usual_ones(sqlite_store: Store) -> None:
    scores = [1.0, 0.1, 1 / 3, 0.0012345678901234567, 5e-324, 123456789.123456789, -0.0, None]
    _seed(sqlite_store, len(scores), score=lambda i: scores[i],
          payload=lambda i: [{"order": f"o{i}", "nested": {"a": [1, 2.5, None]}},
                             {"t": "é\u2028"}, {}, None][i % 4],
          reasons=lambda i: None if i % 2 else {"top": ["spend"]})
    fast, usual = _both(sqlite_store)
    assert fast is not None and len(fast) == len(scores)
    assert fast == usual
    assert [math.copysign(1.0, c.score) if c.score is not None else None for c in fast] == \
        [math.copysign(1.0, c.score) if c.score is not None else None for c in usual]  # -0.0 kept


def test_a_long_integer_or_nan_falls_back_to_the_usual_decoding(sqlite_store: Store) -> None:
    _seed(sqlite_store, 3)
    with sqlite_store.tx() as tx:
        tx.execute("UPDATE candidates SET payload = '{\"big\": 123456789012345678901234567890}' WHERE id = 2")
    fast, usual = _both(sqlite_store)
    assert fast is None  # orjson would read the integer as a float
    assert usual[1].payload == {"big": 123456789012345678901234567890}
    fast, _ = _both(sqlite_store, " WHERE id <> 2")
    assert fast is not None and len(fast) == 2
    with sqlite_store.tx() as tx:
        tx.execute("UPDATE candidates SET payload = '{\"x\": NaN}' WHERE id = 3")
    fast, usual = _both(sqlite_store, " WHERE id = 3")
    assert fast is None and math.isnan(usual[0].payload["x"])


def test_a_claim_reads_what_was_stored(sqlite_store: Store) -> None:
    _seed(sqlite_store, 5, payload=lambda i: {"big": 10**25} if i == 3 else {"n": i})
    dispatcher = Dispatcher(sqlite_store, {"capture": CapturingChannel(CaptureConfig(outbox="t"))})
    claimed = dispatcher.outbox.claim_candidates(utcnow(), 10)
    assert sorted(c.payload.get("n", c.payload.get("big")) for c in claimed) == [0, 1, 2, 4, 10**25]


def _heads(fixed: dict[str, str], varying: tuple[str, ...], values: tuple[str, ...]) -> tuple[bytes, bytes]:
    conn = _Connection("http", "127.0.0.1", 8080, HttpClient(allow_private=True))
    as_dict = {**fixed, **dict(zip(varying, values, strict=True))}
    headers = HeaderSet(fixed, varying)(*values)
    assert dict(headers) == as_dict
    return (_head("POST", "/a?b=1", conn, "ceap", headers, b"{}"),
            _head("POST", "/a?b=1", conn, "ceap", as_dict, b"{}"))


def test_a_header_set_gives_the_head_a_dict_gives() -> None:
    for fixed in ({}, {"X-A": "1", "Content-Type": "application/json"}, {"Host": "h", "user-agent": "me"}):
        fast, usual = _heads(fixed, ("webhook-id", "webhook-timestamp"), ("t:k", "17"))
        assert fast == usual
    fast, _ = _heads({"X-A": "1"}, ("content-length",), ("2",))
    assert fast.count(b"ontent-") == 1  # given, not added


@pytest.mark.parametrize(("fixed", "values"), [({"X-A": "1\r\nX-B: 2"}, ("k",)), ({"bad name:": "1"}, ("k",)),
                                               ({"X-A": "1"}, ("k\r\nX-Evil: 1",))])
def test_a_header_set_refuses_what_a_dict_refuses(fixed: dict[str, str], values: tuple[str, ...]) -> None:
    headers = HeaderSet(fixed, ("webhook-id",))(*values)  # a bad header fails each request, as before
    conn = _Connection("http", "127.0.0.1", 8080, HttpClient(allow_private=True))
    with pytest.raises(ValueError):
        _head("POST", "/", conn, "ceap", {**fixed, "webhook-id": values[0]}, b"")
    with pytest.raises(ValueError):
        _head("POST", "/", conn, "ceap", headers, b"")


class _Watching(CapturingChannel):
    """Notes the collector's state while it sends."""

    seen: list[tuple[int, int]] = []

    def send(self, messages: list[Message], journal: Any = None) -> list[SendResult]:
        type(self).seen.append((gc.get_freeze_count(), gc.get_threshold()[0]))
        return super().send(messages)


def test_a_run_keeps_its_start_heap_out_of_the_collector_and_gives_it_back(sqlite_store: Store) -> None:
    if gc.get_freeze_count():
        gc.unfreeze()
    before = gc.get_threshold()
    _seed(sqlite_store, 3)
    keep = [object() for _ in range(10)]  # alive at the start: frozen while the run lasts
    _Watching.seen = []
    stats = Dispatcher(sqlite_store, {"capture": _Watching(CaptureConfig(outbox="t"))}).run()
    assert stats.sent == 3 and keep
    assert _Watching.seen and all(frozen > 0 and young >= 50_000 for frozen, young in _Watching.seen)
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before
    _Watching.seen = []
    _seed(sqlite_store, 2, dedup_key=lambda i: f"second-{i}")
    Dispatcher(sqlite_store, {"capture": _Watching(CaptureConfig(outbox="t"))}, settle_heap=False).run()
    assert _Watching.seen and all(frozen == 0 for frozen, _ in _Watching.seen)


def test_a_heap_frozen_by_someone_else_stays_frozen() -> None:
    gc.freeze()
    try:
        before = gc.get_threshold()
        with settled_heap(), settled_heap():  # nested runs: the outer one restores
            assert gc.get_freeze_count() > 0 and gc.get_threshold()[0] >= 50_000
        assert gc.get_freeze_count() > 0 and gc.get_threshold() == before
    finally:
        gc.unfreeze()
