"""Keyed-state compaction (``ceap.realtime.keyed``). A shard merged with new runs
(``merge``) is, row for row, what sorting both stably by hash and dropping the events
before the cut gives. And whatever the sequence of micro-batches (sizes, partitions,
watermarks) and the shard, run and scan sizes, ``history``, ``event_ids`` and ``rows``
hold what a reference keeping every event in one table does: every event of the kept
types within ``keep`` of its partition's watermark, none twice, nothing never added, a
customer's events of one partition in the order they were added."""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import ceap.realtime.keyed as keyed
from ceap.realtime.events import EVENT_SCHEMA
from ceap.realtime.keyed import HASH, KeyedState, merge

T0 = datetime(2026, 11, 20, 10, 0)


def _chunk(rng: random.Random, n: int, start: int, customers: int = 6,
           types: tuple[str, ...] = ("x",), t0: datetime = T0, minutes: int = 300) -> pa.Table:
    return pa.table({
        "event_id": [f"e{start + i}" for i in range(n)],
        "tenant_id": [rng.choice(["t1", "t1", "t2"]) for _ in range(n)],
        "customer_id": [rng.choice([f"C{rng.randrange(customers)}", None]) for _ in range(n)],
        "type": [rng.choice(types) for _ in range(n)],
        "ts": pa.array([t0 + timedelta(minutes=rng.randrange(minutes)) for _ in range(n)],
                       pa.timestamp("us")),
        "attributes": [f'{{"k":{start + i}}}' for i in range(n)],
    }, schema=EVENT_SCHEMA)


def _sorted_both(old: pa.Table, new: pa.Table, since: datetime | None) -> tuple[pa.Table, np.ndarray]:
    """The former compaction: both concatenated, cut, sorted stably by hash."""
    table = pa.concat_tables([old, new])
    if since is not None:
        table = table.filter(pc.greater_equal(table.column("ts"), pa.scalar(since, pa.timestamp("us"))))
    hashes = table.column(HASH).to_numpy()
    order = np.argsort(hashes, kind="stable")
    return table.take(pa.array(order)).combine_chunks(), hashes[order]


@pytest.mark.parametrize("seed", range(12))
def test_a_merge_is_a_stable_sort_of_both(seed: int) -> None:
    rng = random.Random(seed)
    state = KeyedState({"x"}, timedelta(hours=1))
    shard = state._sorted(_chunk(rng, rng.randrange(0, 80), 0))
    for round_ in range(4):
        new = state._sorted(pa.concat_tables([_chunk(rng, rng.randrange(0, 30), 1000 * (round_ + 1) + 100 * j)
                                              for j in range(3)]))
        since = rng.choice([None, T0, T0 + timedelta(minutes=rng.randrange(300)), T0 + timedelta(days=1)])
        expected, hashes = _sorted_both(shard.table, new.table, since)
        merged = merge(shard, new, since)
        if merged is None:  # nothing new, nothing dropped
            assert shard.table.to_pylist() == expected.to_pylist()
            continue
        assert merged.table.to_pylist() == expected.to_pylist()
        assert merged.hashes.tolist() == hashes.tolist()
        shard = merged


def _ids(table: pa.Table) -> list[str]:
    return table.column("event_id").to_pylist()


@pytest.mark.parametrize("seed", range(16))
def test_any_sequence_of_batches_keeps_what_one_table_would(seed: int,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    monkeypatch.setattr(keyed, "COMPACT_EVERY", rng.choice([1, 2, 3, 16]))
    monkeypatch.setattr(keyed, "SHARD_ROWS", rng.choice([1, 3, 8, 64]))
    monkeypatch.setattr(keyed, "SCAN_BELOW", rng.choice([0, 40, 100_000]))
    keep = timedelta(minutes=rng.choice([20, 60, 240]))
    state = KeyedState({"x", "y"}, keep)
    added: list[tuple[str, dict[str, object]]] = []  # (partition, event) in the order added
    marks: dict[str, datetime] = {}
    if rng.random() < 0.5:  # restored from the log first
        first = _chunk(rng, rng.randrange(0, 60), 0, customers=12, types=("x", "y", "z"), minutes=60)
        state.load("p0", first)
        added += [("p0", e) for e in first.to_pylist() if e["type"] != "z"]
    for step in range(rng.randrange(10, 60)):
        names = rng.sample(["p0", "p1", "p2"], rng.randrange(1, 4))
        clock = T0 + timedelta(minutes=10 * step)
        events = _chunk(rng, rng.randrange(0, 25), 10_000 * (step + 1), customers=12, types=("x", "y", "z"),
                        t0=clock, minutes=90)
        parts = [rng.choice(names) for _ in range(events.num_rows)]
        for name in names:  # watermarks only move on (one a partition of the batch, some not given)
            if rng.random() < 0.8:
                marks[name] = max(marks.get(name, clock), clock + timedelta(minutes=rng.randrange(30)))
        state.add(events, pa.array(parts, pa.string()), {n: marks[n] for n in names if n in marks})
        added += [(p, e) for p, e in zip(parts, events.to_pylist(), strict=True) if e["type"] != "z"]
        asked = sorted({(rng.choice(["t1", "t2", "t3"]), f"C{rng.randrange(14)}")
                        for _ in range(rng.randrange(1, 8))})
        got = state.history(pa.array([c for _, c in asked], pa.string()),
                            pa.array([t for t, _ in asked], pa.string()))
        mine = [(p, e) for p, e in added if (e["tenant_id"], e["customer_id"]) in set(asked)]
        where = {e["event_id"]: p for p, e in mine}
        ids = _ids(got)
        assert len(ids) == len(set(ids)) and set(ids) <= set(where)  # none twice, none made up
        must = {e["event_id"] for p, e in mine if p not in marks or e["ts"] >= marks[p] - keep}
        assert must <= set(ids)  # every event within keep of its partition's watermark
        for p in {p for p, _ in mine}:  # a customer's events of a partition in the order added
            for key in asked:
                order = [e["event_id"] for q, e in mine
                         if q == p and (e["tenant_id"], e["customer_id"]) == key]
                assert [i for i in ids if i in set(order)] == [i for i in order if i in set(ids)]
        assert got.schema == EVENT_SCHEMA
    total = 0
    for p in ("p0", "p1", "p2"):
        held = state.event_ids(p).to_pylist()
        total += len(held)
        all_of_p = [e for q, e in added if q == p]
        assert not [k for k, n in Counter(held).items() if n > 1]
        assert set(held) <= {e["event_id"] for e in all_of_p}
        assert {e["event_id"] for e in all_of_p if p not in marks or e["ts"] >= marks[p] - keep} <= set(held)
    assert state.rows() == total
    assert state.nbytes() > 0 or total == 0
