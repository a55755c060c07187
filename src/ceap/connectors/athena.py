"""Amazon Athena as an Arrow source, through PyAthena's ``ArrowCursor``.

``ceap.yaml``::

    connections:
      lake: athena://eu-west-1/analytics?s3_staging_dir=s3://my-athena-results/ceap/&work_group=primary

The query runs in Athena; its result is read from S3 into Arrow (the CSV
result with the column types Athena reports, or with ``unload=true`` the
Parquet files of an ``UNLOAD``, the faster path for big results). Credentials
come from the environment or the default AWS chain (``AWS_ENDPOINT_URL``
points both Athena and S3 at another endpoint).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import pyarrow as pa

from ceap.connectors.base import ConnectorConfig
from ceap.connectors.warehouse import WarehouseConfig, WarehouseConnector
from ceap.errors import SourceError

_OPTIONS = ("s3_staging_dir", "work_group", "unload", "catalog_name")


def _honour_endpoint_env() -> None:
    """PyAthena reads results with pyarrow's S3FileSystem, built without the endpoint that
    boto3 takes from ``AWS_ENDPOINT_URL(_S3)``; give it that endpoint too (a private S3
    endpoint, or a local S3 API in the tests). Nothing changes when neither is set."""
    import pyathena.arrow.cursor as arrow_cursor
    from pyathena.arrow.result_set import AthenaArrowResultSet, AthenaArrowResultSetMetadataReader

    if getattr(arrow_cursor.AthenaArrowResultSet, "ceap_endpoint_aware", False):
        return

    class EndpointAwareReader(AthenaArrowResultSetMetadataReader):  # type: ignore[misc]
        def _create_s3_file_system(self) -> Any:
            made = super()._create_s3_file_system()
            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            if not endpoint:
                return made
            from pyarrow import fs

            scheme, _, host = endpoint.partition("://")
            credentials = self._connection.session.get_credentials()
            frozen = credentials.get_frozen_credentials() if credentials else None
            return fs.S3FileSystem(
                region=self._connection.region_name, endpoint_override=host or scheme,
                scheme=scheme if host else "https",
                access_key=frozen.access_key if frozen else None,
                secret_key=frozen.secret_key if frozen else None,
                session_token=frozen.token if frozen else None)

    class EndpointAwareResultSet(AthenaArrowResultSet):  # type: ignore[misc]
        ceap_endpoint_aware = True
        _metadata_reader_class = EndpointAwareReader

    arrow_cursor.AthenaArrowResultSet = EndpointAwareResultSet  # type: ignore[misc]


class AthenaConfig(WarehouseConfig):
    type: Literal["athena"] = "athena"


class AthenaConnector(WarehouseConnector):
    """Reads an Athena query or table as Arrow batches."""

    config_model: ClassVar[type[ConnectorConfig]] = AthenaConfig
    scheme: ClassVar[str] = "athena"

    def cursor(self) -> Any:
        try:
            from pyathena import connect
            from pyathena.arrow.cursor import ArrowCursor
        except ImportError:
            raise SourceError("source: Athena needs PyAthena: pip install 'ceap[athena]'") from None
        _honour_endpoint_env()
        url = self.parsed()
        if url.user or url.password:
            raise SourceError("source.connection: credentials do not belong in an athena:// URL; "
                              "they come from the environment or the default AWS chain")
        unknown = sorted(set(url.options) - set(_OPTIONS))
        if unknown:
            raise SourceError(f"source.connection: unknown athena:// option {unknown[0]!r} "
                              f"(known: {', '.join(_OPTIONS)})")
        options = dict(url.options)
        unload = options.pop("unload", "false").lower() in ("1", "true", "yes")
        try:
            conn = connect(region_name=url.host or None,
                           schema_name=url.path[0] if url.path else "default",
                           cursor_class=ArrowCursor, cursor_kwargs={"unload": unload}, **options)
            return conn.cursor()
        except Exception as exc:
            raise self.fail(exc, "cannot connect: ") from None

    def _run(self, sql: str, params: dict[str, Any] | None) -> pa.Table:
        cursor = self.cursor()
        try:
            cursor.execute(sql, params) if params else cursor.execute(sql)
            return cursor.as_arrow()
        except SourceError:
            raise
        except Exception as exc:
            raise self.fail(exc) from None
        finally:
            cursor.close()

    def _result(self) -> pa.Table:
        """The query's result, run once per run (Athena bills by the data each query scans):
        the plan's schema check and the read share it."""
        if getattr(self, "_cached", None) is None:
            sql, params = self.statement()
            self._cached = self.tidy(self._run(sql, params))
        return self._cached

    def schema(self) -> pa.Schema:
        return self._result().schema

    def read(self) -> Iterator[pa.RecordBatch]:
        table, self._cached = self._result(), None
        yield from self.rebatch(iter([table]))
