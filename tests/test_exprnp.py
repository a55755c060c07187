"""SQL expressions evaluated with numpy (``ceap.pipeline.exprnp``) give DuckDB's values,
DuckDB being the oracle: thousands of random expressions over integers, doubles, booleans
and text with nulls (arithmetic, comparisons, three-valued logic, ``least``/``greatest``,
``CASE``, ``IN``, ``BETWEEN``, decimal literals); where DuckDB fails, or computes in
decimals, the expression is refused or its evaluation gives way (``Unsure``)."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from ceap.pipeline import exprnp

SCHEMA = pa.schema([("i1", pa.int64()), ("i2", pa.int32()), ("d1", pa.float64()), ("d2", pa.float64()),
                    ("b1", pa.bool_()), ("s1", pa.string()), ("ts", pa.timestamp("us"))])
KINDS = {f.name: exprnp.kind_of(f.type) for f in SCHEMA}
INTS = ["0", "1", "3", "-2", "10", "2147483647"]
DECIMALS = ["0.1", "1.0", "2.5", "10.0", "0.25", "3.", ".5"]
DOUBLES = ["i1", "d1", "d2"]
TEXTS = ["'ios'", "'web'", "''", "'4.0.0'", "'it''s'"]


def _table(rng: random.Random, n: int) -> pa.Table:
    def maybe(value: Any) -> Any:
        return None if rng.random() < 0.15 else value
    return pa.table({
        "i1": [maybe(rng.randrange(-5, 20)) for _ in range(n)],
        "i2": [maybe(rng.randrange(0, 4)) for _ in range(n)],
        "d1": [maybe(rng.choice([0.5, 2.25, -3.0, 1e-3, 7.1, 0.1, 1 / 3, 12345.678])) for _ in range(n)],
        "d2": [maybe(rng.choice([0.0, 1.0, 2.5, -0.75])) for _ in range(n)],
        "b1": [maybe(rng.random() < 0.5) for _ in range(n)],
        "s1": [maybe(rng.choice(["ios", "web", "", "4.0.0", "it's", "Web"])) for _ in range(n)],
        "ts": pa.array([None] * n, pa.timestamp("us")),
    }, schema=SCHEMA)


def _num(rng: random.Random, depth: int) -> str:
    r = rng.random()
    if depth <= 0 or r < 0.3:
        return rng.choice([*DOUBLES, "i2", *INTS, *DECIMALS, "NULL"])
    if r < 0.7:
        op = rng.choice(["+", "-", "*", "/", "+", "*"])
        return f"({_num(rng, depth - 1)} {op} {_num(rng, depth - 1)})"
    if r < 0.8:
        return f"-{_num(rng, depth - 1)}"
    if r < 0.9:
        fn = rng.choice(["least", "greatest"])
        return f"{fn}({', '.join(_num(rng, depth - 1) for _ in range(rng.randrange(1, 4)))})"
    if r < 0.85:
        return f"CAST(({_num(rng, depth - 1)}) AS DOUBLE)"
    return f"CASE WHEN {_bool(rng, depth - 1)} THEN {_num(rng, depth - 1)} ELSE {_num(rng, depth - 1)} END"


def _bool(rng: random.Random, depth: int) -> str:
    r = rng.random()
    if depth <= 0 or r < 0.15:
        return rng.choice(["b1", "true", "false", "NULL", "i1 > 3", "s1 = 'ios'"])
    if r < 0.45:
        op = rng.choice(["=", "<>", "!=", "<", "<=", ">", ">="])
        if rng.random() < 0.25:
            return f"s1 {op} {rng.choice(TEXTS)}"
        return f"{_num(rng, depth - 1)} {op} {_num(rng, depth - 1)}"
    if r < 0.65:
        return f"({_bool(rng, depth - 1)} {rng.choice(['AND', 'OR'])} {_bool(rng, depth - 1)})"
    if r < 0.72:
        return f"NOT {_bool(rng, depth - 1)}"
    if r < 0.8:
        return f"{rng.choice(['i1', 'd1', 's1', 'b1'])} IS {rng.choice(['', 'NOT '])}NULL"
    if r < 0.88:
        values = ", ".join(rng.choice([*INTS[:4], "NULL", "2.5"]) for _ in range(rng.randrange(1, 4)))
        return f"i1 {rng.choice(['IN', 'NOT IN'])} ({values})"
    if r < 0.94:
        return f"{_num(rng, depth - 1)} BETWEEN {_num(rng, 0)} AND {_num(rng, 0)}"
    return f"CASE WHEN {_bool(rng, depth - 1)} THEN {_bool(rng, depth - 1)} END"


def _duckdb(con: duckdb.DuckDBPyConnection, table: pa.Table, expr: str) -> list[Any] | None:
    con.register("batch", table)
    try:
        return [r[0] for r in con.execute(f"SELECT ({expr}) AS x FROM batch").fetchall()]
    except duckdb.Error:
        return None
    finally:
        con.unregister("batch")


def _ours(expr: str, table: pa.Table) -> tuple[str, list[Any]] | None:
    made = exprnp.compile_expr(expr, KINDS)
    if made is None:
        return None
    fn, kind = made
    cols = {f.name: exprnp.column(table.column(f.name), KINDS[f.name])  # type: ignore[arg-type]
            for f in SCHEMA if KINDS[f.name] is not None}
    try:
        out = fn(cols, table.num_rows)
    except exprnp.Unsure:
        return None
    return kind, [(v.item() if hasattr(v, "item") else v) if ok else None
                  for v, ok in zip(out.values, out.valid, strict=True)]


def _same(kind: str, got: list[Any], expected: list[Any]) -> None:
    for g, e in zip(got, expected, strict=True):
        if e is None or g is None:
            assert g is None and e is None, (g, e)
        elif isinstance(e, Decimal):
            assert kind == exprnp.DEC and g == float(e), (g, e)
        elif isinstance(e, float):
            assert kind == exprnp.DBL and isinstance(g, float) and g == e, (g, e)
        elif isinstance(e, bool):
            assert kind == exprnp.BOOL and g is e, (g, e)
        elif isinstance(e, int):
            assert kind == exprnp.INT and g == e and not isinstance(g, bool), (g, e)
        else:
            assert kind == exprnp.STR and g == e, (g, e)


@pytest.mark.parametrize("seed", range(8))
def test_random_expressions_give_duckdbs_values(seed: int) -> None:
    rng = random.Random(seed)
    con = duckdb.connect()
    con.execute("PRAGMA disable_optimizer")
    table = _table(rng, 40)
    evaluated = refused = 0
    for _ in range(300):
        expr = _bool(rng, 3) if rng.random() < 0.5 else _num(rng, 3)
        expected = _duckdb(con, table, expr)
        ours = _ours(expr, table)
        if ours is None:
            refused += 1
            continue
        assert expected is not None, f"DuckDB fails on {expr!r}, which was evaluated here"
        try:
            _same(*ours, expected)
        except AssertionError as exc:
            raise AssertionError(f"{expr!r}: {exc}") from None
        evaluated += 1
    assert evaluated > 100  # most are evaluated here: the test compares something


@pytest.mark.parametrize("expr", [
    "least(1.0, 0.1 + i1 / 10.0)", "i1 >= 3", "s1 <> '4.0.0'", "CASE WHEN b1 THEN 0.8 ELSE d1 END",
    "i1 IN (1, NULL)", "NOT (b1 AND NULL)", "b1 OR NULL", "greatest(d1, NULL, i2)", "-d2 * 2",
    "i1 BETWEEN 1 AND 3", "CAST((i1 / 3) AS DOUBLE) > CAST(0.5 AS DOUBLE)", "TRY_CAST(i2 AS FLOAT8) * 1.5",
    "d1 BETWEEN 1 AND 2.5", "s1 < 'j'", "least(s1, 'm')", "(i1 + i2) * 3 - 1",
])
def test_the_common_shapes_are_evaluated_and_equal(expr: str) -> None:
    table = _table(random.Random(1), 60)
    table = table.set_column(3, "d2", pa.array([1.0] * 60))  # no -0.0 from -d2
    con = duckdb.connect()
    ours = _ours(expr, table)
    assert ours is not None
    expected = _duckdb(con, table, expr)
    assert expected is not None
    _same(*ours, expected)


@pytest.mark.parametrize("expr", [
    "i1 + 0.5",                 # integer with a decimal: DuckDB's decimal arithmetic
    "i1 BETWEEN 1 AND 2.5", "i1 > 2.5",
    "CAST(i1 AS INTEGER)", "CAST(b1 AS DOUBLE)", "CAST(s1 AS DOUBLE)", "abs(d1)", "s1 || 'x'",
    "s1 LIKE 'i%'", "i1 // 2", "i1 % 2",
    "s1 = 1",                   # text against a number: DuckDB casts
    "ts > ts", "x.i1 > 1", "I1 > 1", "1e3 > d1", "count(*)", "i1 > 1 -- c", "i1 > (SELECT 1)",
    "i1 IS DISTINCT FROM 2", "b1 = 1", "2.5 + 0.5",
])
def test_what_is_not_evaluated_here_is_refused(expr: str) -> None:
    assert exprnp.compile_expr(expr, KINDS) is None


@pytest.mark.parametrize("values, expr", [
    ([2_000_000_000, 1], "i1 * 2"),       # an integer of 2^31 or more: DuckDB's overflow rules
    ([1, 0], "1 / i1"),                   # a division by zero: infinity
    ([0, 1], "0.0 * -d1"),                # -0.0
])
def test_values_duckdb_may_treat_otherwise_give_way(values: list[int], expr: str) -> None:
    table = pa.table({"i1": pa.array(values, pa.int64()), "d1": pa.array([float(v) for v in values])})
    kinds: dict[str, str | None] = {"i1": exprnp.INT, "d1": exprnp.DBL}
    made = exprnp.compile_expr(expr, kinds)
    assert made is not None
    cols = {n: exprnp.column(table.column(n), k) for n, k in kinds.items() if k is not None}
    with pytest.raises(exprnp.Unsure):
        made[0](cols, 2)


def test_the_installed_duckdb_is_one_verified(monkeypatch: pytest.MonkeyPatch) -> None:
    # a new DuckDB: run this file against it, then add its version to VERIFIED
    assert duckdb.__version__ in exprnp.VERIFIED
    assert exprnp.compile_expr("i1 > 1", KINDS) is not None
    monkeypatch.setattr(exprnp, "VERIFIED", ())
    assert exprnp.compile_expr("i1 > 1", KINDS) is None
