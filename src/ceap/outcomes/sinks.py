"""Where the outbound stream of outcomes goes: Parquet files, a JSON Lines file,
a signed webhook, or a stream connector (Redis, NATS, Kafka, RabbitMQ, Kinesis).

A sink's ``write(records, window)`` either stores or sends every record, or
raises: the export then keeps its cursor and sends the same records again
next time (at least once; each record has a stable ``id``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from ceap.errors import CeapError
from ceap.outcomes.config import JsonlExport, ParquetExport, StreamExport, WebhookExport


class ExportError(CeapError):
    """A sink could not take the records; they are sent again on the next pass."""


class Sink(Protocol):
    def write(self, records: pa.Table, window: tuple[datetime, datetime]) -> None: ...

    def close(self) -> None: ...


def _stamp(value: datetime) -> str:
    return value.strftime("%Y%m%dT%H%M%S%fZ")


def json_lines(records: pa.Table) -> list[bytes]:
    """Each record as compact JSON (times ISO 8601 UTC, nulls kept)."""
    out = []
    for row in records.to_pylist():
        for key, value in row.items():
            if isinstance(value, datetime):
                row[key] = value.isoformat().replace("+00:00", "Z")
        out.append(json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode())
    return out


class ParquetSink:
    """One file per source and window, ``<kind>-<from>-<to>.parquet``, written atomically:
    sending a window again rewrites the same file, so a folder never holds a record twice."""

    def __init__(self, config: ParquetExport, base_dir: Path):
        folder = Path(config.path)
        self.dir = folder if folder.is_absolute() else base_dir / folder
        self.dir.mkdir(parents=True, exist_ok=True)

    def write(self, records: pa.Table, window: tuple[datetime, datetime]) -> None:
        kind = records["kind"][0].as_py()
        path = self.dir / f"{kind}-{_stamp(window[0])}-{_stamp(window[1])}.parquet"
        tmp = path.with_suffix(".parquet.tmp")
        try:
            pq.write_table(records, tmp)
            os.replace(tmp, path)
        except OSError as exc:
            raise ExportError(f"parquet export to {self.dir}: {exc}") from None

    def close(self) -> None:
        return None


class JsonlSink:
    """Appends one JSON object a line to a file (flushed and synced before the cursor moves)."""

    def __init__(self, config: JsonlExport, base_dir: Path):
        path = Path(config.path)
        self.path = path if path.is_absolute() else base_dir / path
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, records: pa.Table, window: tuple[datetime, datetime]) -> None:
        try:
            with open(self.path, "ab") as f:
                f.write(b"".join(line + b"\n" for line in json_lines(records)))
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise ExportError(f"jsonl export to {self.path}: {exc}") from None

    def close(self) -> None:
        return None


class WebhookSink:
    """POSTs ``{"type": "ceap.outcomes", "data": [records]}`` in batches, signed as the
    webhook channel signs (Standard Webhooks), through the same SSRF guard. The
    ``webhook-id`` is a hash of the batch's record ids: the same on a resend."""

    def __init__(self, config: WebhookExport, export: str):
        from ceap.channels.http_common import guarded_client
        from ceap.channels.webhook import secret_key

        secret = os.environ.get(config.secret_env)
        if not secret:
            raise ExportError(f"export {export!r}: environment variable {config.secret_env} "
                              "(the webhook signing secret) is not set")
        self.config = config
        self.export = export
        self.key = secret_key(secret)
        self.client = guarded_client(config.allow_private, config.timeout)

    def write(self, records: pa.Table, window: tuple[datetime, datetime]) -> None:
        from ceap.channels.http_common import Refused
        from ceap.channels.webhook import sign

        for start in range(0, records.num_rows, self.config.batch):
            part = records.slice(start, self.config.batch)
            ids = "\n".join(part["id"].to_pylist())
            msg_id = f"{self.export}:" + hashlib.sha256(ids.encode()).hexdigest()[:32]
            body = b'{"type":"ceap.outcomes","data":[' + b",".join(json_lines(part)) + b"]}"
            ts = int(time.time())
            headers = {"Content-Type": "application/json", "webhook-id": msg_id,
                       "webhook-timestamp": str(ts), "webhook-signature": sign(self.key, msg_id, ts, body)}
            try:
                answer = self.client.request("POST", self.config.url, body, headers)
            except (Refused, OSError) as exc:
                raise ExportError(f"webhook export {self.export!r}: {type(exc).__name__}: {exc}") from None
            except Exception as exc:  # http.client errors: the receiver broke the connection
                raise ExportError(f"webhook export {self.export!r}: {type(exc).__name__}") from None
            if not 200 <= answer.status < 300:  # the receiver's body is never echoed
                raise ExportError(f"webhook export {self.export!r}: HTTP {answer.status}")

    def close(self) -> None:
        self.client.close()


class StreamSink:
    """Publishes each record as one message (JSON) to a stream named in ``ceap.yaml``."""

    def __init__(self, config: StreamExport, open_stream: Callable[[str], Any]):
        self.config = config
        self.stream = open_stream(config.stream)

    def write(self, records: pa.Table, window: tuple[datetime, datetime]) -> None:
        lines = json_lines(records)
        try:
            for start in range(0, len(lines), self.config.batch):
                self.stream.publish(lines[start:start + self.config.batch])
        except Exception as exc:
            raise ExportError(f"stream export to {self.config.stream!r}: "
                              f"{type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        self.stream.close()


def open_sink(config: Any, base_dir: Path, open_stream: Callable[[str], Any] | None = None) -> Sink:
    if isinstance(config, ParquetExport):
        return ParquetSink(config, base_dir)
    if isinstance(config, JsonlExport):
        return JsonlSink(config, base_dir)
    if isinstance(config, WebhookExport):
        return WebhookSink(config, config.key())
    if isinstance(config, StreamExport):
        if open_stream is None:
            raise ExportError("a stream export needs the project's streams")
        return StreamSink(config, open_stream)
    raise ExportError(f"unknown export type {getattr(config, 'type', config)!r}")


__all__ = ["ExportError", "JsonlSink", "ParquetSink", "Sink", "StreamSink", "WebhookSink", "json_lines",
           "open_sink"]
