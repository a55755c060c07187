"""``ceap serve --workers 2`` with PROMETHEUS_MULTIPROC_DIR: a scrape of any process
counts the requests of both."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.obs_helpers import value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_server_processes_are_scraped_as_one(tmp_path: Path) -> None:
    folder = tmp_path / "prom"
    folder.mkdir()
    (folder / "stale.db").write_bytes(b"")  # a previous server's file: emptied at start
    port = free_port()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder), "CEAP_LOG_FORMAT": "json"}
    ceap = Path(sys.executable).with_name("ceap")
    server = subprocess.Popen([str(ceap), "--project", str(tmp_path), "--store",
                               f"sqlite:///{tmp_path / 'api.db'}", "serve", "--no-auth",
                               "--workers", "2", "--port", str(port)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.25)
        for _ in range(30):  # a new connection each time: the processes share the requests
            assert httpx.get(f"{base}/v1/customers/x/inbox", timeout=5).status_code == 200
        for _ in range(3):
            text = httpx.get(f"{base}/metrics", timeout=5).text
            counted = value(text, "ceap_http_requests_total", method="GET",
                            route="/v1/customers/{customer_id}/inbox", status="200")
            assert counted == 30  # whichever process answered the scrape
        assert not (folder / "stale.db").exists()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
