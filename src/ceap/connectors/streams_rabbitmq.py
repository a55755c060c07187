"""RabbitMQ through pika (``pip install 'ceap[rabbitmq]'``).

The group is a durable queue (``queue``; declared when missing, bound to
``exchange`` when one is given): the workers of a group consume it side by
side, each holding at most ``prefetch`` unacknowledged messages. ``commit``
acknowledges each message; when a worker's connection drops (killed, or
silent past the heartbeat) the broker puts what it had not acknowledged back
in the queue at once, for the others. Messages are published persistent, with
publisher confirms.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from time import monotonic
from typing import Any, ClassVar, Literal

from pydantic import Field

from ceap.connectors.base import ConnectorConfig
from ceap.connectors.streams_common import Url, body_keys, consumer_name, env_value, need
from ceap.errors import SourceError
from ceap.realtime.source import Received, StreamConfig, StreamConnector

log = logging.getLogger(__name__)


class RabbitMqConfig(StreamConfig):
    type: Literal["rabbitmq"] = "rabbitmq"
    queue: str = Field(min_length=1, description="the group's durable queue")
    url: Url = Field("amqp://127.0.0.1:5672/%2F", description="AMQP URL without a password (user guest)")
    url_env: str | None = Field(None, description="environment variable holding the URL (with credentials)")
    exchange: str = Field("", description="exchange to publish to and bind the queue to ('': the default)")
    routing_key: str | None = Field(None, description="publish and binding key (default: the queue name)")
    queue_type: Literal["classic", "quorum"] = "classic"
    prefetch: int = Field(500, ge=1, le=65535, description="unacknowledged messages one worker holds at most")
    heartbeat: int = Field(60, ge=0, description="seconds; a worker silent for twice this is dropped")


class RabbitMqConnector(StreamConnector[RabbitMqConfig]):
    config_model: ClassVar[type[ConnectorConfig]] = RabbitMqConfig

    def __init__(self, config: RabbitMqConfig, context: Any = None):
        super().__init__(config, context)
        self._pika = need("pika", config.type, "rabbitmq", "pika")
        self.name = consumer_name(config.consumer)
        self._url = env_value(config.type, config.url_env, "URL", self.context) if config.url_env \
            else config.url
        self._conn: Any = None
        self._generation = 0       # delivery tags are only valid on the channel that got them
        self._buffer: deque[Received] = deque()
        self._connect()

    def describe(self) -> str:
        return f"rabbitmq queue {self.config.queue}"

    def _connect(self) -> None:
        c, pika = self.config, self._pika
        params = pika.URLParameters(self._url)
        params.heartbeat = c.heartbeat
        params.client_properties = {"connection_name": self.name}
        try:
            self._conn = pika.BlockingConnection(params)
            ch = self._conn.channel()
            args = {"x-queue-type": "quorum"} if c.queue_type == "quorum" else None
            ch.queue_declare(c.queue, durable=True, arguments=args)
            if c.exchange:
                ch.queue_bind(c.queue, c.exchange, routing_key=c.routing_key or c.queue)
            ch.basic_qos(prefetch_count=c.prefetch)
            self._generation += 1
            self._consuming = False
            self._channel = ch
            self._out = self._conn.channel()
            self._out.confirm_delivery()
        except pika.exceptions.AMQPError as exc:
            self._drop()
            raise SourceError(f"rabbitmq queue {c.queue!r}: {exc!r}") from None

    def _drop(self) -> None:
        if self._conn is not None and self._conn.is_open:
            with contextlib.suppress(self._pika.exceptions.AMQPError):
                self._conn.close()
        self._conn = None
        self._buffer.clear()

    def _consume(self) -> None:
        """Start consuming (at the first poll: a publishing-only instance holds no messages)."""
        generation = self._generation

        def deliver(_ch: Any, method: Any, _props: Any, body: bytes) -> None:
            self._buffer.append(Received(body, (generation, method.delivery_tag)))

        self._channel.basic_consume(self.config.queue, deliver, consumer_tag=f"{self.name}:{generation}")
        self._consuming = True

    def poll(self, max_messages: int, timeout: float) -> list[Received]:
        if self._conn is None or not self._conn.is_open:
            self._drop()
            self._connect()
        deadline = monotonic() + timeout
        try:
            if not self._consuming:
                self._consume()
            self._conn.process_data_events(0)
            while not self._buffer and (left := deadline - monotonic()) > 0:
                self._conn.process_data_events(left)
        except self._pika.exceptions.AMQPError as exc:
            self._drop()   # the broker requeues what this connection held
            raise SourceError(f"rabbitmq queue {self.config.queue!r}: {exc!r}") from None
        return [self._buffer.popleft() for _ in range(min(max_messages, len(self._buffer)))]

    def commit(self, tokens: Sequence[Any]) -> None:
        stale = 0
        try:
            for generation, tag in tokens:
                if generation != self._generation or self._conn is None:
                    stale += 1    # its channel is gone: the broker has requeued it already
                    continue
                self._channel.basic_ack(tag)
            if self._conn is not None:
                self._conn.process_data_events(0)
        except self._pika.exceptions.AMQPError as exc:
            self._drop()
            log.warning("rabbitmq queue %s: connection lost before the commit (%r): the broker "
                        "redelivers the messages", self.config.queue, exc)
        if stale:
            log.warning("rabbitmq queue %s: %d message(s) came through a closed channel: the broker "
                        "redelivers them", self.config.queue, stale)

    def publish(self, bodies: Sequence[bytes]) -> None:
        c, pika = self.config, self._pika
        if self._conn is None or not self._conn.is_open:
            self._drop()
            self._connect()
        try:
            for body in bodies:
                event_id = body_keys(body)[0]
                props = pika.BasicProperties(delivery_mode=2, content_type="application/json",
                                             message_id=event_id)
                self._out.basic_publish(c.exchange, c.routing_key or c.queue, body, props, mandatory=True)
        except pika.exceptions.AMQPError as exc:
            raise SourceError(f"rabbitmq queue {c.queue!r}: publish failed: {exc!r}") from None

    def lag(self) -> int | None:
        """Messages ready in the queue (not those delivered to a worker and not yet acknowledged:
        AMQP does not tell them)."""
        if self._conn is None or not self._conn.is_open:
            return None
        ok = self._channel.queue_declare(self.config.queue, passive=True)
        return int(ok.method.message_count)

    def close(self) -> None:
        self._drop()   # unacknowledged messages go back to the queue
