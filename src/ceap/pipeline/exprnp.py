"""A restricted set of SQL expressions evaluated with numpy, with DuckDB's results.

A stream's micro-batch of a few rows pays more for DuckDB binding a query than for
evaluating it; a program's filters and score are most often plain arithmetic and
comparisons over its columns. ``compile_expr`` takes an expression's tree from DuckDB's
own parser (``json_serialize_sql``) and accepts only nodes whose meaning it reproduces
exactly; anything else (a cast other than a number's to DOUBLE, a function other than
``least``/``greatest``, decimal arithmetic, a comparison between types DuckDB would cast,
a name that is not exactly one column's) makes it return None, and the caller keeps DuckDB. Evaluating raises
``Unsure`` for values where DuckDB could differ or fail (an integer of 2^31 or more, a
double that is not finite or is -0.0, at any step), and the caller runs DuckDB instead.

The types, as DuckDB binds them: integers (INTEGER and BIGINT columns and literals) stay
integers under ``+ - *``; ``/`` divides in doubles; a double anywhere makes the operation
double (an integer cast exactly: all are below 2^31); a decimal literal (digits with a
point, at most 15) is a double only next to a double (DuckDB casts it: the one rounding of
its digits, as Python's ``float``); with an integer or another decimal DuckDB computes in
decimals, left to it. ``AND``/``OR``/``NOT`` are three-valued; ``least``/``greatest``
skip nulls; ``IN`` is a chain of ``=`` under ``OR`` (a null among the values: null, not
false), ``BETWEEN`` two comparisons under ``AND``; ``CASE`` takes the first true branch.
Text compares by bytes (UTF-8 keeps code point order: Python's). This holds for the DuckDB
versions in ``VERIFIED`` (checked by tests/test_exprnp.py); under another one nothing is
evaluated here.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

#: value kinds: integer, double, decimal literal, boolean, text, untyped null
INT, DBL, DEC, BOOL, STR, NULL = "int", "double", "decimal", "bool", "str", "null"
_INT_LIMIT = 2 ** 31
_DECIMAL = re.compile(r"^\d{1,15}\.\d{0,15}$|^\.\d{1,15}$")
_COMPARE = {"COMPARE_EQUAL": np.equal, "COMPARE_NOTEQUAL": np.not_equal, "COMPARE_LESSTHAN": np.less,
            "COMPARE_GREATERTHAN": np.greater, "COMPARE_LESSTHANOREQUALTO": np.less_equal,
            "COMPARE_GREATERTHANOREQUALTO": np.greater_equal}


#: DuckDB versions whose values tests/test_exprnp.py checked (the test fails on another one)
VERIFIED = ("2.0.1",)
_PARSER: duckdb.DuckDBPyConnection | None = None  # for json_serialize_sql, one at a time
_PARSER_LOCK = threading.Lock()


class Unsure(Exception):
    """A value DuckDB might treat otherwise: evaluate with DuckDB."""


@dataclass
class Col:
    """A column's values (nulls hold any value) and which are valid."""

    kind: str
    values: np.ndarray
    valid: np.ndarray


Expr = Callable[[dict[str, Col], int], Col]


def kind_of(arrow_type: pa.DataType) -> str | None:
    """The kind of an Arrow column here, or None when its values are not evaluated here."""
    if pa.types.is_signed_integer(arrow_type):
        return INT
    if pa.types.is_float64(arrow_type):
        return DBL
    if pa.types.is_boolean(arrow_type):
        return BOOL
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return STR
    return None


def column(array: pa.Array | pa.ChunkedArray, kind: str) -> Col:
    """An Arrow column as a ``Col`` (integers checked below 2^31, doubles finite and not -0.0)."""
    valid = np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool) if array.null_count \
        else np.ones(len(array), dtype=bool)
    if kind == STR:
        values = np.asarray(array.to_numpy(zero_copy_only=False), dtype=object)
        return Col(STR, np.where(valid, values, ""), valid)
    filled = array.fill_null(False if kind == BOOL else 0) if array.null_count else array
    values = np.asarray(filled.to_numpy(zero_copy_only=False))
    col = Col(kind, values.astype(np.int64) if kind == INT else values, valid)
    _check(col)
    return col


