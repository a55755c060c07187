"""``sqlexpr.run_rows``: a small table passed inside the text of a prepared statement's
``EXECUTE`` gives the rows and types the registered Arrow table gives, for every column type
it takes (text with quotes and non-ASCII, integers, doubles at their edges, booleans,
microsecond times, nulls) and named parameters; a closed connection's statements are
prepared again on a new one; a failing query raises as before."""

from __future__ import annotations

import math
import random
from datetime import date, datetime, timedelta

import duckdb
import pyarrow as pa
import pytest

from ceap import sqlexpr
from ceap.sqlexpr import run_rows, sandboxed_connection

SQL = ("SELECT *, CASE WHEN i >= 3 THEN COALESCE(s <> 'x', false) ELSE false END AS k, "
       "least(1.0, 0.1 + i / 10.0) AS score, d * 2 AS d2, s || '!' AS s2, ts + INTERVAL 1 SECOND AS t2, "
       "$when AS w, $label AS label, $n AS n, $share AS share, $flag AS flag, $day AS day, $gap AS gap, "
       "to_json(batch) AS raw FROM batch ORDER BY ts, s")
DOUBLES = [0.1, -0.0, 1e-300, 1.7976931348623157e308, float("nan"), float("inf"), -float("inf"),
           0.30000000000000004, 123456789.123456789, None]


def _table(seed: int, n: int) -> pa.Table:
    rng = random.Random(seed)
    texts = ["x", "", "it's", "é ü 日本", 'q"t', "back\\slash", "tab\there", "line\nbreak", None]
    return pa.table({
        "s": pa.array([rng.choice(texts) for _ in range(n)], pa.string()),
        "i": pa.array([rng.choice([0, 3, -7, 2**62, None]) for _ in range(n)], pa.int64()),
        "j": pa.array([rng.choice([1, -(2**31), None]) for _ in range(n)], pa.int32()),
        "d": pa.array([rng.choice(DOUBLES) for _ in range(n)], pa.float64()),
        "b": pa.array([rng.choice([True, False, None]) for _ in range(n)], pa.bool_()),
        "ts": pa.array([rng.choice([datetime(2026, 12, 7, 12, 0, 0, rng.randrange(10**6)),
                                    datetime(2026, 1, 1), None]) for _ in range(n)], pa.timestamp("us")),
    })


def _params(seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    return {"when": datetime(2026, 12, 7, 12, 30, rng.randrange(60), rng.randrange(10**6)),
            "label": rng.choice(["a", "it's", None]), "n": rng.choice([5, 2**40, -1]),
            "share": rng.choice([0.25, 1e-9, 0.1]), "flag": rng.choice([True, False]),
            "day": date(2026, 12, 7), "gap": timedelta(days=1, seconds=5, microseconds=7)}


def _same(a: pa.Table, b: pa.Table) -> None:
    assert a.schema == b.schema
    for x, y in zip(a.to_pylist(), b.to_pylist(), strict=True):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], float) and math.isnan(x[k]):
                assert isinstance(y[k], float) and math.isnan(y[k])
            else:
                assert x[k] == y[k] and type(x[k]) is type(y[k]), k
                if isinstance(x[k], float):
                    assert math.copysign(1, x[k]) == math.copysign(1, y[k])


@pytest.mark.parametrize("seed", range(12))
def test_small_tables_in_the_statement_give_the_registered_tables_rows(seed: int) -> None:
    con = sandboxed_connection()
    con.execute("PRAGMA disable_optimizer")
    n = random.Random(seed).randrange(0, 25)
    table, params = _table(seed, n), _params(seed)
    inline = run_rows(con, SQL, table, params)
    registered = run_rows(con, SQL, table, params, small=0)
    _same(inline, registered)
    _same(run_rows(con, SQL, table, params), registered)  # prepared once, executed again
    con.close()


def test_with_queries_and_larger_tables() -> None:
    con = sandboxed_connection()
    sql = "WITH m AS (SELECT *, s IS NULL AS none FROM batch) SELECT * FROM m ORDER BY ts, s, i"
    small, large = _table(1, 10), _table(2, 200)
    _same(run_rows(con, sql, small), run_rows(con, sql, small, small=0))
    _same(run_rows(con, sql, large), run_rows(con, sql, large, small=0))
    con.close()


def test_a_new_connection_prepares_its_own_statements(monkeypatch: pytest.MonkeyPatch) -> None:
    first = sandboxed_connection()
    table = _table(3, 5)
    expected = run_rows(first, SQL, table, _params(3))
    first.close()
    second = sandboxed_connection()
    # as if the new connection had the id of the closed one
    for key, name in list(sqlexpr._PREPARED.items()):
        sqlexpr._PREPARED[(id(second), *key[1:])] = name
    _same(run_rows(second, SQL, table, _params(3)), expected)
    second.close()


def test_a_failing_query_raises_as_when_registered() -> None:
    con = sandboxed_connection()
    table = pa.table({"s": ["1", "x"]})
    with pytest.raises(duckdb.Error):
        run_rows(con, "SELECT CAST(s AS INTEGER) AS v FROM batch", table)
    with pytest.raises(duckdb.Error):
        run_rows(con, "SELECT CAST(s AS INTEGER) AS v FROM batch", table, small=0)
    assert run_rows(con, "SELECT CAST(s AS INTEGER) AS v FROM batch",
                    pa.table({"s": ["1", "2"]})).column("v").to_pylist() == [1, 2]
    con.close()


def test_other_types_and_parameters_are_registered() -> None:
    con = sandboxed_connection()
    table = pa.table({"x": pa.array([1.5], pa.float32()), "l": pa.array([[1, 2]])})
    assert run_rows(con, "SELECT * FROM batch", table).to_pylist() == [{"x": 1.5, "l": [1, 2]}]
    text = pa.table({"s": ["a\x00b"]})
    assert run_rows(con, "SELECT s FROM batch", text).to_pylist() == [{"s": "a\x00b"}]
    con.close()
