"""A quick syntax check for the common SQL expressions, which needs no DuckDB.

``ceap validate`` parses every SQL expression of a program with DuckDB
(:func:`ceap.sqlexpr.check_expression`), and starting DuckDB's parser costs more CPU than
the rest of validating a program's SQL. Most expressions are simple: columns, literals,
function calls, arithmetic, comparisons, ``AND``/``OR``/``NOT``, ``BETWEEN``, ``IN``,
``IS [NOT] NULL``, ``LIKE``, ``CAST``, ``CASE``, ``INTERVAL 24 HOUR``, ``->>``. :func:`surely_parses`
recognises a subset of DuckDB's grammar and answers True only for an expression inside it;
anything else (an error, or a construct it does not know) is False and goes to DuckDB,
which accepts or rejects it with its own message. So the quick check can never let
through what DuckDB rejects: ``tests/test_sqlsyntax.py`` parses, with DuckDB, every
expression it accepts (the examples' and thousands of generated ones).

The subset is conservative: one comparison per operand of ``AND``/``OR`` (DuckDB rejects
``a = b = c``); no words that DuckDB reserves (beyond the constructs handled here); ASCII
identifiers; operators only from a fixed list (a longer run such as ``=-`` or ``--`` is
not split, it is left to DuckDB). It holds for the DuckDB versions in ``VERIFIED``; under
another one every expression goes to DuckDB.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version

#: DuckDB versions whose parser accepts everything :func:`surely_parses` accepts (checked by
#: tests/test_sqlsyntax.py, which also fails when the installed DuckDB is not listed)
VERIFIED = ("2.0.1",)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: DuckDB's keywords other than its unreserved ones (``duckdb_keywords()``): not a column
#: or function name without quotes; those handled below (AND, CAST, ...) are matched first
RESERVED = _words(
    """
all analyse analyze and anti any array as asc asof asymmetric at authorization between bigint
binary bit boolean both by case cast char character check coalesce collate collation column
columns concurrently constraint create cross dec decimal default deferrable desc describe
distinct do else end except exists extract false fetch float for foreign freeze from full
generated glob group grouping grouping_id having ilike in initially inner inout int integer
intersect interval into is isnull join lambda lateral leading left like limit map national
natural nchar none not notnull null nullif numeric offset on only or order out outer overlaps
overlay pivot pivot_longer pivot_wider placing position positional precision primary qualify
real references returning right row select semi setof show similar smallint some struct
substring summarize symmetric table tablesample then time timestamp to trailing treat trim
true try_cast tuple union unique unpack unpivot using values varchar variadic verbose when
where window with xmlattributes xmlconcat xmlelement xmlexists xmlforest xmlnamespaces
xmlparse xmlpi xmlroot xmlserialize xmltable
"""
)

#: function names DuckDB's parser turns into operators, checking their arguments
#: (``date(a, b)``, ``try(a, b)`` are errors); left to DuckDB
SPECIAL_CALLS = frozenset({"date", "if", "ifnull", "try", "unpack", "construct_array"})

#: types ``CAST(x AS type)`` may name here (with ``DECIMAL(p, s)``)
TYPES = _words(
    """