def _check(col: Col) -> Col:
    if col.kind == INT and np.any(np.abs(col.values[col.valid]) >= _INT_LIMIT):
        raise Unsure("an integer of 2^31 or more")
    if col.kind == DBL:
        v = col.values[col.valid]
        if not np.all(np.isfinite(v)) or np.any((v == 0) & np.signbit(v)):
            raise Unsure("a double that is not finite, or -0.0")
    return col


def parse(expr: str) -> dict[str, Any] | None:
    """DuckDB's tree of ``expr`` (None when it is not one expression, or has a comment or
    a semicolon: in the caller's query it would not stand alone)."""
    if any(mark in expr for mark in ("--", "/*", ";")):
        return None
    with _PARSER_LOCK:
        global _PARSER
        if _PARSER is None:
            _PARSER = duckdb.connect(config={"enable_external_access": False})
        try:
            tree = json.loads(_PARSER.execute("SELECT json_serialize_sql(?)",
                                              [f"SELECT {expr}"]).fetchall()[0][0])
        except duckdb.Error:
            return None
    statements = tree.get("statements") or []
    if tree.get("error") or len(statements) != 1:
        return None
    node = statements[0].get("node", {})
    if node.get("type") != "SELECT_NODE" or node.get("from_table", {}).get("type") != "EMPTY" \
            or len(node.get("select_list", [])) != 1 or node.get("modifiers") \
            or any(node.get(k) for k in ("where_clause", "group_expressions", "having", "qualify",
                                         "sample")) \
            or (node.get("cte_map") or {}).get("map"):
        return None
    return node["select_list"][0]  # type: ignore[no-any-return]


def compile_expr(expr: str, kinds: dict[str, str | None]) -> tuple[Expr, str] | None:
    """An evaluator of ``expr`` over the columns of ``kinds`` (every column's name: its kind,
    None for one not evaluated here) and its result's kind; None when the expression is
    outside what is evaluated here (or DuckDB's version is not one ``VERIFIED``)."""
    if duckdb.__version__ not in VERIFIED:
        return None
    tree = parse(expr)
    if tree is None:
        return None
    try:
        return _node(tree, kinds)
    except _Refused:
        return None


class _Refused(Exception):
    pass


def _const(kind: str, value: Any) -> Expr:
    def run(cols: dict[str, Col], n: int) -> Col:
        dtype = {INT: np.int64, DBL: np.float64, DEC: np.float64, BOOL: bool, STR: object}.get(kind, bool)
        return Col(kind, np.full(n, value if value is not None else 0, dtype=dtype),
                   np.full(n, value is not None, dtype=bool))
    return run


