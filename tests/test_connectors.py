"""The built-in connectors: CSV, JSON Lines and Parquet files, and SQL databases
(SQLite files and the real PostgreSQL server)."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from ceap.connectors.files import CsvConnector, JsonlConnector, ParquetConnector
from ceap.connectors.sql import SqlConnector
from ceap.errors import SourceError
from ceap.plugin import PluginContext
from ceap.testing import MemoryConnector

ROWS = [{"customer_id": f"c{i:02d}", "spend": round(i * 12.5, 2), "visits": i,
         "country": "US" if i % 3 else "FR", "active": i % 2 == 0} for i in range(10)]


def read(connector: Any) -> pa.Table:
    return pa.Table.from_batches(list(connector.read()), schema=connector.schema())


def write_csv(path: Path, rows: list[dict[str, Any]], delimiter: str = ",") -> None:
    def cell(v: Any) -> str:
        return str(v).lower() if isinstance(v, bool) else str(v)
    lines = [delimiter.join(rows[0])] + [delimiter.join(cell(v) for v in r.values()) for r in rows]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """The same rows as CSV, JSONL and Parquet, whole and split in two parts."""
    for fmt in ("csv", "jsonl", "parquet"):
        (tmp_path / fmt).mkdir()
        for name, rows in (("all", ROWS), ("part-1", ROWS[:4]), ("part-2", ROWS[4:])):
            path = tmp_path / fmt / f"{name}.{fmt}"
            if fmt == "csv":
                write_csv(path, rows)
            elif fmt == "jsonl":
                path.write_text("".join(json.dumps(r) + "\n" for r in rows))
            else:
                pq.write_table(pa.Table.from_pylist(rows), path)
    return tmp_path


FILES = {"csv": CsvConnector, "jsonl": JsonlConnector, "parquet": ParquetConnector}


@pytest.mark.parametrize("fmt", sorted(FILES))
@pytest.mark.parametrize("path", [
    "{fmt}/all.{fmt}",
    "{fmt}/part-*.{fmt}",
    ["{fmt}/part-1.{fmt}", "{fmt}/part-2.{fmt}"],
    "**/part-?.{fmt}",
], ids=["path", "glob", "list", "recursive-glob"])
def test_files_read_paths_globs_and_lists(fmt: str, path: str | list[str], data: Path) -> None:
    given = path.format(fmt=fmt) if isinstance(path, str) else [p.format(fmt=fmt) for p in path]
    connector = FILES[fmt].from_dict({"type": fmt, "path": given}, PluginContext(base_dir=data))
    table = read(connector)
    assert table.sort_by("customer_id").to_pylist() == ROWS
    assert table.schema.field("spend").type == pa.float64()
    assert table.schema.field("visits").type == pa.int64()
    assert table.schema.field("active").type == pa.bool_()
    assert connector.describe() == (given if isinstance(given, str) else ", ".join(given))


def test_absolute_paths_ignore_the_project_dir(data: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = PluginContext(base_dir=tmp_path_factory.mktemp("elsewhere"))
    connector = ParquetConnector.from_dict({"type": "parquet", "path": str(data / "parquet/all.parquet")},
                                           elsewhere)
    assert read(connector).num_rows == len(ROWS)


@pytest.mark.parametrize("fmt", sorted(FILES))
def test_a_missing_file_names_the_path(fmt: str, data: Path) -> None:
    connector = FILES[fmt].from_dict({"type": fmt, "path": [f"{fmt}/all.{fmt}", f"{fmt}/gone.{fmt}"]},
                                     PluginContext(base_dir=data))
    with pytest.raises(SourceError, match=rf"no file matches '{fmt}/gone\.{fmt}'") as info:
        connector.schema()
    assert str(data) in str(info.value)
    with pytest.raises(SourceError, match="gone"):
        list(connector.read())


def test_a_glob_matching_nothing_is_an_error(data: Path) -> None:
    connector = CsvConnector.from_dict({"type": "csv", "path": "csv/nothing-*.csv"},
                                       PluginContext(base_dir=data))
    with pytest.raises(SourceError, match=r"no file matches 'csv/nothing-\*\.csv'"):
        list(connector.read())


def test_a_corrupt_file_is_a_source_error(tmp_path: Path) -> None:
    (tmp_path / "bad.parquet").write_bytes(b"this is not parquet")
    connector = ParquetConnector.from_dict({"type": "parquet", "path": "bad.parquet"},
                                           PluginContext(base_dir=tmp_path))
    with pytest.raises(SourceError, match=r"source 'bad\.parquet'"):
        connector.schema()


@pytest.mark.parametrize("fmt", sorted(FILES))
def test_files_honour_batch_rows(fmt: str, data: Path) -> None:
    connector = FILES[fmt].from_dict({"type": fmt, "path": f"{fmt}/all.{fmt}", "batch_rows": 3},
                                     PluginContext(base_dir=data))
    sizes = [b.num_rows for b in connector.read()]
    assert sum(sizes) == len(ROWS)
    assert max(sizes) <= 3
    assert len(sizes) >= 4


def test_csv_delimiter_and_headerless_files(tmp_path: Path) -> None:
    write_csv(tmp_path / "semi.csv", ROWS, delimiter=";")
    context = PluginContext(base_dir=tmp_path)
    semi = read(CsvConnector.from_dict({"type": "csv", "path": "semi.csv", "delimiter": ";"}, context))
    assert semi.column_names == list(ROWS[0])
    assert semi.column("spend").to_pylist() == [r["spend"] for r in ROWS]
    (tmp_path / "bare.csv").write_text("c1,3\nc2,4\n")
    bare = read(CsvConnector.from_dict({"type": "csv", "path": "bare.csv", "header": False}, context))
    assert bare.num_rows == 2
    assert bare.column(1).to_pylist() == [3, 4]


def test_csv_infers_types_from_every_row(tmp_path: Path) -> None:
    lines = ["customer_id,score"] + [f"c{i},{i}" for i in range(3000)] + ["late,n/a"]
    (tmp_path / "late.csv").write_text("\n".join(lines) + "\n")
    context = PluginContext(base_dir=tmp_path)
    table = read(CsvConnector.from_dict({"type": "csv", "path": "late.csv"}, context))
    assert table.schema.field("score").type == pa.string()
    assert table.num_rows == 3001


def test_parquet_estimates_rows_from_footers(data: Path) -> None:
    context = PluginContext(base_dir=data)
    assert ParquetConnector.from_dict({"type": "parquet", "path": "parquet/part-*.parquet"},
                                      context).estimated_rows() == len(ROWS)
    assert CsvConnector.from_dict({"type": "csv", "path": "csv/all.csv"}, context).estimated_rows() is None


def test_file_config_is_closed() -> None:
    with pytest.raises(ValidationError, match="pth"):
        CsvConnector.config_model.model_validate({"type": "csv", "pth": "x.csv"})
    with pytest.raises(ValidationError):
        CsvConnector.config_model.model_validate({"type": "csv", "path": "x.csv", "delimiter": ";;"})
    with pytest.raises(ValidationError):
        CsvConnector.config_model.model_validate({"type": "csv", "path": "x.csv", "batch_rows": 0})


# -- SQL --------------------------------------------------------------------------------


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Path:
    path = tmp_path / "warehouse.db"
    with sqlite3.connect(path) as conn:
        conn.execute('CREATE TABLE "Customers" (customer_id TEXT, spend REAL, visits INTEGER, country TEXT)')
        conn.executemany('INSERT INTO "Customers" VALUES (?, ?, ?, ?)',
                         [(r["customer_id"], r["spend"], r["visits"], r["country"]) for r in ROWS])
    return path


@pytest.fixture
def pg_table(pg_url: str) -> str:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (customer_id TEXT PRIMARY KEY, spend DOUBLE PRECISION, "
                     "visits BIGINT, country TEXT, active BOOLEAN, seen TIMESTAMPTZ)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO customers VALUES (%s, %s, %s, %s, %s, %s)",
                            [(r["customer_id"], r["spend"], r["visits"], r["country"], r["active"],
                              datetime(2024, 1, 1 + i, tzinfo=UTC)) for i, r in enumerate(ROWS)])
    return pg_url


def sql(config: dict[str, Any], context: PluginContext | None = None) -> SqlConnector:
    return SqlConnector.from_dict({"type": "sql", **config}, context)


def test_sqlite_table_and_query(sqlite_db: Path) -> None:
    url = f"sqlite:///{sqlite_db}"
    whole = read(sql({"connection": url, "table": "Customers"}))
    assert whole.sort_by("customer_id").select(["customer_id", "spend", "visits", "country"]).to_pylist() == \
        [{k: r[k] for k in ("customer_id", "spend", "visits", "country")} for r in ROWS]
    assert whole.schema.field("spend").type == pa.float64()
    assert whole.schema.field("customer_id").type == pa.string()
    us = read(sql({"connection": url,
                   "query": "SELECT customer_id, visits * 2 AS double_visits FROM Customers "
                            "WHERE country = 'US' ORDER BY customer_id;"}))
    expected = [{"customer_id": r["customer_id"], "double_visits": r["visits"] * 2}
                for r in ROWS if r["country"] == "US"]
    assert us.to_pylist() == expected


def test_sqlite_schema_matches_the_batches(sqlite_db: Path) -> None:
    connector = sql({"connection": f"sqlite:///{sqlite_db}", "table": "Customers"})
    batches = list(connector.read())
    assert all(b.schema.equals(connector.schema()) for b in batches)
    assert connector.schema().field("country").type == pa.string()


def test_sqlite_relative_path_and_named_connection(sqlite_db: Path) -> None:
    context = PluginContext(base_dir=sqlite_db.parent, connections={"warehouse": "sqlite:///warehouse.db"})
    connector = sql({"connection": "warehouse", "table": "Customers"}, context)
    assert read(connector).num_rows == len(ROWS)
    assert connector.describe() == "Customers"


def test_unknown_connection_names_the_known_ones(sqlite_db: Path) -> None:
    context = PluginContext(connections={"warehouse": f"sqlite:///{sqlite_db}", "crm": "postgresql://x/y"})
    connector = sql({"connection": "warehous", "table": "Customers"}, context)
    with pytest.raises(SourceError, match=r"no connection named 'warehous'.*known: crm, warehouse"):
        connector.schema()
    with pytest.raises(SourceError, match="known: none"):
        list(sql({"connection": "warehouse", "table": "t"}).read())


@pytest.mark.parametrize(("config", "message"), [
    ({"query": "SELEC customer_id FROM Customers"}, "source 'query'"),
    ({"query": "SELECT nope FROM Customers"}, "nope"),
    ({"table": "missing_table"}, "missing_table"),
])
def test_bad_sql_is_a_source_error(config: dict[str, Any], message: str, sqlite_db: Path) -> None:
    connector = sql({"connection": f"sqlite:///{sqlite_db}", **config})
    with pytest.raises(SourceError, match=message):
        connector.schema()
    with pytest.raises(SourceError, match=message):
        list(connector.read())


def test_a_late_value_of_another_type_is_a_source_error(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "mixed.db") as conn:
        conn.execute("CREATE TABLE t (v)")
        conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(3000)] + [("text",)])
    connector = sql({"connection": f"sqlite:///{tmp_path / 'mixed.db'}", "table": "t"})
    with pytest.raises(SourceError, match=r"source 't': .*[Tt]ype mismatch"):
        list(connector.read())


def test_sql_config_needs_exactly_one_of_query_and_table() -> None:
    with pytest.raises(ValidationError, match="exactly one of 'query' and 'table'"):
        SqlConnector.config_model.model_validate({"type": "sql", "connection": "x"})
    with pytest.raises(ValidationError, match="exactly one of 'query' and 'table'"):
        SqlConnector.config_model.model_validate({"type": "sql", "connection": "x", "table": "t",
                                                  "query": "SELECT 1"})


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sql_honours_batch_rows(backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "sqlite":
        url, table = f"sqlite:///{request.getfixturevalue('sqlite_db')}", "Customers"
    else:
        url, table = request.getfixturevalue("pg_table"), "customers"
    connector = sql({"connection": url, "table": table, "batch_rows": 3})
    sizes = [b.num_rows for b in connector.read()]
    assert sizes == [3, 3, 3, 1]


def test_postgres_table_and_query(pg_table: str) -> None:
    whole = read(sql({"connection": pg_table, "table": "customers"}))
    assert whole.num_rows == len(ROWS)
    types = {f.name: f.type for f in whole.schema}
    assert types == {"customer_id": pa.string(), "spend": pa.float64(), "visits": pa.int64(),
                     "country": pa.string(), "active": pa.bool_(), "seen": pa.timestamp("us", tz="UTC")}
    rows = whole.sort_by("customer_id").to_pylist()
    assert [r["active"] for r in rows] == [r["active"] for r in ROWS]
    assert rows[2]["seen"] == datetime(2024, 1, 3, tzinfo=UTC)
    query = read(sql({"connection": pg_table, "query": "SELECT customer_id, spend FROM customers "
                                                     "WHERE spend > 50 ORDER BY spend DESC"}))
    assert query.column("spend").to_pylist() == sorted((r["spend"] for r in ROWS if r["spend"] > 50),
                                                       reverse=True)


def test_postgres_named_connection_and_qualified_table(pg_table: str) -> None:
    schema = pg_table.rsplit("%3D", 1)[1]
    context = PluginContext(connections={"crm": pg_table})
    connector = sql({"connection": "crm", "table": f"{schema}.customers"}, context)
    assert read(connector).num_rows == len(ROWS)


def test_postgres_errors(pg_table: str) -> None:
    with pytest.raises(SourceError, match="no_such_table"):
        sql({"connection": pg_table, "table": "no_such_table"}).schema()
    with pytest.raises(SourceError, match="source 'query'"):
        list(sql({"connection": pg_table, "query": "SELECT FROM WHERE"}).read())
    with pytest.raises(SourceError, match="cannot connect"):
        sql({"connection": "postgresql://postgres@127.0.0.1:1/none", "table": "t"}).schema()


# -- the in-memory double ---------------------------------------------------------------


def test_memory_connector_forms(context: PluginContext) -> None:
    table = pa.Table.from_pylist(ROWS)
    assert read(MemoryConnector.of(table, batch_rows=4)).equals(table)
    assert [b.num_rows for b in MemoryConnector.of(ROWS, batch_rows=4).read()] == [4, 4, 2]
    from_rows = MemoryConnector.from_dict({"type": "memory", "rows": ROWS}, context)
    assert read(from_rows).to_pylist() == ROWS
    MemoryConnector.publish("customers", table)
    try:
        published = MemoryConnector.from_dict({"type": "memory", "dataset": "customers"}, context)
        assert read(published).equals(table)
        assert published.estimated_rows() == len(ROWS)
        with pytest.raises(SourceError, match=r"no memory dataset named 'other' \(published: customers\)"):
            MemoryConnector.from_dict({"type": "memory", "dataset": "other"}, context).schema()
    finally:
        MemoryConnector.clear()
    with pytest.raises(SourceError, match="needs 'rows', 'dataset'"):
        MemoryConnector.from_dict({"type": "memory"}, context).schema()
    with pytest.raises(ValidationError, match="at most one"):
        MemoryConnector.from_dict({"type": "memory", "rows": [], "dataset": "x"}, context)
