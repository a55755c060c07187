"""`ceap serve --workers 2`: two server processes on one port over one store (SQLite and
PostgreSQL), each reading what the others and outside writers commit, at once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from ceap.api.auth import create_key
from ceap.model import InboxItem, RunRecord, utcnow
from ceap.store import open_store
from ceap.testing.doubles import make_candidates

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _workers(pid: int) -> list[int]:
    """The worker processes uvicorn's supervisor ``pid`` started (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in command:
                found.append(int(entry.name))
    return found


def _write(url: str, run_id: str, customers: list[str]) -> None:
    store = open_store(url, migrate=False)
    try:
        now = utcnow() - timedelta(minutes=1)
        table = make_candidates(len(customers), now=now, run_id=run_id,
                                customer_id=lambda i: customers[i],
                                dedup_key=lambda i: f"{run_id}-{i}", channels=["inapp"])
        store.write_run(RunRecord(run_id, "default", "conformance", "succeeded", now), table)
    finally:
        store.close()


@pytest.fixture
def served(store_url: str, tmp_path: Path) -> Iterator[tuple[str, str, str, subprocess.Popen[bytes]]]:
    store = open_store(store_url)
    key = create_key(store, "default", "workers-test")
    store.close()
    env = {k: v for k, v in os.environ.items() if k != "CEAP_STORE"}
    port = _free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen([str(BIN / "ceap"), "--store", store_url, "serve", "--port",
                                   str(port), "--workers", "2"], cwd=tmp_path, env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 480  # three processes start (slowly on a busy machine)
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                pytest.fail(f"ceap serve exited: {log_path.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                pytest.fail(f"ceap serve --workers 2 did not start: {log_path.read_text(errors='replace')}")
            time.sleep(0.2)
        yield url, key, store_url, server
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    text = log_path.read_text(errors="replace")
    assert "Traceback" not in text, text


def test_two_workers_serve_one_store_and_see_every_write(
        served: tuple[str, str, str, subprocess.Popen[bytes]]) -> None:
    url, key, store_url, server = served
    assert len(_workers(server.pid)) == 2
    headers = {"Authorization": f"Bearer {key}"}
    customers = [f"u{i}" for i in range(20)]
    with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
        assert client.get("/v1/customers/u1/candidates").json() == []
        for step in range(1, 4):
            _write(store_url, f"r{step}", customers)  # written by another process, committed
            for customer in customers:  # a new connection: either worker may take it
                with httpx.Client(base_url=url, headers=headers, timeout=10) as fresh:
                    got = fresh.get(f"/v1/customers/{customer}/candidates", params={"limit": 50})
                assert got.status_code == 200
                assert len(got.json()) == step

        writer = open_store(store_url, migrate=False)
        try:
            writer.inbox_add([InboxItem("default", "u1", f"k{i}", "p", f"t{i}", "b") for i in range(4)])
        finally:
            writer.close()
        ids = [m["id"] for m in client.get("/v1/customers/u1/inbox").json()]
        assert len(ids) == 4
        marked = client.post("/v1/customers/u1/inbox/read", json={"ids": ids[:3]}).json()
        assert marked == {"marked": 3}
        for _ in range(6):  # whichever worker answers, the mark (a write by a worker) is seen
            with httpx.Client(base_url=url, headers=headers, timeout=10) as fresh:
                unread = fresh.get("/v1/customers/u1/inbox", params={"unread": "true"}).json()
            assert [m["id"] for m in unread] == ids[3:]
