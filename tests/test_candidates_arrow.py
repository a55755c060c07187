"""A stream micro-batch's candidate rows made without a query (``ceap.pipeline.candidates_arrow``)
equal, row for row and in order, the ones ``selection._candidate_sql`` makes in DuckDB: on
random best rows with holdout and global control draws, shadow, digest, delay, priority,
subjects, top-k, payloads merged over the spec's payload, nulls that drop a payload key, and
values only the query writes (which then go to the query)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from ceap.pipeline import candidates_arrow, selection
from ceap.pipeline.funnel import Funnel
from ceap.pipeline.plan import SCORE
from ceap.pipeline.selection import RunInfo, select
from ceap.spec.loading import parse_program
from ceap.sqlexpr import sandboxed_connection

T0 = datetime(2026, 11, 20, 10, 0)

SPECS: dict[str, dict[str, Any]] = {
    "plain": {},
    "holdout": {"experiment": {"holdout": 0.3}},
    "global_control": {"experiment": {"holdout": 0.2}, "category": "marketing", "global": 0.25},
    "shadow": {"mode": "shadow", "experiment": {"holdout": 0.1}},
    "digest": {"digest": {"window": "1d"}},
    "delay_priority": {"delay": "2h", "expiry": "3d", "priority": 7},
    "subject": {"subject": True, "one_per_customer": False},
    "top_k": {"top_k": 3},
    "payload_base": {"payload": {"level": 9, "kind": "crash", "on": True, "none": None}},
    "transactional": {"category": "transactional", "global": 0.5, "template": "t1"},
}


def _spec(name: str) -> Any:
    o = SPECS[name]
    source: dict[str, Any] = {"type": "events", "on": ["x"]}
    if o.get("subject"):
        source["subject_id"] = "item"
    sel: dict[str, Any] = {"dedup_window": "30m", "one_per_customer": o.get("one_per_customer", True)}
    if o.get("top_k"):
        sel["top_k"] = o["top_k"]
    action: dict[str, Any] = {"type": "alert", "channels": ["email", "sms"],
                              "category": o.get("category", "transactional"),
                              "payload_columns": ["level", "note", "flag"], "payload": o.get("payload", {})}
    for key in ("delay", "expiry", "template"):
        if key in o:
            action[key] = o[key]
    if "digest" in o:
        action["digest"] = o["digest"]
        action["category"] = "marketing"
    spec: dict[str, Any] = {"name": "p", "source": source, "selection": sel, "action": action,
                            "experiment": o.get("experiment", {}), "priority": o.get("priority", 0)}
    if "mode" in o:
        spec["mode"] = o["mode"]
    return parse_program(spec)


def _best(seed: int, unusual: bool) -> pa.Table:
    rng = random.Random(seed)
    n = rng.randrange(1, 40)
    notes = ["x", "y z", "", None, "a-b_c.d/e"]
    notes += ['q"t', "back\\slash", "é", "tab\there"] if unusual else []
    rows: dict[str, list[Any]] = {c: [] for c in ("customer_id", "item", "event_id", "event_ts", "level",
                                                  "note", "flag", SCORE)}
    for k in range(n):
        rows["customer_id"].append(f"C{rng.randrange(50)}")
        rows["item"].append(rng.choice(["a", "b", None]))
        rows["event_id"].append(f"e{k:03d}")
        rows["event_ts"].append(T0 + timedelta(minutes=rng.randrange(600), seconds=rng.choice([0, 59]),
                                               microseconds=rng.randrange(10**6)))
        rows["level"].append(rng.choice([1, -2, 2**40, None]))
        rows["note"].append(rng.choice(notes))
        rows["flag"].append(rng.choice([True, False, None]))
        rows[SCORE].append(rng.choice([0.2, 0.5, 0.5, 0.9, 1.0, rng.random()]))
    return pa.table(rows, schema=pa.schema([
        ("customer_id", pa.string()), ("item", pa.string()), ("event_id", pa.string()),
        ("event_ts", pa.timestamp("us")), ("level", pa.int64()), ("note", pa.string()),
        ("flag", pa.bool_()), (SCORE, pa.float64())]))


def _run(spec: Any, best: pa.Table, share: float, arrow: bool,
         monkeypatch: pytest.MonkeyPatch) -> tuple[list[dict[str, Any]], dict[str, Any], int]:
    made: list[int] = []
    original = candidates_arrow.candidate_rows

    def spy(*args: Any) -> Any:
        out = original(*args)
        made.append(out is not None)
        return out

    with monkeypatch.context() as m:
        m.setattr(selection.candidates_arrow, "candidate_rows", spy)
        m.setattr(selection, "best_per_bucket", lambda scored, *a: scored)  # the rows are the best
        if not arrow:
            m.setattr(selection.candidates_arrow, "supported", lambda *a: False)
        con = sandboxed_connection()
        con.execute("PRAGMA disable_optimizer")
        funnel = Funnel()
        info = RunInfo("default", "run-1", datetime(2026, 11, 20, 12, tzinfo=UTC), "m1", global_control=share)
        table = select(con, best, spec, info, funnel, None, event_time="event_ts")
        con.close()
    return table.to_pylist(), funnel.to_dict(), sum(made)


def _same(rows: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """The same rows in the same order of score, customer and subject (rows equal on those,
    a customer's two buckets, come in any order from the query too)."""
    assert sorted(rows, key=repr) == sorted(expected, key=repr)
    order = [(r["score"], r["customer_id"], r["subject_id"]) for r in rows]
    assert order == [(r["score"], r["customer_id"], r["subject_id"]) for r in expected]


@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("seed", range(5))
def test_candidate_rows_made_in_python_equal_the_querys(name: str, seed: int,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec(name)
    best = _best(seed, unusual=False)
    if SPECS[name].get("top_k"):  # ties at the k-th place are arbitrary in the query too
        best = best.set_column(best.schema.get_field_index(SCORE), SCORE,
                               pa.array([i / 100 for i in range(best.num_rows)], pa.float64()))
        best = best.set_column(0, "customer_id", pa.array([f"C{i}" for i in range(best.num_rows)]))
    share = float(SPECS[name].get("global", 0.0))
    rows, funnel, made = _run(spec, best, share, True, monkeypatch)
    expected, expected_funnel, _ = _run(spec, best, share, False, monkeypatch)
    assert made == 1  # the Python way made them
    _same(rows, expected)
    assert funnel == expected_funnel
    if name in ("holdout", "global_control"):
        assert {r["arm"] for r in expected} > {"treatment"} or len(expected) < 5


@pytest.mark.parametrize("seed", range(8))
def test_values_only_the_query_writes_go_to_the_query(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec("payload_base")
    best = _best(seed, unusual=True)
    rows, funnel, _ = _run(spec, best, 0.0, True, monkeypatch)
    expected, expected_funnel, _ = _run(spec, best, 0.0, False, monkeypatch)
    _same(rows, expected)
    assert funnel == expected_funnel


def test_programs_the_python_way_does_not_cover() -> None:
    schema = _best(0, False).schema
    assert candidates_arrow.supported(_spec("plain"), schema)
    float_base = parse_program({"name": "p", "source": {"type": "events", "on": ["x"]},
                                "action": {"type": "alert", "channels": ["email"], "payload": {"w": 0.5},
                                           "payload_columns": ["level"]}})
    assert not candidates_arrow.supported(float_base, schema)
    with_context = parse_program({"name": "p", "source": {"type": "events", "on": ["x"], "context": ["note"]},
                                  "action": {"type": "alert", "channels": ["email"]}})
    assert not candidates_arrow.supported(with_context, schema)
    variants = parse_program({"name": "p", "source": {"type": "events", "on": ["x"]},
                              "experiment": {"variants": [{"name": "a"}, {"name": "b"}]},
                              "action": {"type": "alert", "channels": ["email"]}})
    assert not candidates_arrow.supported(variants, schema)


@pytest.mark.parametrize("extra", [0, 1])
def test_at_most_max_rows_made_in_python_more_by_the_query(extra: int,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-row loop is bounded: ``MAX_ROWS`` rows are made in Python, one more by the
    query; the same candidates either way."""
    n = candidates_arrow.MAX_ROWS + extra
    spec = _spec("holdout")
    rows = [_best(seed, unusual=False) for seed in range(40)]
    best = pa.concat_tables(rows).slice(0, n)
    while best.num_rows < n:
        best = pa.concat_tables([best, best]).slice(0, n)
    best = best.set_column(0, "customer_id", pa.array([f"C{i}" for i in range(n)]))
    made_rows, funnel, made = _run(spec, best, 0.0, True, monkeypatch)
    expected, expected_funnel, _ = _run(spec, best, 0.0, False, monkeypatch)
    assert len(expected) == n
    assert made == (1 if extra == 0 else 0)
    _same(made_rows, expected)
    assert funnel == expected_funnel
