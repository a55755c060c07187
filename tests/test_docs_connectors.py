"""Source errors found by following docs/program-spec.md (`sql` source) as a new user:
a wrong value names the field and what is wrong, never a password."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from ceap.connectors.sql import SqlConnector
from ceap.errors import SourceError
from ceap.plugin import PluginContext


@pytest.mark.parametrize(("url", "expected"), [
    ("mysqlx://ceap:hunter2@db.internal/shop",
     "source.connection: no database driver for mysqlx:// URLs"),
    ("mysql://ceap:hunter2@db.internal/shop",
     "source.connection: the driver of mysql:// URLs is not installed"),
])
def test_an_unknown_database_url_names_the_field_and_the_scheme(
        tmp_path: Path, url: str, expected: str) -> None:
    pytest.importorskip("sqlalchemy")
    if url.startswith("mysql:") and importlib.util.find_spec("MySQLdb"):
        pytest.skip("the MySQL driver is installed here")
    connector = SqlConnector.from_dict({"type": "sql", "connection": "shop", "table": "orders"},
                                       PluginContext(base_dir=tmp_path, connections={"shop": url}))
    with pytest.raises(SourceError) as err:
        connector.schema()
    assert str(err.value).startswith(expected)
    assert "hunter2" not in str(err.value)


def test_an_unreachable_kafka_broker_is_an_error_naming_the_topic_and_servers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``ceap worker --stream kafka`` against a closed port ended in a KafkaException
    traceback (from ``lag()``), where Redis and NATS say ``cannot connect``."""
    pytest.importorskip("confluent_kafka")
    import socket

    from ceap.connectors import streams_kafka

    monkeypatch.setattr(streams_kafka, "METADATA_TIMEOUT", 0.5)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    connector = streams_kafka.KafkaConnector.from_dict(
        {"type": "kafka", "topic": "events", "bootstrap_servers": f"127.0.0.1:{port}",
         "options": {"log_level": 0}})
    try:
        with pytest.raises(SourceError) as err:
            connector.lag()
        assert str(err.value).startswith(
            f"kafka topic 'events' at 127.0.0.1:{port}: cannot read its offsets: ")
    finally:
        connector.close()


def test_a_misspelt_kafka_option_names_the_topic_and_the_setting() -> None:
    """``options: {no.such.option: 1}`` ended ``ceap worker`` with a KafkaException traceback."""
    pytest.importorskip("confluent_kafka")
    from ceap.connectors.streams_kafka import KafkaConnector

    connector = KafkaConnector.from_dict({"type": "kafka", "topic": "events",
                                          "bootstrap_servers": "127.0.0.1:9",
                                          "options": {"fetch.min.bytez": 1}})
    try:
        with pytest.raises(SourceError) as err:
            connector.poll(10, 0.01)
        assert str(err.value) == ("kafka topic 'events': options: No such configuration property: "
                                  '"fetch.min.bytez"')
    finally:
        connector.close()


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "127.0.0.1:6379"])
def test_a_redis_url_without_a_redis_scheme_is_a_config_error(tmp_path: Path, url: str) -> None:
    """A stream's ``url`` that Redis cannot read ended ``ceap worker`` with a ValueError
    traceback; it is now refused where ``ceap.yaml`` is read, at the field."""
    pytest.importorskip("redis")
    from ceap.errors import SpecError
    from ceap.realtime.setup import open_stream
    from ceap.spec.project import load_project
    from ceap.store import open_store

    (tmp_path / "ceap.yaml").write_text(
        f'streams:\n  bus: {{type: redis_streams, stream: e, url: "{url}"}}\n')
    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}", context=PluginContext(base_dir=tmp_path))
    try:
        with pytest.raises(SpecError) as err:
            open_stream(load_project(tmp_path), "bus", store)
        assert str(err.value).endswith("streams.bus.url: expected a redis://, rediss:// or unix:// URL")
    finally:
        store.close()
