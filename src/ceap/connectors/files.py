"""CSV, JSON Lines and Parquet files (paths, globs or object-storage URLs), read by
DuckDB into Arrow.

Local paths are globbed on disk; ``s3://``, ``gs://`` and ``az://`` URLs are
listed and read through fsspec (see ``ceap.connectors.object_store``). Both
read Hive-style partition folders (``day=2026-12-01/``) as columns, and a
``where`` condition (and an incremental source's cursor) is part of DuckDB's
scan: partitions and Parquet row groups it rules out are not read.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from pydantic import Field, field_validator

from ceap.connectors import object_store
from ceap.connectors.base import Connector, ConnectorConfig
from ceap.errors import SourceError
from ceap.factories import empty_dict
from ceap.sqlexpr import check_expression, quote

if TYPE_CHECKING:  # DuckDB and Arrow are imported where files are read, not to validate a config
    import duckdb
    import pyarrow as pa


class FileConfig(ConnectorConfig):
    path: str | list[str] = Field(description="file path, glob or s3:// gs:// az:// URL, "
                                              "or a list of them")
    where: str | None = Field(None, description="a SQL condition applied in the scan "
                                                "(partition columns prune whole folders)")
    hive_partitioning: bool | None = Field(None, description="read key=value folders as "
                                           "columns (default: when the paths have them)")
    storage_options: dict[str, str | int | float | bool] = Field(
        default_factory=empty_dict, description="fsspec options for object storage (endpoint_url, "
                                          "region...); never secrets")

    @field_validator("where")
    @classmethod
    def _where(cls, value: str | None) -> str | None:
        return None if value is None else check_expression(value)

    @field_validator("storage_options")
    @classmethod
    def _options(cls, value: dict[str, Any]) -> dict[str, Any]:
        return object_store.check_storage_options(value)


class CsvConfig(FileConfig):
    type: Literal["csv"] = "csv"
    delimiter: str = Field(",", min_length=1, max_length=1)
    header: bool = True


class JsonlConfig(FileConfig):
    type: Literal["jsonl"] = "jsonl"


class ParquetConfig(FileConfig):
    type: Literal["parquet"] = "parquet"
    union_by_name: bool = Field(True, description="match columns by name across files (reads "
                                "every file's footer up front; false takes the first file's "
                                "schema and lets a partition filter skip whole files)")


FC = TypeVar("FC", bound=FileConfig)


def _sql_list(items: list[str]) -> str:
    return "[" + ", ".join("'" + s.replace("'", "''") + "'" for s in items) + "]"


class FileConnector(Connector[FC]):
    """Shared by the file formats: resolves globs, reads with one DuckDB scan."""

    pushes_cursor: ClassVar[bool] = True

    def __init__(self, config: FC, context: Any = None):
        super().__init__(config, context)
        self._filesystems: dict[str, Any] = {}

    def _patterns(self) -> list[str]:
        return [self.config.path] if isinstance(self.config.path, str) else list(self.config.path)

    def _fs(self, scheme: str) -> Any:
        if scheme not in self._filesystems:
            self._filesystems[scheme] = object_store.filesystem(
                scheme, dict(self.config.storage_options))
        return self._filesystems[scheme]

    def files(self) -> list[str]:
        found: list[str] = []
        for pattern in self._patterns():
            scheme = object_store.scheme_of(pattern)
            if scheme is not None and scheme != "file":
                matches = object_store.expand(self._fs(scheme), scheme, pattern)
                where = "in object storage"
            else:
                local = pattern[len("file://"):] if scheme == "file" else pattern
                matches = sorted(glob.glob(str(self.context.path(local)), recursive=True))
                where = f"looked in {self.context.base_dir}"
            if not matches:
                raise SourceError(f"source.path: no file matches {pattern!r} ({where})")
            found.extend(matches)
        return found

    def describe(self) -> str:
        path = self.config.path
        return path if isinstance(path, str) else ", ".join(path)

    def _scan(self, files: list[str]) -> str:
        raise NotImplementedError

    def _conditions(self) -> tuple[list[str], list[Any]]:
        where: list[str] = [f"({self.config.where})"] if self.config.where else []
        params: list[Any] = []
        if self.config.cursor and self.after is not None:
            where.append(f"{quote(self.config.cursor)} > ?")
            params.append(self.after)
        return where, params

    def _relation(self) -> tuple[duckdb.DuckDBPyConnection, duckdb.DuckDBPyRelation]:
        import duckdb  # here, not at import: validating a program needs only the config

        files = self.files()
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            for fs in self._filesystems.values():
                con.register_filesystem(fs)
            where, params = self._conditions()
            sql = f"SELECT * FROM {self._scan(files)}"
            if where:
                sql += " WHERE " + " AND ".join(where)
            return con, con.sql(sql, params=params or None)
        except duckdb.Error as exc:
            con.close()
            raise SourceError(f"source {self.describe()!r}: "
                              f"{object_store.redact(_first_line(exc))}") from None
        except Exception as exc:  # fsspec errors while DuckDB opens the objects
            con.close()
            raise SourceError(f"source {self.describe()!r}: "
                              f"{object_store.redact(_first_line(exc))}") from None

    def schema(self) -> pa.Schema:
        con, rel = self._relation()
        with con:
            return rel.limit(0).to_arrow_table().schema

    def read(self) -> Iterator[pa.RecordBatch]:
        import duckdb

        con, rel = self._relation()
        with con:
            try:
                yield from rel.to_arrow_reader(self.config.batch_rows)
            except (duckdb.Error, OSError) as exc:
                raise SourceError(f"source {self.describe()!r}: "
                                  f"{object_store.redact(_first_line(exc))}") from None

    def _hive(self) -> str:
        hive = self.config.hive_partitioning
        return "" if hive is None else f", hive_partitioning={str(hive).lower()}"


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


class CsvConnector(FileConnector[CsvConfig]):
    """CSV files; column types are inferred from every row, so a late odd value
    makes the column text rather than failing (declare ``columns`` to quarantine it)."""

    config_model: ClassVar[type[ConnectorConfig]] = CsvConfig

    def _scan(self, files: list[str]) -> str:
        delim = self.config.delimiter.replace("'", "''")
        return (f"read_csv({_sql_list(files)}, header={str(self.config.header).lower()}, "
                f"delim='{delim}', sample_size=-1{self._hive()})")


class JsonlConnector(FileConnector[JsonlConfig]):
    """JSON Lines files: one object per line."""

    config_model: ClassVar[type[ConnectorConfig]] = JsonlConfig

    def _scan(self, files: list[str]) -> str:
        return (f"read_json({_sql_list(files)}, format='newline_delimited', sample_size=-1"
                f"{self._hive()})")


class ParquetConnector(FileConnector[ParquetConfig]):
    """Parquet files; the row count comes from their footers, for progress bars."""

    config_model: ClassVar[type[ConnectorConfig]] = ParquetConfig

    def _scan(self, files: list[str]) -> str:
        return (f"read_parquet({_sql_list(files)}, "
                f"union_by_name={str(self.config.union_by_name).lower()}{self._hive()})")

    def estimated_rows(self) -> int | None:
        import pyarrow as pa

        if self.config.where or self.after is not None:
            return None  # the footers count rows the scan will skip
        try:
            files = self.files()
            if any(object_store.is_remote(f) for f in files):
                return None  # one request per object: not worth it for a progress bar
            import pyarrow.parquet as pq

            return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        except (OSError, pa.ArrowException, SourceError):
            return None
