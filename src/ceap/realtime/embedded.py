"""The embedded stream: a queue table in the CEAP store, so the HTTP ingest and
the worker need no broker. Claims are leases: a worker that dies leaves its
messages to another once the lease has run out; ``commit`` deletes them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any, ClassVar, Literal

from pydantic import Field

from ceap.connectors.base import ConnectorConfig
from ceap.errors import SourceError
from ceap.model import utcnow
from ceap.realtime.source import Received, StreamConfig, StreamConnector
from ceap.store.base import Store


class EmbeddedConfig(StreamConfig):
    type: Literal["embedded"] = "embedded"
    stream: str = Field("events", description="queue name")
    store: str | None = Field(None, description="store URL; default: the worker's store")
    lease: float = Field(30.0, gt=0, description="seconds a claimed message stays with its worker")


class EmbeddedStream(StreamConnector[EmbeddedConfig]):
    config_model: ClassVar[type[ConnectorConfig]] = EmbeddedConfig

    def __init__(self, config: EmbeddedConfig, context: Any = None):
        super().__init__(config, context)
        self._own: Store | None = None
        self.worker = config.consumer or f"embedded-{id(self):x}"

    @property
    def store(self) -> Store:
        if self.config.store:
            if self._own is None:
                from ceap.store.base import open_store

                self._own = open_store(self.config.store, context=self.context)
            return self._own
        if self.context.store is None:
            raise SourceError("embedded stream: no store (set 'store' or run it from the worker)")
        store: Store = self.context.store
        return store

    def describe(self) -> str:
        return f"embedded:{self.config.stream}"

    def publish(self, bodies: Sequence[bytes]) -> None:
        with self.store.tx() as tx:
            now = tx.ts(utcnow())
            tx.executemany("INSERT INTO stream_queue (stream, body, enqueued_at) VALUES (?, ?, ?)",
                           [(self.config.stream, b.decode(), now) for b in bodies])

    def poll(self, max_messages: int, timeout: float) -> list[Received]:
        now = utcnow()
        with self.store.tx() as tx:
            lock = " FOR UPDATE SKIP LOCKED" if tx.dialect == "postgres" else ""
            ids = [r[0] for r in tx.execute(
                "SELECT id FROM stream_queue WHERE stream = ? AND (lease_until IS NULL "
                f"OR lease_until < ?) ORDER BY id LIMIT ?{lock}",
                (self.config.stream, tx.ts(now), max_messages)).fetchall()]
            if not ids:
                return []
            marks = tx.placeholders(len(ids))
            tx.execute(f"UPDATE stream_queue SET lease_until = ?, worker = ? WHERE id IN ({marks})",
                       (tx.ts(now + timedelta(seconds=self.config.lease)), self.worker, *ids))
            rows = tx.execute(f"SELECT id, body FROM stream_queue WHERE id IN ({marks}) ORDER BY id",
                              ids).fetchall()
        return [Received(body.encode() if isinstance(body, str) else body, i) for i, body in rows]

    def commit(self, tokens: Sequence[Any]) -> None:
        if not tokens:
            return
        with self.store.tx() as tx:
            for start in range(0, len(tokens), 500):
                chunk = list(tokens[start:start + 500])
                tx.execute(f"DELETE FROM stream_queue WHERE id IN ({tx.placeholders(len(chunk))})",
                           chunk)

    def lag(self) -> int:
        with self.store.tx() as tx:
            return int(tx.execute("SELECT count(*) FROM stream_queue WHERE stream = ?",
                                  (self.config.stream,)).fetchone()[0])

    def close(self) -> None:
        if self._own is not None:
            self._own.close()
            self._own = None
