"""SQL expressions over Arrow batches, evaluated by DuckDB.

Filters, features and expression scorers are written as SQL expressions
(``cart_value > 50 AND country = 'US'``). They are parsed when the spec is
validated (common expressions by a quick check that needs no DuckDB, see
:mod:`ceap.sqlsyntax`; an expression that DuckDB parsed is remembered, see
:mod:`ceap.sqlcache`) and run in a DuckDB connection that cannot touch files or the network: an
expression sees the batch and nothing else.
"""

from __future__ import annotations

import importlib
import re
from typing import TYPE_CHECKING, Any

from ceap.sqlcache import parsed_expressions
from ceap.sqlsyntax import surely_parses

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

BATCH = "batch"
#: compiled on first use (by re's cache): validating a program never needs it
_MISSING_COLUMN = r'Referenced column "([^"]+)" not found'


def check_expression(expr: str) -> str:
    """Return ``expr`` if it parses as one SQL expression, else raise ValueError."""
    if not expr or not expr.strip():
        raise ValueError("expression is empty")
    if surely_parses(expr):  # inside the subset DuckDB surely parses: no need to start it
        return expr
    parsed = parsed_expressions()
    if expr in parsed:  # parsed before by this DuckDB version: no need to import it
        return expr
    engine = _parser()
    try:
        statements = engine.extract_statements(f"SELECT ({expr})")
    except engine.Error as exc:
        raise ValueError(f"invalid SQL expression: {_first_line(exc)}") from None
    if len(statements) != 1:
        raise ValueError("must be one SQL expression, not several statements")
    parsed.add(expr)
    return expr


def _parser() -> Any:
    """DuckDB's compiled module, which the ``duckdb`` package re-exports (the same
    ``extract_statements`` and ``Error``): importing it alone and parsing costs about
    0.04 s of CPU, through the package 0.08 s. Imported here, not at start-up: validating
    a program without SQL, or with its SQL remembered, skips it."""
    try:
        engine: Any = importlib.import_module("_duckdb")
    except ImportError:  # a DuckDB laid out otherwise
        engine = None
    if not (hasattr(engine, "extract_statements") and hasattr(engine, "Error")):
        import duckdb

        engine = duckdb
    return engine


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]


def missing_column(exc: Exception) -> str | None:
    """The column a DuckDB binder error complains about, if any."""
    match = re.search(_MISSING_COLUMN, str(exc))
    return match.group(1) if match else None


def sandboxed_connection() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with no file or network access."""
    import duckdb

    con = duckdb.connect(config={"enable_external_access": False})
    con.execute("SET TimeZone = 'UTC'")
    return con


def evaluate(con: duckdb.DuckDBPyConnection, table: pa.Table | pa.RecordBatch,
             select: str, params: list[object] | None = None) -> pa.Table:
    """Run ``SELECT <select> FROM batch`` over ``table``."""
    con.register(BATCH, table)
    try:
        return con.sql(f"SELECT {select} FROM {BATCH}", params=params or None).to_arrow_table()
    finally:
        con.unregister(BATCH)


#: ``run_arrow``'s queries parsed, by their text: a stream's micro-batches run the same few
#: queries again and again, and parsing one took 0.3-1.2 ms of a 1.4-4 ms query
_PARSED: dict[str, Any] = {}
_PARSED_MAX = 64
#: what DuckDB says when a result is read as Arrow from the connection (``run_arrow``)
_COPY_WARNING = "Arrow output on a DB-API result makes an extra copy"


def run_arrow(con: duckdb.DuckDBPyConnection, sql: str,
              params: dict[str, object] | list[object] | None = None) -> pa.Table:
    """Run one query at once and take its rows as Arrow. ``con.sql`` makes a lazy
    relation, binding the query once to describe it and again to run it; on the small
    tables of a stream's micro-batch that second bind (2-3 ms a query) costs far more
    than the copy of the rows DuckDB warns this way makes, so the warning is not shown."""
    import warnings

    statement = _PARSED.get(sql)
    if statement is None:
        parsed = con.extract_statements(sql)
        statement = parsed[0] if len(parsed) == 1 else sql
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[sql] = statement
    con.execute(statement, params)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_COPY_WARNING, category=UserWarning)
        table: pa.Table = con.to_arrow_table()
    return table


def quote(name: str) -> str:
    """A column name as a SQL identifier."""
    return '"' + name.replace('"', '""') + '"'
