"""SQL expressions over Arrow batches, evaluated by DuckDB.

Filters, features and expression scorers are written as SQL expressions
(``cart_value > 50 AND country = 'US'``). They are parsed when the spec is
validated (common expressions by a quick check that needs no DuckDB, see
:mod:`ceap.sqlsyntax`; an expression that DuckDB parsed is remembered, see
:mod:`ceap.sqlcache`) and run in a DuckDB connection that cannot touch files or the network: an
expression sees the batch and nothing else.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
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


#: a table of at most this many rows goes to DuckDB inside the text of its query (``run_rows``):
#: the text grows with the rows, and above about 30 rows registering the table costs less
SMALL_ROWS = 24
#: the Arrow types ``run_rows`` writes as text, and the DuckDB types they are cast back to
_TEXT_TYPES = {"string": "VARCHAR", "large_string": "VARCHAR", "int64": "BIGINT", "int32": "INTEGER",
               "double": "DOUBLE", "bool": "BOOLEAN", "timestamp[us]": "TIMESTAMP"}
#: ``run_rows``'s prepared statements: (connection id, query, columns) -> statement name
_PREPARED: dict[tuple[int, str, tuple[tuple[str, str], ...]], str] = {}
_PREPARED_MAX = 64
_NAMES = itertools.count()


def run_rows(con: duckdb.DuckDBPyConnection, sql: str, table: pa.Table,
             params: dict[str, object] | None = None, small: int = SMALL_ROWS) -> pa.Table:
    """``run_arrow`` of ``sql``, whose FROM items name ``table`` as ``batch``.

    A small table (at most ``small`` rows, of plain column types, and parameters of
    plain Python types) is not registered: the query is prepared once per connection,
    query and columns, with ``batch`` a CTE unnesting one list parameter per column, and
    each run is an ``EXECUTE`` whose text holds the values (DuckDB takes no bound
    parameters for it): every value as text, cast back to its column's type (text
    round-trips each of these types exactly), each parameter cast to the type DuckDB
    gives that Python value. A stream's micro-batch then pays neither the registration
    of an Arrow table nor the binding of its query, only their execution: the same
    query over the same values, the same rows."""
    if table.num_rows <= small and (params is None or isinstance(params, dict)):
        types = tuple((f.name, _TEXT_TYPES.get(str(f.type), "")) for f in table.schema)
        if all(t for _, t in types) and len({n.lower() for n, _ in types}) == len(types):
            args = _literals(table, params or {})
            if args is not None:
                return _run_prepared(con, sql, types, args)
    con.register(BATCH, table)
    try:
        return run_arrow(con, sql, params)
    finally:
        con.unregister(BATCH)


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _literal(value: object) -> str | None:
    """A Python value as SQL text of the value and type DuckDB binds it as; None when
    it is of another type."""
    import datetime as dt

    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        kind = "INTEGER" if -2**31 <= value < 2**31 else "BIGINT" if -2**63 <= value < 2**63 else None
        return f"CAST('{value}' AS {kind})" if kind else None
    if isinstance(value, float):
        return f"CAST('{value!r}' AS DOUBLE)"
    if isinstance(value, str):
        return None if "\x00" in value else f"CAST({_text(value)} AS VARCHAR)"
    if isinstance(value, dt.datetime):
        return None if value.tzinfo is not None else f"CAST('{value.isoformat()}' AS TIMESTAMP)"
    if isinstance(value, dt.date):
        return f"CAST('{value.isoformat()}' AS DATE)"
    if isinstance(value, dt.timedelta):
        return f"(to_days({value.days}) + to_microseconds({value.seconds * 1_000_000 + value.microseconds}))"
    return None


def _literals(table: pa.Table, params: dict[str, object]) -> dict[str, str] | None:
    """``EXECUTE``'s arguments: each column as a list of texts, then the parameters."""
    import pyarrow as pa_
    import pyarrow.compute as pc

    args: dict[str, str] = {}
    for i, column in enumerate(table.columns):
        if pa_.types.is_timestamp(column.type):
            text = pc.utf8_replace_slice(pc.cast(column, pa_.string()), 10, 11, "T")
        elif pa_.types.is_floating(column.type):
            values = column.to_pylist()
            args[f"__ceap_c{i}"] = "[" + ", ".join("NULL" if v is None else f"'{v!r}'" for v in values) + "]"
            continue
        else:
            text = pc.cast(column, pa_.string()) if not pa_.types.is_string(column.type) else column
        values = text.to_pylist()
        if any(v is not None and "\x00" in v for v in values):
            return None
        args[f"__ceap_c{i}"] = "[" + ", ".join("NULL" if v is None else _text(v) for v in values) + "]"
    for name, value in params.items():
        text = _literal(value)
        if text is None or not name.isidentifier():
            return None
        args[name] = text
    return args


def _run_prepared(con: duckdb.DuckDBPyConnection, sql: str, types: tuple[tuple[str, str], ...],
                  args: dict[str, str]) -> pa.Table:
    import warnings

    import duckdb

    key = (id(con), sql, types)
    call = ", ".join(f"{quote(n)} := {v}" for n, v in args.items())
    for attempt in (0, 1):
        name = _PREPARED.get(key)
        if name is None:
            name = f"__ceap_q{next(_NAMES)}"
            columns = ", ".join(f"unnest(CAST(CAST($__ceap_c{i} AS VARCHAR[]) AS {t}[])) AS {quote(n)}"
                                for i, (n, t) in enumerate(types))
            body = sql.lstrip()
            cte = f"{BATCH} AS (SELECT {columns})"
            body = (f"WITH {cte}, {body[5:]}" if body[:5].upper() == "WITH " else f"WITH {cte} {body}")
            con.execute(f"PREPARE {name} AS {body}")
            if len(_PREPARED) >= _PREPARED_MAX:
                _PREPARED.clear()
            _PREPARED[key] = name
        try:
            con.execute(f"EXECUTE {name}({call})")
            break
        except duckdb.Error:  # or a connection with the id of one closed since: prepare on it
            _PREPARED.pop(key, None)
            with contextlib.suppress(duckdb.Error):
                con.execute(f"DEALLOCATE {name}")
            if attempt:
                raise
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_COPY_WARNING, category=UserWarning)
        result: pa.Table = con.to_arrow_table()
    return result


def quote(name: str) -> str:
    """A column name as a SQL identifier."""
    return '"' + name.replace('"', '""') + '"'