def _node(node: dict[str, Any], kinds: dict[str, str | None]) -> tuple[Expr, str]:
    if node.get("alias"):
        raise _Refused
    cls, typ = node.get("class"), node.get("type")
    if cls == "CONSTANT":
        lit = node["literal"]
        text, kind = lit.get("text", ""), lit.get("kind")
        if kind == "INTEGER" and abs(int(text)) < _INT_LIMIT:
            return _const(INT, int(text)), INT
        if kind == "NUMERIC" and _DECIMAL.match(text):
            return _const(DEC, float(text)), DEC
        if kind == "STRING":
            return _const(STR, text), STR
        if kind == "BOOLEAN" and text in ("true", "false"):
            return _const(BOOL, text == "true"), BOOL
        if kind == "NULL_LITERAL":
            return _const(NULL, None), NULL
        raise _Refused
    if cls == "COLUMN_REF":
        names = node.get("column_names", [])
        if len(names) != 1 or kinds.get(names[0]) is None:
            raise _Refused
        name, kind = names[0], kinds[names[0]]
        if sum(1 for k in kinds if k.lower() == name.lower()) != 1:
            raise _Refused  # DuckDB matches names without regard to case
        assert kind is not None
        return (lambda cols, n: cols[name]), kind
    if cls == "COMPARISON" and typ in _COMPARE:
        return _compare(typ, _node(node["left"], kinds), _node(node["right"], kinds))
    if cls == "BETWEEN" and typ == "COMPARE_BETWEEN":
        x, lo, hi = (_node(node[k], kinds) for k in ("input", "lower", "upper"))
        ge = _compare("COMPARE_GREATERTHANOREQUALTO", x, lo)
        le = _compare("COMPARE_LESSTHANOREQUALTO", x, hi)
        return _logic(True, [ge[0], le[0]]), BOOL
    if cls == "CONJUNCTION" and typ in ("CONJUNCTION_AND", "CONJUNCTION_OR"):
        parts = [_node(c, kinds) for c in node["children"]]
        if any(k not in (BOOL, NULL) for _, k in parts):
            raise _Refused
        return _logic(typ == "CONJUNCTION_AND", [f for f, _ in parts]), BOOL
    if cls == "OPERATOR":
        children = [_node(c, kinds) for c in node.get("children", [])]
        if typ == "OPERATOR_NOT" and len(children) == 1 and children[0][1] in (BOOL, NULL):
            inner = children[0][0]
            return (lambda cols, n: _not(inner(cols, n))), BOOL
        if typ in ("OPERATOR_IS_NULL", "OPERATOR_IS_NOT_NULL") and len(children) == 1:
            inner, null = children[0][0], typ == "OPERATOR_IS_NULL"

            def is_null(cols: dict[str, Col], n: int) -> Col:
                v = inner(cols, n).valid
                return Col(BOOL, ~v if null else v.copy(), np.ones(n, dtype=bool))
            return is_null, BOOL
        if typ in ("COMPARE_IN", "COMPARE_NOT_IN") and len(children) >= 2:
            eqs = [_compare("COMPARE_EQUAL", children[0], c)[0] for c in children[1:]]
            found = _logic(False, eqs)
            if typ == "COMPARE_IN":
                return found, BOOL
            return (lambda cols, n: _not(found(cols, n))), BOOL
        raise _Refused
    if cls == "FUNCTION" and not node.get("distinct") and not node.get("filter") \
            and not node.get("order_bys", {}).get("orders") and not node.get("schema") \
            and not node.get("catalog"):
        name = node.get("function_name", "")
        args = [_node(a["expression"], kinds) for a in node.get("arguments", [])]
        if any(a.get("name") for a in node.get("arguments", [])):
            raise _Refused
        if node.get("is_operator") and name in ("+", "-", "*", "/"):
            return _arith(name, args)
        if not node.get("is_operator") and name in ("least", "greatest") and args:
            return _extreme(name == "least", args)
        raise _Refused
    if cls == "CAST" and typ == "OPERATOR_CAST":  # to a double: the scorer's CAST((expr) AS DOUBLE)
        target = node.get("type_expr") or {}
        child = _node(node["child"], kinds)
        if str(target.get("type_name", "")).upper() not in ("DOUBLE", "FLOAT8") or target.get("children") \
                or target.get("catalog") or target.get("schema") or child[1] not in (INT, DBL, DEC, NULL):
            raise _Refused
        return _as(child, DBL), DBL  # a number never fails this cast: TRY_CAST alike
    if cls == "CASE" and typ == "CASE_EXPR":
        checks = [(_node(c["when_expr"], kinds), _node(c["then_expr"], kinds)) for c in node["case_checks"]]
        other = _node(node["else_expr"], kinds)
        if any(w[1] not in (BOOL, NULL) for w, _ in checks):
            raise _Refused
        kind = _common([t[1] for _, t in checks] + [other[1]])
        return _case([(w[0], _as(t, kind)) for w, t in checks], _as(other, kind), kind), kind
    raise _Refused


def _common(kinds: list[str]) -> str:
    """The kind DuckDB gives values of these kinds together, when it is one evaluated here."""
    known = {k for k in kinds if k != NULL}
    if not known:
        return NULL
    if len(known) == 1:
        return known.pop()
    if known <= {INT, DBL, DEC} and DBL in known:
        return DBL
    raise _Refused  # integer with decimal: DuckDB computes in decimals; text with numbers: casts


def _as(part: tuple[Expr, str], kind: str) -> Expr:
    """``part`` cast to ``kind`` (an integer or a decimal literal to a double)."""
    fn, have = part
    if have in (kind, NULL) or kind == NULL:
        return fn
    if kind == DBL and have in (INT, DEC):
        def cast(cols: dict[str, Col], n: int) -> Col:
            c = fn(cols, n)
            return Col(DBL, c.values.astype(np.float64), c.valid)
        return cast
    raise _Refused


