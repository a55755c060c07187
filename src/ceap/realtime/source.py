"""The stream connector contract: poll raw events, commit after their effects are stored.

A stream connector is a connector plugin (entry-point group ``ceap.connectors``)
whose class also subclasses ``StreamConnector``. The worker calls ``poll`` for a
bounded micro-batch, stores every effect (state, candidates), and only then
calls ``commit`` with the messages' tokens: delivery is at least once, and the
worker's effects are idempotent by event id, so a redelivery changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, NamedTuple, TypeVar

import pyarrow as pa
from pydantic import Field

from ceap.connectors.base import Connector, ConnectorConfig


class Received(NamedTuple):
    """One message from a stream: its body (a JSON event or a JSON list of events),
    the token ``commit`` needs to acknowledge it, and the partition it came from
    (Kafka: ``topic[n]``; one name for a stream without partitions). Event time
    progresses per partition: lateness and timers are judged on the message's own
    partition. (A named tuple: a poll makes one per message, and a frozen dataclass
    cost twice as much to build.)"""

    body: bytes
    token: Any
    partition: str = ""


class StreamConfig(ConnectorConfig):
    """Fields every stream connector has."""

    group: str = Field("ceap", description="consumer group: workers in one group share the load")
    consumer: str | None = Field(None, description="this worker's name in the group (default: host:pid)")


SC = TypeVar("SC", bound=StreamConfig)


class StreamConnector(Connector[SC]):
    """A source of events read in a consumer group."""

    #: True when the broker redelivers what a dead consumer had not committed
    redelivers: ClassVar[bool] = True
    #: True when the group gives each partition to one member at a time (Kafka's
    #: partitions, Kinesis's one active reader): the worker may then keep each partition's
    #: state in memory (``ceap.realtime.keyed``). A stream whose members share one
    #: partition (Redis Streams, NATS, RabbitMQ, the embedded queue) would make every
    #: worker restore the shared partition at nearly every micro-batch: there the
    #: history is read from the event log instead.
    owns_partitions: ClassVar[bool] = False

    def poll(self, max_messages: int, timeout: float) -> list[Received]:
        """Up to ``max_messages`` messages, waiting at most ``timeout`` seconds for the first."""
        raise NotImplementedError

    def commit(self, tokens: Sequence[Any]) -> None:
        """Acknowledge messages whose effects are stored; they are not delivered again."""
        raise NotImplementedError

    def publish(self, bodies: Sequence[bytes]) -> None:
        """Append messages to the stream (the HTTP ingest and tests use it)."""
        raise NotImplementedError

    def lag(self) -> int | None:
        """Messages waiting for this group, when the broker can tell cheaply."""
        return None

    def close(self) -> None:
        """Release connections."""

    # a stream has no fixed schema and no end: the batch contract does not apply
    def schema(self) -> pa.Schema:
        raise NotImplementedError("a stream has no fixed schema; the worker parses its events")

    def read(self) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError("a stream is read by `ceap worker`, not by `ceap run`")