bigint blob bool boolean date decimal double float float4 float8 hugeint int int2 int4 int8
integer interval json real smallint text time timestamp timestamptz tinyint ubigint uinteger
usmallint utinyint uuid varchar
"""
)

#: units of ``INTERVAL n unit``
UNITS = frozenset(
    f"{unit}{plural}"
    for unit in (
        "year",
        "month",
        "week",
        "day",
        "hour",
        "minute",
        "second",
        "millisecond",
        "microsecond",
        "quarter",
        "decade",
        "century",
        "millennium",
    )
    for plural in ("", "s")
) - {"centurys", "millenniums"}

#: the binary operators of an operand (``a + b``), and the comparisons between two operands
ARITHMETIC = frozenset({"+", "-", "*", "/", "%", "||", "->>"})
COMPARISONS = frozenset({"=", "==", "<>", "!=", "<", "<=", ">", ">="})
#: nesting beyond this is left to DuckDB (which has its own depth limit)
MAX_DEPTH = 40

_TOKEN = re.compile(
    r"""
    (?P<space>[ \t\r\n]+)
  | (?P<number>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
  | (?P<string>'(?:[^']|'')*')
  | (?P<quoted>"(?:[^"]|"")+")
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>[-+*/<>=~!@\#%^&|`?]+)
  | (?P<punct>[(),])
""",
    re.VERBOSE,
)


class _Unsure(Exception):
    """The expression is outside the subset (it may still parse: DuckDB decides)."""


def _tokens(expr: str) -> list[tuple[str, str]]:
    """``(kind, text)`` pairs; words lower-cased. Raises _Unsure on anything else."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise _Unsure
        kind, text = match.lastgroup or "", match.group()
        pos = match.end()
        if kind == "space":
            continue
        if kind == "word":
            text = text.lower()
        elif kind == "op" and text not in ARITHMETIC | COMPARISONS:
            raise _Unsure  # e.g. "=-", "--" (a comment), "::"
        elif kind == "number" and pos < len(expr) and (expr[pos].isalnum() or expr[pos] in "_."):
            raise _Unsure  # "1e", "1_000", "1.2.3": DuckDB lexes these its own way
        tokens.append((kind, text))
    return tokens


class _Parser:
    """Recursive descent over the subset; every method consumes one construct or raises."""

    def __init__(self, tokens: list[tuple[str, str]]):
        self.tokens = tokens
        self.pos = 0
        self.depth = 0
        #: the positions of the tokens that name a column, in order
        self.columns: list[int] = []

    def peek(self, ahead: int = 0) -> tuple[str, str]:
        i = self.pos + ahead
        return self.tokens[i] if i < len(self.tokens) else ("end", "")

    def word(self, *words: str) -> bool:
        """Consume the next token if it is one of ``words`` (keywords)."""
        kind, text = self.peek()
        if kind == "word" and text in words:
            self.pos += 1
            return True
        return False

    def expect(self, text: str) -> None:
        kind, found = self.peek()
        if found != text or kind not in ("punct", "word", "op"):
            raise _Unsure
        self.pos += 1

    def expression(self) -> None:  # a OR b, a AND b, NOT a
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Unsure
        self.negation()
        while self.word("and", "or"):
            self.negation()
        self.depth -= 1

    def negation(self) -> None:
        while self.word("not"):
            pass
        self.predicate()

    def predicate(self) -> None:
        self.operand()
        kind, text = self.peek()
        if kind == "op" and text in COMPARISONS:
            self.pos += 1
            self.operand()
        elif self.word("is"):
            self.word("not")
            if not self.word("null"):
                raise _Unsure
        else:
            negated = self.word("not")
            if self.word("like", "ilike"):
                self.operand()
            elif self.word("between"):
                self.operand()
                self.expect("and")
                self.operand()
            elif self.word("in"):
                self.expect("(")
                self.expression_list()
            elif negated:
                raise _Unsure

    def expression_list(self) -> None:
        """``expr, expr, ... )`` (at least one)."""
        self.expression()
        while self.peek() == ("punct", ","):
            self.pos += 1
            self.expression()
        self.expect(")")

    def operand(self) -> None:  # a + b * -c ->> 'x'
        self.unary()
        while (kind := self.peek())[0] == "op" and kind[1] in ARITHMETIC:
            self.pos += 1
            self.unary()

    def unary(self) -> None:
        while self.peek() in (("op", "-"), ("op", "+")):
            self.pos += 1
        self.primary()

    def primary(self) -> None:
        kind, text = self.peek()
        self.pos += 1
        if kind in ("number", "string"):
            return
        if kind == "quoted":
            self.columns.append(self.pos - 1)
            return
        if (kind, text) == ("punct", "("):
            self.expression()
            self.expect(")")
            return
        if kind != "word":
            raise _Unsure
        if text in ("true", "false", "null"):
            return
        if text in ("cast", "try_cast"):
            self.expect("(")
            self.expression()
            self.expect("as")
            self.type_name()
            self.expect(")")
        elif text == "coalesce":
            self.expect("(")
            self.expression_list()
        elif text == "case":
            self.case()
        elif text == "interval":
            self.interval()
        elif text in RESERVED:
            raise _Unsure
        elif self.peek() == ("punct", "("):  # a function call
            if text in SPECIAL_CALLS:
                raise _Unsure
            self.pos += 1
            if self.peek() == ("punct", ")"):
                self.pos += 1
            else:
                self.expression_list()
        else:
            self.columns.append(self.pos - 1)

    def type_name(self) -> None:
        kind, text = self.peek()
        if kind != "word" or text not in TYPES:
            raise _Unsure
        self.pos += 1
        if text == "decimal" and self.peek() == ("punct", "("):
            self.pos += 1
            for i in range(2):
                if self.peek()[0] != "number" or not self.peek()[1].isdigit():
                    raise _Unsure
                self.pos += 1
                if i == 0 and self.peek() == ("punct", ","):
                    self.pos += 1
                    continue
                break
            self.expect(")")

    def case(self) -> None:
        if not (self.peek()[0] == "word" and self.peek()[1] == "when"):
            self.expression()  # CASE x WHEN ...
        if not self.word("when"):
            raise _Unsure
        while True:
            self.expression()
            self.expect("then")
            self.expression()
            if not self.word("when"):
                break
        if self.word("else"):
            self.expression()
        self.expect("end")

    def interval(self) -> None:
        kind = self.peek()[0]
        if kind in ("number", "string"):
            self.pos += 1
            unit_kind, unit = self.peek()
            if unit_kind == "word" and unit in UNITS:
                self.pos += 1
            elif kind == "number":
                raise _Unsure  # INTERVAL 3 alone
            return
        raise _Unsure


@lru_cache(maxsize=1)
def _verified() -> bool:
    try:
        return version("duckdb") in VERIFIED
    except PackageNotFoundError:
        return False


def surely_parses(expr: str) -> bool:
    """True if DuckDB parses ``SELECT (expr)`` as one statement for certain; False when
    unsure (DuckDB must decide)."""
    if not expr.isascii() or not _verified():
        return False
    try:
        parser = _Parser(_tokens(expr))
        if not parser.tokens:
            return False
        parser.expression()
        return parser.pos == len(parser.tokens)
    except _Unsure:
        return False


#: words DuckDB reads as a value, not a column, without parentheses
VALUE_WORDS = _words(
    """
current_catalog current_date current_role current_schema current_time current_timestamp
current_user localtime localtimestamp session_user user
"""
)


def column_names(expr: str) -> list[str] | None:
    """The column names ``expr`` reads, as written (a quoted one unquoted), in order, when
    :func:`surely_parses` holds for it; None otherwise (only DuckDB can tell)."""
    if not surely_parses(expr):
        return None
    parser = _Parser(_tokens(expr))
    parser.expression()
    raw = [m.group() for m in _TOKEN.finditer(expr) if m.lastgroup != "space"]
    names = []
    for i in parser.columns:
        text = raw[i]
        if text.startswith('"'):
            names.append(text[1:-1].replace('""', '"'))
        elif text.lower() in VALUE_WORDS:
            return None
        else:
            names.append(text)
    return names
