"""Snowflake as an Arrow source: the official connector's ``fetch_arrow_batches``.

``ceap.yaml``::

    connections:
      warehouse: snowflake://ceap_reader:${SNOWFLAKE_PASSWORD}@myorg-myaccount/ANALYTICS/PUBLIC?warehouse=BI_WH&role=CEAP

The password comes from the environment (the ``${...}`` reference, or
``SNOWFLAKE_PASSWORD`` when the URL has none). Options: ``warehouse``,
``role``, ``authenticator``, and ``host``/``port``/``protocol`` for a proxy
or an emulator. Results stream as Arrow batches; an incremental source's
cursor is a bound parameter of the query.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import pyarrow as pa

from ceap.connectors.base import ConnectorConfig
from ceap.connectors.warehouse import WarehouseConfig, WarehouseConnector
from ceap.errors import SourceError

_OPTIONS = ("warehouse", "role", "authenticator", "host", "port", "protocol")


class SnowflakeConfig(WarehouseConfig):
    type: Literal["snowflake"] = "snowflake"


class SnowflakeConnector(WarehouseConnector):
    """Reads a Snowflake query or table as Arrow batches."""

    config_model: ClassVar[type[ConnectorConfig]] = SnowflakeConfig
    scheme: ClassVar[str] = "snowflake"

    def connect(self) -> Any:
        try:
            import snowflake.connector
        except ImportError:
            raise SourceError("source: Snowflake needs its connector: "
                              "pip install 'ceap[snowflake]'") from None
        url = self.parsed()
        unknown = sorted(set(url.options) - set(_OPTIONS))
        if unknown:
            raise SourceError(f"source.connection: unknown snowflake:// option {unknown[0]!r} "
                              f"(known: {', '.join(_OPTIONS)})")
        kwargs: dict[str, Any] = {"account": url.host, "user": url.user,
                                  "password": url.password or os.environ.get("SNOWFLAKE_PASSWORD"),
                                  "login_timeout": 30, "network_timeout": 300}
        if url.path:
            kwargs["database"] = url.path[0]
        if len(url.path) > 1:
            kwargs["schema"] = url.path[1]
        kwargs.update({k: v for k, v in url.options.items()})
        if "port" in kwargs:
            kwargs["port"] = int(kwargs["port"])
        try:
            return snowflake.connector.connect(**kwargs)
        except Exception as exc:
            raise self.fail(exc, "cannot connect: ") from None

    def _execute(self, conn: Any, sql: str, params: dict[str, Any] | None) -> Any:
        cursor = conn.cursor()
        try:
            cursor.execute(sql, params) if params else cursor.execute(sql)
        except Exception as exc:
            cursor.close()
            raise self.fail(exc) from None
        return cursor

    def schema(self) -> pa.Schema:
        sql, params = self.statement()
        conn = self.connect()
        try:
            cursor = self._execute(conn, f"SELECT * FROM ({sql}) AS ceap_s LIMIT 0", params)
            return self.tidy(cursor.fetch_arrow_all(force_return_table=True)).schema
        finally:
            conn.close()

    def read(self) -> Iterator[pa.RecordBatch]:
        sql, params = self.statement()
        conn = self.connect()
        try:
            cursor = self._execute(conn, sql, params)
            try:
                yield from self.rebatch(cursor.fetch_arrow_batches())
            except SourceError:
                raise
            except Exception as exc:
                raise self.fail(exc) from None
        finally:
            conn.close()
