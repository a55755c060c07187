"""Shared fixtures. Service-backed tests use the real service on this machine;
with CEAP_REQUIRE_SERVICES=1 (set by .ci/run) a missing service fails the test
instead of skipping it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
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


class PgSchemas:
    """The client of ``tests/pg_schemas.py``: schemas at the newest revision built ahead of
    the tests, and emptied (or dropped) behind them, in that process."""

    def __init__(self, ahead: int = 2) -> None:
        self._ahead = ahead
        self._proc: subprocess.Popen[str] | None = None

    def _builder(self) -> subprocess.Popen[str]:
        if self._proc is None:
            self._proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("pg_schemas.py")), PG_BASE, str(self._ahead)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                bufsize=1)
        return self._proc

    def take(self) -> str:
        """A schema at the newest revision, migrated by ``open_store`` from an empty one."""
        proc = self._builder()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("take\n")
        line = proc.stdout.readline().rstrip("\n")
        if not line:
            pytest.fail(f"tests/pg_schemas.py exited ({proc.poll()})")
        if line.startswith("!"):
            pytest.fail("building a PostgreSQL schema at the newest revision failed:\n"
                        + line[1:].replace("\\n", "\n"))
        return line

    def done(self, schema: str, *, drop: bool = False) -> None:
        """A test is done with ``schema``: empty it for another test (or ``drop`` it) while the
        next tests run."""
        proc = self._builder()
        assert proc.stdin is not None
        proc.stdin.write(f"{'drop' if drop else 'done'} {schema}\n")

    def close(self) -> None:
        """Wait for the drops, and the schemas nobody took, to be dropped."""
        if self._proc is not None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            self._proc.wait(timeout=300)
            self._proc = None


@pytest.fixture(scope="session")
def pg_schemas() -> Iterator[PgSchemas]:
    schemas = PgSchemas()
    try:
        yield schemas
    finally:
        schemas.close()


@pytest.fixture
def pg_url(pg_schemas: PgSchemas) -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a schema of its own at the newest revision, as
    ``open_store`` leaves an empty one, with no row (``tests/pg_schemas.py``);
    ``pg_empty_url``: an empty schema."""
    from tests.pg_schemas import url_of

    require_service("postgres")
    schema = pg_schemas.take()
    try:
        yield url_of(PG_BASE, schema)
    finally:
        pg_schemas.done(schema)


@pytest.fixture
def pg_empty_url(pg_schemas: PgSchemas) -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh, empty schema, dropped afterwards."""
    require_service("postgres")
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    finally:
        pg_schemas.done(schema, drop=True)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ceap.db'}"


@pytest.fixture
def context(tmp_path: Path) -> PluginContext:
    return PluginContext(base_dir=tmp_path)


@pytest.fixture(scope="session")
def sqlite_migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database file that ``open_store`` migrated from nothing to the newest revision."""
    from ceap.store import open_store

    path = tmp_path_factory.mktemp("sqlite-migrated") / "ceap.db"
    open_store(f"sqlite:///{path}").close()
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_migrated: Path) -> str:
    """The same test on the embedded store and on the real PostgreSQL: a database of its own
    at the newest revision (on SQLite a copy of ``sqlite_migrated``), with no row."""
    if request.param == "sqlite":
        shutil.copyfile(sqlite_migrated, tmp_path / "ceap.db")
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