def _compare(op: str, left: tuple[Expr, str], right: tuple[Expr, str]) -> tuple[Expr, str]:
    kind = _common([left[1], right[1]])
    if kind == DEC and left[1] != right[1]:
        raise _Refused
    lf, rf, ufunc = _as(left, kind), _as(right, kind), _COMPARE[op]

    def run(cols: dict[str, Col], n: int) -> Col:
        a, b = lf(cols, n), rf(cols, n)
        valid = a.valid & b.valid
        return Col(BOOL, np.asarray(ufunc(a.values, b.values), dtype=bool) & valid, valid)
    return run, BOOL


def _logic(conjunction: bool, parts: list[Expr]) -> Expr:
    def run(cols: dict[str, Col], n: int) -> Col:
        first = parts[0](cols, n)
        value, valid = first.values & first.valid, first.valid
        for part in parts[1:]:
            c = part(cols, n)
            v = c.values & c.valid
            if conjunction:  # false if either is false; else null if either is null
                false = (valid & ~value) | (c.valid & ~v)
                valid, value = false | (valid & c.valid), ~false & valid & c.valid
            else:  # true if either is true; else null if either is null
                true = value | v
                valid, value = true | (valid & c.valid), true
        return Col(BOOL, value & valid, valid)
    return run


def _not(c: Col) -> Col:
    return Col(BOOL, ~c.values & c.valid, c.valid)


def _arith(op: str, args: list[tuple[Expr, str]]) -> tuple[Expr, str]:
    if len(args) == 1 and op == "-":
        (fn, kind), = args
        if kind not in (INT, DBL, DEC):
            raise _Refused
        return (lambda cols, n: _check(Col(kind, -(c := fn(cols, n)).values, c.valid))), kind
    if len(args) != 2 or any(k not in (INT, DBL, DEC) for _, k in args):
        raise _Refused
    kinds = {k for _, k in args}
    if op != "/" and DBL not in kinds and kinds != {INT}:
        raise _Refused  # decimals with integers or decimals: DuckDB's decimal arithmetic
    kind = DBL if op == "/" or DBL in kinds else INT
    lf, rf = _as(args[0], kind), _as(args[1], kind)
    ufunc = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide}[op]

    def run(cols: dict[str, Col], n: int) -> Col:
        a, b = lf(cols, n), rf(cols, n)
        valid = a.valid & b.valid
        with np.errstate(all="ignore"):
            values = ufunc(a.values, np.where(b.valid, b.values, 1) if op == "/" else b.values)
        return _check(Col(kind, values, valid))
    return run, kind


def _extreme(least: bool, args: list[tuple[Expr, str]]) -> tuple[Expr, str]:
    kind = _common([k for _, k in args])
    if kind not in (INT, DBL, STR, BOOL) or (kind != DBL and len({k for _, k in args} - {NULL}) > 1):
        raise _Refused
    fns = [_as(a, kind) for a in args]
    pick = np.minimum if least else np.maximum

    def run(cols: dict[str, Col], n: int) -> Col:
        out = fns[0](cols, n)
        values, valid = out.values.copy(), out.valid.copy()
        for fn in fns[1:]:
            c = fn(cols, n)
            both = valid & c.valid
            if kind == STR:
                better = np.array([(x < y) if least else (x > y) for x, y in zip(c.values, values,
                                                                                 strict=True)], dtype=bool)
                chosen = np.where(better, c.values, values)
            else:
                chosen = pick(values, c.values)
            values = np.where(both, chosen, np.where(c.valid, c.values, values))
            valid = valid | c.valid
        return Col(kind, values, valid)
    return run, kind


def _case(checks: list[tuple[Expr, Expr]], other: Expr, kind: str) -> Expr:
    def run(cols: dict[str, Col], n: int) -> Col:
        out = other(cols, n)
        values, valid = out.values.copy(), out.valid.copy()
        for when, then in reversed(checks):  # the first true branch wins
            w = when(cols, n)
            hit = w.values & w.valid
            t = then(cols, n)
            values = np.where(hit, t.values, values)
            valid = np.where(hit, t.valid, valid)
        return Col(kind, values, valid)
    return run
