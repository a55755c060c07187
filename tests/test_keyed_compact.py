"""A keyed-state compaction merges the new events into the partition's sorted table
(``KeyedState._compact``): the same table, row for row, and the same hashes as sorting
both stably by hash and dropping the events before the cut, on random chunks with many
events of one customer, two tenants, and cuts that drop none, some or all."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ceap.realtime.events import EVENT_SCHEMA
from ceap.realtime.keyed import HASH, KeyedState, _Partition

T0 = datetime(2026, 11, 20, 10, 0)


def _chunk(rng: random.Random, n: int, start: int) -> pa.Table:
    return pa.table({
        "event_id": [f"e{start + i}" for i in range(n)],
        "tenant_id": [rng.choice(["t1", "t1", "t2"]) for _ in range(n)],
        "customer_id": [rng.choice([f"C{rng.randrange(6)}", None]) for _ in range(n)],
        "type": ["x"] * n,
        "ts": pa.array([T0 + timedelta(minutes=rng.randrange(300)) for _ in range(n)], pa.timestamp("us")),
        "attributes": [f'{{"k":{start + i}}}' for i in range(n)],
    }, schema=EVENT_SCHEMA)


def _sorted_both(state: KeyedState, part: _Partition, since: datetime | None) -> tuple[pa.Table, np.ndarray]:
    """The former compaction: both concatenated, cut, sorted stably by hash."""
    recent = pa.concat_tables(part.recent)
    recent = recent.append_column(HASH, state._hash(recent.column("tenant_id"), recent.column("customer_id")))
    table = pa.concat_tables([part.table, recent])
    if since is not None:
        table = table.filter(pc.greater_equal(table.column("ts"), pa.scalar(since, pa.timestamp("us"))))
    hashes = table.column(HASH).to_numpy()
    order = np.argsort(hashes, kind="stable")
    return table.take(pa.array(order)).combine_chunks(), hashes[order]


@pytest.mark.parametrize("seed", range(12))
def test_compaction_merges_as_a_stable_sort_of_both(seed: int) -> None:
    rng = random.Random(seed)
    state = KeyedState({"x"}, timedelta(hours=1))
    state.load("p", _chunk(rng, rng.randrange(0, 80), 0))
    part = state.partitions["p"]
    for round_ in range(4):
        part.recent = [_chunk(rng, rng.randrange(0, 30), 1000 * (round_ + 1) + 100 * j) for j in range(3)]
        since = rng.choice([None, T0, T0 + timedelta(minutes=rng.randrange(300)), T0 + timedelta(days=1)])
        expected, hashes = _sorted_both(state, part, since)
        state._compact(part, since)
        assert part.table.to_pylist() == expected.to_pylist()
        assert part.hashes.tolist() == hashes.tolist()
        assert not part.recent
