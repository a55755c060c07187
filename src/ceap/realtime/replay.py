"""Replay a file of events (JSON Lines) as a stream: the demo and the flow tests
feed real-time programs this way, through the same worker as a live broker."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field

from ceap.connectors.base import ConnectorConfig
from ceap.errors import SourceError
from ceap.realtime.source import Received, StreamConfig, StreamConnector


class ReplayConfig(StreamConfig):
    type: Literal["replay"] = "replay"
    path: str = Field(description="a JSON Lines file of events, in the order to replay them")


class ReplayConnector(StreamConnector[ReplayConfig]):
    """Each line is one message; ``commit`` is a no-op (a file is not a broker)."""

    config_model: ClassVar[type[ConnectorConfig]] = ReplayConfig
    redelivers: ClassVar[bool] = False

    def __init__(self, config: ReplayConfig, context: Any = None):
        super().__init__(config, context)
        path = self.context.path(config.path)
        if not path.is_file():
            raise SourceError(f"source.path: no file {config.path!r} ({path})")
        self._lines = [line for line in path.read_bytes().splitlines() if line.strip()]
        self._next = 0

    def describe(self) -> str:
        return self.config.path

    def poll(self, max_messages: int, timeout: float) -> list[Received]:
        chunk = self._lines[self._next:self._next + max_messages]
        start = self._next
        self._next += len(chunk)
        return [Received(body, start + i) for i, body in enumerate(chunk)]

    def commit(self, tokens: Sequence[Any]) -> None:
        return None

    def lag(self) -> int:
        return len(self._lines) - self._next

    def publish(self, bodies: Sequence[bytes]) -> None:
        raise SourceError("a replay file is read-only")
