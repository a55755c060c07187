"""CSV, JSON Lines and Parquet files (paths or globs), read by DuckDB into Arrow."""

from __future__ import annotations

import glob
from collections.abc import Iterator
from typing import ClassVar, Literal, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from ceap.connectors.base import Connector, ConnectorConfig
from ceap.errors import SourceError


class FileConfig(ConnectorConfig):
    path: str | list[str] = Field(description="file path or glob, or a list of them")


class CsvConfig(FileConfig):
    type: Literal["csv"] = "csv"
    delimiter: str = Field(",", min_length=1, max_length=1)
    header: bool = True


class JsonlConfig(FileConfig):
    type: Literal["jsonl"] = "jsonl"


class ParquetConfig(FileConfig):
    type: Literal["parquet"] = "parquet"


FC = TypeVar("FC", bound=FileConfig)


def _sql_list(items: list[str]) -> str:
    return "[" + ", ".join("'" + s.replace("'", "''") + "'" for s in items) + "]"


class FileConnector(Connector[FC]):
    """Shared by the file formats: resolves globs, reads with one DuckDB scan."""

    def files(self) -> list[str]:
        patterns = [self.config.path] if isinstance(self.config.path, str) else self.config.path
        found: list[str] = []
        for pattern in patterns:
            resolved = str(self.context.path(pattern))
            matches = sorted(glob.glob(resolved, recursive=True))
            if not matches:
                raise SourceError(f"source.path: no file matches {pattern!r} "
                                  f"(looked in {self.context.base_dir})")
            found.extend(matches)
        return found

    def describe(self) -> str:
        path = self.config.path
        return path if isinstance(path, str) else ", ".join(path)

    def _scan(self, files: list[str]) -> str:
        raise NotImplementedError

    def _relation(self) -> tuple[duckdb.DuckDBPyConnection, duckdb.DuckDBPyRelation]:
        con = duckdb.connect()
        try:
            return con, con.sql(f"SELECT * FROM {self._scan(self.files())}")
        except duckdb.Error as exc:
            con.close()
            raise SourceError(f"source {self.describe()!r}: {_first_line(exc)}") from None

    def schema(self) -> pa.Schema:
        con, rel = self._relation()
        with con:
            return rel.limit(0).to_arrow_table().schema

    def read(self) -> Iterator[pa.RecordBatch]:
        con, rel = self._relation()
        with con:
            try:
                yield from rel.to_arrow_reader(self.config.batch_rows)
            except duckdb.Error as exc:
                raise SourceError(f"source {self.describe()!r}: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


class CsvConnector(FileConnector[CsvConfig]):
    """CSV files; column types are inferred from every row, so a late odd value
    makes the column text rather than failing (declare ``columns`` to quarantine it)."""

    config_model: ClassVar[type[ConnectorConfig]] = CsvConfig

    def _scan(self, files: list[str]) -> str:
        delim = self.config.delimiter.replace("'", "''")
        return (f"read_csv({_sql_list(files)}, header={str(self.config.header).lower()}, "
                f"delim='{delim}', sample_size=-1)")


class JsonlConnector(FileConnector[JsonlConfig]):
    """JSON Lines files: one object per line."""

    config_model: ClassVar[type[ConnectorConfig]] = JsonlConfig

    def _scan(self, files: list[str]) -> str:
        return f"read_json({_sql_list(files)}, format='newline_delimited', sample_size=-1)"


class ParquetConnector(FileConnector[ParquetConfig]):
    """Parquet files; the row count comes from their footers, for progress bars."""

    config_model: ClassVar[type[ConnectorConfig]] = ParquetConfig

    def _scan(self, files: list[str]) -> str:
        return f"read_parquet({_sql_list(files)}, union_by_name=true)"

    def estimated_rows(self) -> int | None:
        try:
            return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files())
        except (OSError, pa.ArrowException):
            return None
