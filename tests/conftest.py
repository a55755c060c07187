"""Shared fixtures. Service-backed tests use the real service on this machine;
with CEAP_REQUIRE_SERVICES=1 (set by .ci/run) a missing service fails the test
instead of skipping it."""

from __future__ import annotations

import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ceap.plugin import PluginContext

SERVICES = {
    "postgres": ("127.0.0.1", 5432),
    "redis": ("127.0.0.1", 6379),
    "rabbitmq": ("127.0.0.1", 5672),
    "mosquitto": ("127.0.0.1", 1883),
    "nats": ("127.0.0.1", 4222),
}
PG_BASE = os.environ.get("CEAP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
# what ceap remembers between runs (ceap.sqlcache) goes to a folder of this test session,
# also for the ceap commands the tests start, not to the user's ~/.cache
os.environ["CEAP_CACHE_DIR"] = tempfile.mkdtemp(prefix="ceap-test-cache-")


def require_service(name: str) -> None:
    host, port = SERVICES[name]
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        message = f"service {name} at {host}:{port} is not reachable: {exc}"
        if os.environ.get("CEAP_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    require_service("postgres")
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ceap.db'}"


@pytest.fixture
def context(tmp_path: Path) -> PluginContext:
    return PluginContext(base_dir=tmp_path)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on the embedded store and on the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ceap.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[Any]:
    """An open, migrated store on each backend (files may override it with their own)."""
    from ceap.store import open_store

    opened = open_store(store_url)
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """An AWS API (S3, DynamoDB, Athena...) over HTTP on this machine: moto's server,
    started on a free port for the test session. Tests use unique bucket/table names."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The environment a user would set for an S3-compatible endpoint (credentials from the
    environment, as the default chain reads them); returns the endpoint URL."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIACEAPTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "ceap-test-secret-value-0123456789")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    return moto_endpoint


@pytest.fixture(scope="session")
def snowflake_url() -> Iterator[str]:
    """A Snowflake emulator over HTTP (fakesnow's server: Snowflake's REST protocol in front
    of DuckDB) with database ANALYTICS and schema CRM; the URL a ceap.yaml would hold."""
    import fakesnow
    import snowflake.connector

    with fakesnow.server() as kwargs:
        conn = snowflake.connector.connect(**kwargs)
        for sql in ("CREATE DATABASE IF NOT EXISTS ANALYTICS", "CREATE SCHEMA IF NOT EXISTS ANALYTICS.CRM"):
            conn.cursor().execute(sql)
        conn.close()
        yield (f"snowflake://{kwargs['user']}:{kwargs['password']}@{kwargs['account']}/ANALYTICS/CRM"
               f"?host={kwargs['host']}&port={kwargs['port']}&protocol={kwargs['protocol']}")


@pytest.fixture
def dynamodb_url(aws: str) -> str:
    """A fresh DynamoDB table (created by the store's migrate) on moto's server."""
    return f"dynamodb://ceap-{uuid.uuid4().hex[:12]}?region=us-east-1"
