"""Kafka (and Kafka-protocol brokers) through confluent-kafka (``pip install 'ceap[kafka]'``).

The group is a Kafka consumer group: its members split the topic's partitions,
and when one leaves or stops heartbeating for ``session_timeout`` seconds the
broker hands its partitions to the others, which resume from the last
committed offsets. Offsets are committed only by ``commit``, synchronously,
for the messages given (the next offset of the highest one per partition), so
tokens must be committed in the order they were polled. ``publish`` keys each
message by its customer id, so one customer's events stay in one partition,
in order, read by one worker.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from ceap.connectors.base import ConnectorConfig
from ceap.connectors.streams_common import body_keys, consumer_name, env_value, need
from ceap.errors import SourceError
from ceap.realtime.source import Received, StreamConfig, StreamConnector

log = logging.getLogger(__name__)

#: seconds ``lag()`` waits for the broker's metadata and offsets
METADATA_TIMEOUT = 10.0

#: commit errors that mean the partition moved to another member: it re-reads from the last commit
_MOVED = ("ILLEGAL_GENERATION", "UNKNOWN_MEMBER_ID", "REBALANCE_IN_PROGRESS", "_STATE", "_ASSIGNMENT_LOST")


class KafkaConfig(StreamConfig):
    type: Literal["kafka"] = "kafka"
    topic: str = Field(min_length=1)
    bootstrap_servers: str = Field("127.0.0.1:9092", description="host:port[,host:port...]")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password_env: str | None = Field(None, description="environment variable holding the SASL password")
    start: Literal["earliest", "latest"] = Field("earliest", description="where a new group starts reading")
    session_timeout: float = Field(10.0, ge=1, description="seconds without heartbeat before a member is "
                                                           "dropped and its partitions reassigned")
    partitions: int | None = Field(None, gt=0, description="create the topic with this many partitions "
                                                           "when missing")
    options: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="more librdkafka settings (no secrets: use sasl_password_env)")

    @field_validator("options")
    @classmethod
    def _no_secrets(cls, value: dict[str, Any]) -> dict[str, Any]:
        secret = [k for k in value if any(w in k for w in ("password", "secret", "key.pem", "token"))]
        if secret:
            raise ValueError(f"{', '.join(secret)}: no secrets in the config (use sasl_password_env)")
        return value


class KafkaConnector(StreamConnector[KafkaConfig]):
    config_model: ClassVar[type[ConnectorConfig]] = KafkaConfig
    owns_partitions: ClassVar[bool] = True  # keyed state in memory (ceap.realtime.keyed)

    def __init__(self, config: KafkaConfig, context: Any = None):
        super().__init__(config, context)
        self._kafka = need("confluent_kafka", config.type, "kafka", "confluent-kafka")
        self.name = consumer_name(config.consumer)
        c = config
        self._common: dict[str, Any] = {"bootstrap.servers": c.bootstrap_servers,
                                        "security.protocol": c.security_protocol, "client.id": self.name}
        if c.sasl_mechanism:
            self._common["sasl.mechanism"] = c.sasl_mechanism
        if c.sasl_username:
            self._common["sasl.username"] = c.sasl_username
        if c.sasl_password_env:
            self._common["sasl.password"] = env_value(c.type, c.sasl_password_env, "SASL password",
                                                      self.context)
        self._common.update(c.options)
        if c.partitions:
            self._create_topic(c.partitions)
        self._consumer: Any = None
        self._producer: Any = None
        self._reader: Any = None      # reads the group's offsets without joining it (lag)

    def _client(self, factory: Any, settings: dict[str, Any]) -> Any:
        """A librdkafka client; settings it refuses (a misspelt ``options`` key) are an error
        naming the topic and the setting, not a KafkaException."""
        try:
            return factory(settings)
        except self._kafka.KafkaException as exc:
            raise SourceError(f"kafka topic {self.config.topic!r}: options: {exc.args[0].str()}") from None

    def _create_topic(self, partitions: int) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = self._client(AdminClient, self._common)
        if self.config.topic in admin.list_topics(timeout=10).topics:
            return
        futures = admin.create_topics([NewTopic(self.config.topic, num_partitions=partitions,
                                                replication_factor=-1)], request_timeout=10)
        try:
            futures[self.config.topic].result(15)
        except self._kafka.KafkaException as exc:
            if exc.args[0].code() != self._kafka.KafkaError.TOPIC_ALREADY_EXISTS:
                raise SourceError(f"kafka topic {self.config.topic!r}: {exc}") from None

    def describe(self) -> str:
        return f"kafka topic {self.config.topic} (group {self.config.group})"

    def _consume(self) -> Any:
        if self._consumer is None:
            c = self.config
            self._consumer = self._client(self._kafka.Consumer, {
                **self._common, "group.id": c.group, "enable.auto.commit": False,
                "enable.auto.offset.store": False, "auto.offset.reset": c.start,
                "session.timeout.ms": int(c.session_timeout * 1000),
                "heartbeat.interval.ms": max(100, int(c.session_timeout * 1000 / 5))})
            self._consumer.subscribe([c.topic])
        return self._consumer

    def poll(self, max_messages: int, timeout: float) -> list[Received]:
        consumer = self._consume()
        first = consumer.poll(timeout)   # waits for the first message only
        msgs = [first] if first is not None else []
        if msgs and max_messages > 1:
            msgs += consumer.consume(max_messages - 1, 0)   # what is already fetched
        out = []
        for m in msgs:
            err = m.error()
            if err is None:
                out.append(Received(m.value() or b"", (m.topic(), m.partition(), m.offset()),
                                    f"{m.topic()}[{m.partition()}]"))
            elif err.fatal():
                raise SourceError(f"kafka topic {self.config.topic!r}: {err.str()}")
            elif err.code() != self._kafka.KafkaError._PARTITION_EOF:
                log.warning("kafka topic %s: %s", self.config.topic, err.str())
        return out

    def commit(self, tokens: Sequence[Any]) -> None:
        if not tokens:
            return
        top: dict[tuple[str, int], int] = {}
        for topic, partition, offset in tokens:
            top[(topic, partition)] = max(offset, top.get((topic, partition), -1))
        offsets = [self._kafka.TopicPartition(t, p, o + 1) for (t, p), o in top.items()]
        try:
            self._consume().commit(offsets=offsets, asynchronous=False)
        except self._kafka.KafkaException as exc:
            err = exc.args[0]
            if any(name in err.name() for name in _MOVED):  # another member re-reads them: at least once
                log.warning("kafka topic %s: partitions moved before the commit: %s",
                            self.config.topic, err.str())
                return
            raise SourceError(f"kafka topic {self.config.topic!r}: commit failed: {err.str()}") from None

    def publish(self, bodies: Sequence[bytes]) -> None:
        if self._producer is None:
            self._producer = self._client(self._kafka.Producer,
                                          {"acks": "all", "linger.ms": 5, **self._common})
        failed: list[str] = []

        def report(err: Any, _msg: Any) -> None:
            if err is not None:
                failed.append(err.str())

        for body in bodies:
            key = body_keys(body)[1]
            while True:
                try:
                    self._producer.produce(self.config.topic, body, key=key.encode() if key else None,
                                           on_delivery=report)
                    break
                except BufferError:   # the local queue is full: let it drain
                    self._producer.poll(0.1)
        left = self._producer.flush(30)
        if failed or left:
            raise SourceError(f"kafka topic {self.config.topic!r}: {len(failed) + left} message(s) not "
                              f"stored: {failed[0] if failed else 'timed out'}")

    def lag(self) -> int | None:
        """Messages after the group's committed offsets, over all partitions of the topic; a
        broker that cannot be reached fails naming the topic and the servers."""
        try:
            return self._lag()
        except self._kafka.KafkaException as exc:
            raise SourceError(f"kafka topic {self.config.topic!r} at {self.config.bootstrap_servers}: "
                              f"cannot read its offsets: {exc.args[0].str()}") from None

    def _lag(self) -> int | None:
        if self._consumer is None and self._reader is None:
            self._reader = self._client(self._kafka.Consumer, {
                **self._common, "group.id": self.config.group, "enable.auto.commit": False})
        consumer, tp = self._consumer or self._reader, self._kafka.TopicPartition
        meta = consumer.list_topics(self.config.topic, timeout=METADATA_TIMEOUT).topics.get(self.config.topic)
        if meta is None or meta.error is not None:
            return None
        parts = [tp(self.config.topic, p) for p in meta.partitions]
        total = 0
        for part in consumer.committed(parts, timeout=METADATA_TIMEOUT):
            low, high = consumer.get_watermark_offsets(part, timeout=METADATA_TIMEOUT, cached=False)
            if part.offset >= 0:
                total += max(0, high - part.offset)
            elif self.config.start == "earliest":   # nothing committed yet: all of it
                total += high - low
        return total

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._consumer is not None:
            self._consumer.close()   # leaves the group: the others get its partitions now
            self._consumer = None
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None
