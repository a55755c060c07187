"""The quick SQL syntax check never accepts what DuckDB rejects, and covers the examples."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from ceap import sqlsyntax
from ceap.sqlsyntax import surely_parses

ROOT = Path(__file__).resolve().parent.parent


def duckdb_parses(expr: str) -> bool:
    """What ceap.sqlexpr.check_expression asks DuckDB."""
    try:
        return len(duckdb.extract_statements(f"SELECT ({expr})")) == 1
    except duckdb.Error:
        return False


def test_verified_for_the_installed_duckdb() -> None:
    # a new DuckDB: run this file against it, then add its version to VERIFIED
    assert duckdb.__version__ in sqlsyntax.VERIFIED
    words = duckdb.sql(
        "SELECT keyword_name FROM duckdb_keywords() WHERE keyword_category <> 'unreserved'"
    ).fetchall()
    assert {w for (w,) in words} == sqlsyntax.RESERVED


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


def _example_expressions() -> list[str]:
    """The SQL of programs/: features, filters' expr, source columns' where."""
    found = []
    for path in sorted((ROOT / "programs").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        found.extend(data.get("features", {}).values())
        found.extend(f["expr"] for f in data.get("filters", []) if "expr" in f)
        found.extend(s for s in _strings(data.get("source", {})) if "->>" in s)
    return found


def test_the_examples_sql_needs_no_duckdb() -> None:
    expressions = _example_expressions()
    assert len(expressions) > 40
    for expr in expressions:
        assert surely_parses(expr), expr
        assert duckdb_parses(expr), expr


@pytest.mark.parametrize(
    "expr",
    [
        "a = b = c",
        "a < b <= c",
        "1e",
        "1_000",
        "a =-1",
        "--x",
        "a /* c */",
        "1; SELECT 2",
        "a) , (b",
        '""',
        "coalesce()",
        "true(1)",
        "x BETWEEN 1 AND 2 BETWEEN 3 AND 4",
        "INTERVAL -1 day",
        "INTERVAL 3",
        "count(*)",
        "x::int",
        "t.x",
        "select",
        "a AND",
        "NOT",
        "f(a,)",
        "(a",
        "a)",
        "'open",
        "CAST(a AS DOUBLE",
        "CASE WHEN a THEN 1",
        "a IS",
        "a NOT",
        "x IN ()",
        "é = 1",
        "date(a, 1)",
        "1 2",
        "a b",
        "date '2024-01-01'",
        "",
    ],
)
def test_left_to_duckdb(expr: str) -> None:
    assert not surely_parses(expr)


WORDS = [
    "a",
    "churned_at",
    "value",
    "name",
    "day",
    "type",
    "year",
    "first",
    "filter",
    "lifetime_value",
    "x1",
    "_y",
    "status",
    "date",
    "greatest",
    "unpack",
    "columns",
    "try",
    "if",
    "replace",
    "list",
]
RISKY = [
    "select",
    "from",
    "order",
    "and",
    "or",
    "not",
    "in",
    "is",
    "null",
    "true",
    "case",
    "when",
    "then",
    "else",
    "end",
    "between",
    "like",
    "cast",
    "as",
    "interval",
    "coalesce",
    "try_cast",
    "columns",
    "exists",
    "row",
    "array",
    "::",
    ".",
    ";",
    "--",
    "/*",
    "*/",
    "=-",
    "<-",
    "->",
    "=>",
    ":=",
    "$1",
    "?",
    "[",
    "]",
    "{",
    "}",
    "'",
    '"',
    "e",
    "1e",
    "0x1",
    "1.2.3",
    "é",
    "\t",
    "\n",
    "  ",
]
UNITS = ["DAY", "days", "HOUR", "minute", "week", "months", "century"]
OPS = ["+", "-", "*", "/", "%", "||", "->>"]
CMPS = ["=", "==", "<>", "!=", "<", "<=", ">", ">="]
TYPES = [
    "DOUBLE",
    "INTEGER",
    "VARCHAR",
    "DATE",
    "TIMESTAMP",
    "DECIMAL(10, 2)",
    "BOOLEAN",
    "int",
    "bigint",
    "float",
    "json",
]


def _gen(rng: random.Random, depth: int = 0) -> str:
    """A random expression, mostly inside the quick check's subset, sometimes outside."""
    if depth > 4 or rng.random() < 0.3:
        return rng.choice(
            [
                rng.choice(WORDS),
                str(rng.randint(0, 999)),
                f"{rng.random():.3f}",
                "1.e5",
                ".5",
                "'x'",
                "'it''s'",
                '"Odd Col"',
                '"a""b"',
                "TRUE",
                "false",
                "NULL",
                f"INTERVAL {rng.randint(1, 90)} {rng.choice(UNITS)}",
                "INTERVAL '1 day'",
                "now()",
            ]
        )
    sub = lambda: _gen(rng, depth + 1)  # noqa: E731
    return rng.choice(
        [
            lambda: f"{sub()} {rng.choice(OPS)} {sub()}",
            lambda: f"{sub()} {rng.choice(CMPS)} {sub()}",
            lambda: f"{sub()} {rng.choice(['AND', 'OR', 'and'])} {sub()}",
            lambda: f"NOT {sub()}",
            lambda: f"-{sub()}",
            lambda: f"({sub()})",
            lambda: f"{sub()} IS {rng.choice(['', 'NOT '])}NULL",
            lambda: f"{sub()} {rng.choice(['', 'NOT '])}{rng.choice(['LIKE', 'ILIKE'])} {sub()}",
            lambda: f"{sub()} {rng.choice(['', 'NOT '])}BETWEEN {sub()} AND {sub()}",
            lambda: (
                f"{sub()} {rng.choice(['', 'NOT '])}IN ({', '.join(sub() for _ in range(rng.randint(1, 3)))})"
            ),
            lambda: f"{rng.choice(WORDS)}({', '.join(sub() for _ in range(rng.randint(0, 3)))})",
            lambda: f"coalesce({', '.join(sub() for _ in range(rng.randint(1, 3)))})",
            lambda: f"{rng.choice(['CAST', 'TRY_CAST'])}({sub()} AS {rng.choice(TYPES)})",
            lambda: f"CASE WHEN {sub()} THEN {sub()} {rng.choice(['', f'ELSE {sub()} '])}END",
            lambda: f"CASE {sub()} WHEN {sub()} THEN {sub()} END",
            lambda: f"{sub()}{rng.choice(CMPS + OPS)}{sub()}",  # no spaces: operator runs
        ]
    )()


