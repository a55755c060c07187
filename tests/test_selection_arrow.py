"""A micro-batch's best row per customer (and subject) per dedup bucket picked in Arrow
(``ceap.pipeline.best_arrow``) gives the candidates and funnel counts the window
query gives, on random scored rows with equal scores, nulls and NaN among the columns
that break ties, customers without an id, several buckets and top-k."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from ceap.pipeline import selection
from ceap.pipeline.best_arrow import best_per_bucket
from ceap.pipeline.funnel import Funnel
from ceap.pipeline.plan import SCORE
from ceap.pipeline.selection import RunInfo, select
from ceap.spec.loading import parse_program
from ceap.sqlexpr import sandboxed_connection

T0 = datetime(2026, 11, 20, 10, 0)


def _spec(subject: bool, one_per_customer: bool, top_k: int | None) -> Any:
    source: dict[str, Any] = {"type": "events", "on": ["x"]}
    if subject:
        source["subject_id"] = "item"
    sel: dict[str, Any] = {"dedup_window": "30m", "one_per_customer": one_per_customer}
    if top_k:
        sel["top_k"] = top_k
    return parse_program({"name": "p", "source": source, "selection": sel,
                          "experiment": {"holdout": 0.25},
                          "action": {"type": "alert", "channels": ["email"],
                                     "payload_columns": ["level", "note"]}})


def _scored(seed: int, distinct_scores: bool) -> pa.Table:
    rng = random.Random(seed)
    n = rng.randrange(5, 120)
    names = ("customer_id", "item", "event_id", "event_ts", "level", "note", "ratio", SCORE)
    rows: dict[str, list[Any]] = {c: [] for c in names}
    for k in range(n):
        rows["customer_id"].append(None if rng.random() < 0.05 else f"C{rng.randrange(7)}")
        rows["item"].append(rng.choice(["a", "b", None]))
        rows["event_id"].append(f"e{k:03d}")
        # whole minutes: bucket edges hit exactly
        rows["event_ts"].append(T0 + timedelta(minutes=rng.randrange(120), seconds=rng.choice([0, 0, 59])))
        rows["level"].append(rng.choice([1, 2, 3, None]))
        rows["note"].append(rng.choice(["x", "y", "", None]))
        rows["ratio"].append(rng.choice([0.5, float("nan"), None, -1.0]))
        # top-k over customers of one score is arbitrary in the window query too
        rows[SCORE].append(rng.random() if distinct_scores else rng.choice([0.2, 0.5, 0.5, 0.9, 1.0]))
    return pa.table(rows, schema=pa.schema([
        ("customer_id", pa.string()), ("item", pa.string()), ("event_id", pa.string()),
        ("event_ts", pa.timestamp("us")), ("level", pa.int64()), ("note", pa.string()),
        ("ratio", pa.float64()), (SCORE, pa.float64())]))


def _run(spec: Any, scored: pa.Table) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    con = sandboxed_connection()
    con.execute("PRAGMA disable_optimizer")
    funnel = Funnel()
    info = RunInfo("default", "run-1", datetime(2026, 11, 20, 12, tzinfo=UTC), "none")
    table = select(con, scored, spec, info, funnel, None, event_time="event_ts")
    return sorted(table.to_pylist(), key=repr), funnel.to_dict()


@pytest.mark.parametrize(("subject", "one", "top_k"), [(False, True, None), (True, True, None),
                                                       (True, False, None), (False, True, 3)])
@pytest.mark.parametrize("seed", range(6))
def test_best_rows_picked_in_arrow_equal_the_window_querys(
        seed: int, subject: bool, one: bool, top_k: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec(subject, one, top_k)
    scored = _scored(seed, distinct_scores=top_k is not None)
    calls: list[int] = []
    original = selection.best_per_bucket

    def spy(*args: Any) -> Any:
        picked = original(*args)
        calls.append(picked.num_rows)
        return picked

    monkeypatch.setattr(selection, "best_per_bucket", spy)
    fast = _run(spec, scored)
    assert calls and calls[0] < scored.num_rows  # some rows were not the best of their bucket
    monkeypatch.setattr(selection, "best_per_bucket", lambda *a: None)
    assert fast == _run(spec, scored)


def test_rows_arrow_cannot_rank_are_left_to_the_window_query() -> None:
    spec = _spec(False, True, None)
    scored = _scored(1, distinct_scores=False)
    assert best_per_bucket(scored, spec, "event_ts", ["event_id"]) is not None
    as_text = scored.set_column(3, "event_ts", scored.column("event_ts").cast(pa.string()))
    assert best_per_bucket(as_text, spec, "event_ts", ["event_id"]) is None
    nested = scored.append_column("tags", pa.array([[1]] * scored.num_rows))
    assert best_per_bucket(nested, spec, "event_ts", ["event_id", "tags"]) is None
    assert best_per_bucket(scored, spec, "event_ts", ["missing"]) is None
