"""schemathesis against `ceap serve`: every check, generated requests, no 5xx and no
answer that /openapi.json does not describe (issue 8 §2 and §3).

Runs over a real server (uvicorn on a free port, embedded ingest stream): on SQLite with
a valid API key and without one, on a ``--no-auth`` server (whose Twilio webhooks take
unsigned forms, so the fuzzer reaches their handlers), and on PostgreSQL with a key
(its text cannot hold what SQLite's can). ``CEAP_API_FUZZ_EXAMPLES`` is the number of
examples per operation of the first two runs, a third of it for the others, with every
phase of schemathesis (``make test-api-fuzz``: 300; CI: 150). Without it (``make test``)
each run is a smoke run: 3 examples per operation in the fuzzing and stateful phases only
(the coverage phase's ~2,000 fixed cases per run are left to ``make test-api-fuzz``).
``CEAP_API_FUZZ_SEED`` picks the seed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ceap.api.auth import SCOPES, create_key
from ceap.store import open_store
from tests.conftest import PG_BASE, require_service

EXAMPLES = int(os.environ.get("CEAP_API_FUZZ_EXAMPLES", "3"))
FEWER = max(EXAMPLES // 3, min(EXAMPLES, 5))  # the runs on --no-auth and PostgreSQL
#: make test's smoke run leaves out the examples and coverage phases
PHASES = [] if "CEAP_API_FUZZ_EXAMPLES" in os.environ else ["--phases", "fuzzing,stateful"]
SEED = os.environ.get("CEAP_API_FUZZ_SEED", "20261206")
CONFIG = Path(__file__).parent / "schemathesis.toml"
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    def __init__(self, url: str, key: str, workdir: Path):
        self.url, self.key, self.workdir = url, key, workdir

    @property
    def tested(self) -> str:
        """The summary line of a run that tested every operation of /openapi.json."""
        paths = httpx.get(f"{self.url}/openapi.json", timeout=10).json()["paths"]
        methods = {"get", "put", "post", "delete", "patch", "options", "head"}
        return f"Tested: {sum(1 for ops in paths.values() for m in ops if m in methods)}"


def _serve(tmp: Path, *, auth: bool, store_url: str | None = None) -> Iterator[Served]:
    tmp.mkdir(parents=True, exist_ok=True)
    store_url = store_url or f"sqlite:///{tmp / 'ceap.db'}"
    store = open_store(store_url)
    key = create_key(store, "default", "schemathesis", scopes=SCOPES)  # every route, admin too
    store.close()
    env = {k: v for k, v in os.environ.items() if k not in ("CEAP_STORE", "TWILIO_AUTH_TOKEN")}
    env["CEAP_SIGNING_SECRET"] = "schemathesis-signing-secret"
    if auth:
        env["TWILIO_AUTH_TOKEN"] = "schemathesis-twilio-token"
    port = _free_port()
    args = [str(BIN / "ceap"), "--store", store_url, "serve", "--port", str(port)]
    log_path = tmp / "serve.log"
    with log_path.open("wb") as log_file:
        server = subprocess.Popen([*args, *([] if auth else ["--no-auth"])], cwd=tmp, env=env,
                                  stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                pytest.fail(f"ceap serve exited: {log_path.read_text(errors='replace')}")
            time.sleep(0.1)
        yield Served(url, key, tmp)
    finally:
        server.terminate()
        server.wait(timeout=30)
    log = log_path.read_text(errors="replace")
    assert "Traceback" not in log, log  # no request made the server log an unhandled error


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _serve(tmp_path_factory.mktemp("keyed"), auth=True)


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _serve(tmp_path_factory.mktemp("open"), auth=False)


@pytest.fixture(scope="module")
def keyed_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    require_service("postgres")
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield from _serve(tmp_path_factory.mktemp("postgres"), auth=True,
                          store_url=f"{PG_BASE}?options=-csearch_path%3D{schema}")
    finally:
        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def schemathesis(served: Served, *extra: str, examples: int = EXAMPLES, label: str = "") -> str:
    """Run every check with ``examples`` examples per operation; the run's summary."""
    args = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run",
            f"{served.url}/openapi.json", "--checks", "all", "--max-examples", str(examples),
            "--seed", SEED, *PHASES, "--no-color", "--output-truncate", "true", *extra]
    done = subprocess.run(args, cwd=served.workdir, capture_output=True, text=True, timeout=1800)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    summary = output[output.rfind("SUMMARY"):]
    print(f"\nschemathesis, {label}, {examples} examples per operation\n{summary}")
    return summary


def test_with_a_valid_key(keyed: Served) -> None:
    summary = schemathesis(keyed, "--header", f"Authorization: Bearer {keyed.key}", label="SQLite, key")
    assert keyed.tested in summary and "passed" in summary


def test_without_a_key(keyed: Served) -> None:
    summary = schemathesis(keyed, label="SQLite, no key")
    assert keyed.tested in summary


def test_without_keys_and_unsigned_twilio_webhooks(open_server: Served) -> None:
    summary = schemathesis(open_server, examples=FEWER, label="SQLite, --no-auth")
    assert open_server.tested in summary


def test_with_a_valid_key_on_postgres(keyed_postgres: Served) -> None:
    summary = schemathesis(keyed_postgres, "--header", f"Authorization: Bearer {keyed_postgres.key}",
                           examples=FEWER, label="PostgreSQL, key")
    assert keyed_postgres.tested in summary