def _mutate(rng: random.Random, expr: str) -> str:
    """``expr`` with a token dropped, doubled, swapped or a risky one inserted."""
    parts = expr.split(" ")
    i = rng.randrange(len(parts))
    action = rng.randrange(4)
    if action == 0 and len(parts) > 1:
        del parts[i]
    elif action == 1:
        parts.insert(i, parts[i])
    elif action == 2:
        j = rng.randrange(len(parts))
        parts[i], parts[j] = parts[j], parts[i]
    else:
        parts.insert(i, rng.choice(RISKY + CMPS + OPS + WORDS))
    return " ".join(parts)


def test_never_accepts_what_duckdb_rejects() -> None:
    rng = random.Random(16)
    accepted = rejected_by_quick = 0
    for _ in range(6000):
        expr = _gen(rng)
        for candidate in (expr, _mutate(rng, expr), _mutate(rng, _mutate(rng, expr))):
            if surely_parses(candidate):
                accepted += 1
                assert duckdb_parses(candidate), candidate
            else:
                rejected_by_quick += 1
    # both sides exercised: most generated expressions are in the subset, mutants mostly not
    assert accepted > 3000 and rejected_by_quick > 3000, (accepted, rejected_by_quick)


def test_every_function_and_unreserved_word_works_as_a_name() -> None:
    # the subset takes any word DuckDB does not reserve as a column or function name
    names = {n for (n,) in duckdb.sql("SELECT DISTINCT function_name FROM duckdb_functions()").fetchall()}
    names |= {
        n
        for (n,) in duckdb.sql(
            "SELECT keyword_name FROM duckdb_keywords() WHERE keyword_category = 'unreserved'"
        ).fetchall()
    }
    names |= {n.lower() for (n,) in duckdb.sql("SELECT type_name FROM duckdb_types()").fetchall()}
    names |= {"date", "if", "ifnull", "try", "unpack", "construct_array", "foo"}
    checked = 0
    for name in sorted(names):
        for expr in (
            f"{name}()",
            f"{name}(a)",
            f"{name}(a, 1)",
            f"{name}(a, 1, 2)",
            f"{name}(a, 1, 2, 3)",
            f"{name} + 1",
            f"{name} IS NULL",
            f"NOT {name}",
            f"{name} IN (1)",
            f"f({name}) ->> 'k'",
            f"{name} LIKE 'a%'",
        ):
            if surely_parses(expr):
                checked += 1
                assert duckdb_parses(expr), expr
    assert checked > 5000


def test_checking_simple_sql_imports_no_duckdb() -> None:
    code = (
        "import sys\nfrom ceap.sqlexpr import check_expression\n"
        "check_expression(\"date_diff('day', churned_at, run_date) BETWEEN 30 AND 90\")\n"
        "print('_duckdb' in sys.modules, 'duckdb' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={"CEAP_CACHE_DIR": "", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")},
    )
    assert proc.stdout.split() == ["False", "False"]
