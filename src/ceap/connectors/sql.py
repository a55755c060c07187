"""SQL databases. PostgreSQL and SQLite stream Arrow through ADBC (PostgreSQL
uses COPY in binary form); DuckDB (a database file, or none: a query over
Parquet, CSV or JSON files) streams Arrow natively; any other SQLAlchemy URL
works with the ``sqlalchemy`` extra installed, row by row.

A relative SQLite or DuckDB database path (``sqlite:///shop.db``) is resolved
against the project folder, as are relative file paths inside a DuckDB query
(``read_parquet('data/*.parquet')``), not against the working directory."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field, model_validator

from ceap.connectors.base import Connector, ConnectorConfig
from ceap.errors import SourceError


class SqlConfig(ConnectorConfig):
    type: Literal["sql"] = "sql"
    connection: str = Field(description="a connection named in ceap.yaml, or a database URL")
    query: str | None = Field(None, description="a SELECT statement")
    table: str | None = Field(None, description="a table to read whole (instead of query)")

    @model_validator(mode="after")
    def _query_or_table(self) -> SqlConfig:
        if (self.query is None) == (self.table is None):
            raise ValueError("give exactly one of 'query' and 'table'")
        return self


def _quote_ident(name: str) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


class SqlConnector(Connector[SqlConfig]):
    """Reads the result of a query (or a whole table) as Arrow batches."""

    config_model: ClassVar[type[ConnectorConfig]] = SqlConfig

    def url(self) -> str:
        name = self.config.connection
        if "://" in name or name.startswith("sqlite:"):
            return name
        if name not in self.context.connections:
            known = ", ".join(sorted(self.context.connections)) or "none"
            raise SourceError(f"source.connection: no connection named {name!r} in ceap.yaml "
                              f"(known: {known})")
        return self.context.connections[name]

    def statement(self) -> str:
        if self.config.table:
            return f"SELECT * FROM {_quote_ident(self.config.table)}"
        return str(self.config.query).strip().rstrip(";")

    def describe(self) -> str:
        return self.config.table or "query"

    def _connect(self) -> Any:
        url = self.url()
        scheme = url.split(":", 1)[0].split("+", 1)[0]
        try:
            if scheme in ("postgresql", "postgres"):
                import adbc_driver_postgresql.dbapi as pg

                return pg.connect("postgresql" + url[url.index(":"):])
            if scheme == "sqlite":
                import adbc_driver_sqlite.dbapi as lite

                from ceap.store.sqlite import sqlite_path

                path = sqlite_path(url)
                path = path if path == ":memory:" else str(self.context.path(path))
                return lite.connect(path)
            if scheme == "duckdb":
                return self._duckdb(url)
        except Exception as exc:
            raise SourceError(f"source.connection: cannot connect: {exc}") from None
        return None

    def _duckdb(self, url: str) -> Any:
        """``duckdb:///rel.db``, ``duckdb:////abs.db`` (opened read-only), or ``duckdb://``
        (no database: the query reads files); relative paths in queries start at the project."""
        import duckdb

        path = url[len("duckdb://"):] if url.startswith("duckdb://") else url[len("duckdb:"):]
        path = path[1:] if path.startswith("/") else path
        config: dict[str, Any] = {"file_search_path": str(self.context.base_dir)}
        if path in ("", ":memory:"):
            return duckdb.connect(":memory:", config=config)
        return duckdb.connect(str(self.context.path(path)), read_only=True, config=config)

    def _fail(self, exc: Exception) -> SourceError:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return SourceError(f"source {self.describe()!r}: {text}")

    def schema(self) -> pa.Schema:
        sql = f"SELECT * FROM ({self.statement()}) AS ceap_q LIMIT 0"
        conn = self._connect()
        if conn is None:
            return self._read_sqlalchemy(sql, schema_only=True)
        if self.url().startswith("sqlite:"):
            # the SQLite driver infers types from the first rows (none under LIMIT 0 gives
            # int64 everywhere): take the schema of the statement itself, as read() sees it
            sql = self.statement()
        with closing(conn), closing(conn.cursor()) as cursor:
            return self._execute(cursor, sql).schema

    def _pushes(self) -> bool:
        """PostgreSQL takes the cursor condition in the query (ADBC binds the mark)."""
        return (self.config.cursor is not None and self.after is not None
                and self.url().split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres"))

    def batches(self) -> Iterator[pa.RecordBatch]:
        if not self._pushes():
            yield from super().batches()
            return
        sql = (f"SELECT * FROM ({self.statement()}) AS ceap_q "
               f"WHERE {_quote_ident(str(self.config.cursor))} > $1")
        yield from self._read(sql, (self.after,))

    def read(self) -> Iterator[pa.RecordBatch]:
        yield from self._read(self.statement(), None)

    def _read(self, sql: str, params: tuple[Any, ...] | None) -> Iterator[pa.RecordBatch]:
        conn = self._connect()
        if conn is None:
            yield from self._read_sqlalchemy(sql, schema_only=False)
            return
        # the cursor must outlive the reader: collecting it closes the stream
        with closing(conn), closing(conn.cursor()) as cursor:
            reader = self._execute(cursor, sql, params)
            try:
                yield from _rebatch(reader, self.config.batch_rows)
            except (OSError, pa.ArrowException) as exc:  # e.g. a value of another type, late
                raise self._fail(exc) from None

    def _execute(self, cursor: Any, sql: str,
                 params: tuple[Any, ...] | None = None) -> pa.RecordBatchReader:
        try:
            if not hasattr(cursor, "fetch_record_batch"):  # DuckDB: Arrow straight from the relation
                relation = cursor.sql(sql, params=list(params)) if params else cursor.sql(sql)
                return relation.to_arrow_reader(self.config.batch_rows)
            cursor.execute(sql, params) if params else cursor.execute(sql)
            return cursor.fetch_record_batch()
        except Exception as exc:
            raise self._fail(exc) from None

    def _read_sqlalchemy(self, sql: str, schema_only: bool) -> Any:
        try:
            import sqlalchemy
        except ImportError:
            raise SourceError("source.connection: this database needs the sqlalchemy extra: "
                              "pip install 'ceap[sqlalchemy]' plus the database's driver") from None
        engine = self._engine(sqlalchemy)
        try:
            with engine.connect() as conn:
                result = conn.execution_options(stream_results=True).execute(sqlalchemy.text(sql))
                names = list(result.keys())
                batches = [pa.RecordBatch.from_pylist([dict(zip(names, r, strict=True))
                                                       for r in chunk])
                           for chunk in result.partitions(self.config.batch_rows)]
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise self._fail(exc) from None
        finally:
            engine.dispose()
        if schema_only:
            return batches[0].schema if batches else pa.schema([(n, pa.null()) for n in names])
        return batches


    def _engine(self, sqlalchemy: Any) -> Any:
        """The SQLAlchemy engine of the URL; a scheme without a dialect or a driver not
        installed fails naming the field and the scheme, never the URL (it may hold a password)."""
        url = self.url()
        scheme = url.split(":", 1)[0]
        try:
            return sqlalchemy.create_engine(url)
        except sqlalchemy.exc.NoSuchModuleError:
            raise SourceError(f"source.connection: no database driver for {scheme}:// URLs "
                              "(built in: postgresql://, sqlite:///, duckdb://; others need "
                              "their SQLAlchemy dialect installed)") from None
        except ImportError as exc:
            raise SourceError(f"source.connection: the driver of {scheme}:// URLs is not "
                              f"installed: {exc}") from None
        except (sqlalchemy.exc.ArgumentError, ValueError):
            raise SourceError("source.connection: not a database URL") from None


def _rebatch(reader: pa.RecordBatchReader, rows: int) -> Iterator[pa.RecordBatch]:
    """Yield the reader's data in batches of at most ``rows`` rows."""
    for batch in reader:
        for start in range(0, batch.num_rows, rows):
            yield batch.slice(start, rows)
