"""The column-wise shortcuts of the real-time hot path give what the value-by-value ways gave:
times as the store's text, the absence timers' "did the missing event come" check, a fired
timer's attributes, and the byte search that skips a per-value substring match."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ceap.pipeline.candidates_arrow import _windows
from ceap.realtime.attributes_text import may_hold
from ceap.realtime.events import EVENT_SCHEMA, validate_events
from ceap.realtime.state import EventLog
from ceap.realtime.timers import _marked, _missing_came
from ceap.store import open_store
from ceap.store.sqlite import _ISO, iso_text


@pytest.mark.parametrize("tz", ["UTC", None])
def test_times_as_text_column_wise_equal_strftime(tz: str | None) -> None:
    rng = random.Random(7)
    start = datetime(1, 1, 1)
    values = [datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999), None,
              datetime(999, 5, 6, 7, 8, 9, 10), datetime(2026, 11, 25, 10, 0)]
    values += [start + timedelta(microseconds=rng.randrange(315537897599999999)) for _ in range(2000)]
    column = pa.chunked_array([pa.array(values, pa.timestamp("us", tz=tz))])
    fast = iso_text(column)
    assert fast is not None
    assert fast.to_pylist() == pc.strftime(column, format=_ISO.replace(".%f", "")).to_pylist()


def test_times_of_another_unit_or_zone_are_left_to_strftime() -> None:
    assert iso_text(pa.array([datetime(2026, 1, 1)], pa.timestamp("ms", tz="UTC"))) is None
    assert iso_text(pa.array([datetime(2026, 1, 1)], pa.timestamp("us", tz="Europe/Paris"))) is None


def _came_slowly(timers: list[tuple[str, int, int]], events: list[tuple[str, int]]) -> list[bool]:
    return [any(c == customer and after < ts <= fire for c, ts in events) for customer, after, fire in timers]


@pytest.mark.parametrize("seed", range(20))
def test_the_missing_event_check_matches_one_timer_at_a_time(seed: int) -> None:
    rng = random.Random(seed)
    customers = [f"C{i}" for i in range(rng.randint(1, 8))]
    timers = []
    for _ in range(rng.randint(1, 40)):
        after = rng.randint(-50, 50)
        timers.append((rng.choice(customers), after, after + rng.randint(0, 20)))
    events = [(rng.choice([*customers, "other"]), rng.randint(-60, 80)) for _ in range(rng.randint(0, 40))]
    got = _missing_came(pa.array([t[0] for t in timers], pa.string()),
                        np.array([t[1] for t in timers], dtype=np.int64),
                        np.array([t[2] for t in timers], dtype=np.int64),
                        pa.array([e[0] for e in events], pa.string()),
                        np.array([e[1] for e in events], dtype=np.int64))
    assert got.tolist() == _came_slowly(timers, events)


@pytest.mark.parametrize("text", ['{}', '{"a":1}', '{"a":{"b":[1,2.5,"x"]},"c":null}', '{"__timer":"x"}',
                                  '{"__absence_gone":false,"a":1}', '{"a":"\\u00e9"}', '{"\\u005f_timer":1}',
                                  '{"a":"}"}', ""])
def test_a_fired_timer_keeps_its_event_attributes_and_gains_its_marks(text: str) -> None:
    marks = {"__timer": True, "__absence_gone": True}
    tail = "," + json.dumps(marks, separators=(",", ":"))[1:]
    merged = json.loads(_marked(text, marks, tail))
    assert merged == (json.loads(text) if text else {}) | marks
    assert list(merged) == list((json.loads(text) if text else {}) | marks)  # same key order


def test_the_byte_search_finds_every_value_holding_the_text() -> None:
    values = pa.array(["abc", None, "x\\ud800y", "", "plain"], pa.string())
    assert may_hold(values, b"\\ud")
    assert not may_hold(values, b"\x00")
    assert not may_hold(pa.array(["", None], pa.string()), b"a")
    assert may_hold(values.slice(3), b"\\ud")  # a slice: bytes outside it may say yes, never no wrongly


def test_a_nul_or_a_lone_surrogate_is_still_rejected_by_the_column_check() -> None:
    base = {"type": "login", "ts": "2026-11-25T10:00:00Z", "customer_id": "C1", "attributes": {}}
    items = [{**base, "id": "ok"}, {**base, "id": "a\x00b"}, {**base, "id": "c", "customer_id": "C\x001"},
             {**base, "id": "d", "attributes": {"x": "\ud800"}},
             {**base, "id": "e", "attributes": {"x": "\\ud800"}}]
    table, rejected = validate_events(items, decoded=True)
    assert table.column("event_id").to_pylist() == ["ok", "e"]
    assert [i for i, _ in rejected] == [1, 2, 3]


def _whole_windows_slowly(buckets: np.ndarray) -> list[str] | None:
    out = []
    for start in buckets.tolist():
        when = datetime.fromtimestamp(start, UTC)
        if not 1000 <= when.year <= 9999:
            return None
        out.append(when.strftime("%Y%m%dT%H%M%S"))
    return out


@pytest.mark.parametrize("size", [1, 60, 3600, 86400, 7 * 86400, 0.5])
def test_window_texts_column_wise_equal_value_by_value(size: float) -> None:
    rng = random.Random(size)
    for _ in range(30):
        micros = np.array([rng.randrange(-31_000_000_000 * 10**6, 253_402_300_900 * 10**6)
                           for _ in range(rng.randint(1, 40))], dtype=np.int64)
        buckets = np.floor((micros / 1e6) / size) * size
        assert _windows(buckets) == _whole_windows_slowly(buckets)


def _attrs(i: int) -> str:
    return '{"i":' + str(i) + "}"


def test_the_event_log_holds_the_same_rows_whether_a_batch_shares_its_tenant_or_not(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    log = EventLog(store, "stream-a")
    n = 600  # more rows than one statement holds

    def batch(tenants: list[str], first: int) -> pa.Table:
        start = datetime(2026, 11, 25)
        return pa.table({"event_id": [f"e{first + i}" for i in range(n)], "tenant_id": tenants,
                         "customer_id": [f"C{i % 7}" if i % 5 else None for i in range(n)],
                         "type": ["login"] * n, "ts": [start + timedelta(seconds=i) for i in range(n)],
                         "attributes": [_attrs(i) for i in range(n)]}, schema=EVENT_SCHEMA)

    log.append(batch(["t1"] * n, 0), pa.array(["p0"] * n, pa.string()))
    log.append(batch(["t1" if i % 2 else "t2" for i in range(n)], n), pa.array(["p0"] * n, pa.string()))
    log.append(batch(["t1"] * n, 0), pa.array(["p1"] * n, pa.string()))  # again: nothing changes
    with store.tx() as tx:
        rows = tx.execute("SELECT tenant_id, event_id, customer_id, type, ts, attributes, partition_key, "
                          "stream FROM event_log ORDER BY CAST(substr(event_id, 2) AS INTEGER)").fetchall()
    assert len(rows) == 2 * n
    for k, row in enumerate(rows):
        i = k % n
        tenant = "t1" if k < n or i % 2 else "t2"
        stamp = f"2026-11-25T00:{i // 60:02d}:{i % 60:02d}.000000Z"
        assert tuple(row) == (tenant, f"e{k}", f"C{i % 7}" if i % 5 else "", "login", stamp, _attrs(i),
                              "p0", "stream-a")
    store.close()
