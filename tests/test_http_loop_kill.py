"""SIGKILL a dispatcher whose webhook channel drives its lanes from one thread, while
requests are at the receiver, then restart it: at most ``concurrency`` attempts are
``sending`` after each kill, every request the receiver got was begun first, and
after the restarts (``hold``: in-flight attempts are held as ambiguous, not resent)
the receiver got no webhook-id twice and every delivery is sent or held."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow as pa

from ceap.delivery.profiles import upsert_profiles
from ceap.model import RunRecord, utcnow
from ceap.store import open_store
from ceap.testing.doubles import make_candidates

CONCURRENCY = 4
SECRET = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
RUNNER = textwrap.dedent("""
    import sys
    from datetime import timedelta
    from ceap.channels.webhook import WebhookChannel
    from ceap.delivery.dispatcher import Dispatcher
    from ceap.store import open_store
    store = open_store(sys.argv[1])
    channel = WebhookChannel.from_dict({"type": "webhook", "url": sys.argv[2], "allow_private": True,
                                        "secret_env": "HOOK_SECRET", "concurrency": CONCURRENCY})
    assert channel.loop_ready()
    Dispatcher(store, {"webhook": channel}, lease=timedelta(seconds=1), batch_size=100).run()
""").replace("CONCURRENCY", str(CONCURRENCY))


class Receiver:
    """Records each request's idempotency key; at the ``kill_at``-th, kills ``pid``
    before answering (the request is at the receiver, its outcome unknown)."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.lock = threading.Lock()
        self.pid = 0
        self.kill_at = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.keys.append(json.loads(body)["data"]["idempotency_key"])
                    kill = len(receiver.keys) == receiver.kill_at
                if kill:
                    os.kill(receiver.pid, signal.SIGKILL)
                    self.close_connection = True
                    return
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()


def statuses(url: str) -> dict[str, set[str]]:
    store = open_store(url)
    try:
        with store.tx() as tx:
            found: dict[str, set[str]] = {}
            for status, key in tx.execute("SELECT status, idempotency_key FROM deliveries").fetchall():
                found.setdefault(str(status), set()).add(str(key))
            held = {str(k) for (k,) in tx.execute(
                "SELECT idempotency_key FROM deliveries WHERE ambiguous_at IS NOT NULL").fetchall()}
    finally:
        store.close()
    found["held"] = held  # ambiguous_at set: in flight at a crash
    return found


def test_kills_leave_at_most_the_lanes_in_flight_and_resend_nothing(tmp_path: Path) -> None:
    n, kills = 400, (60, 230)
    url = f"sqlite:///{tmp_path / 'ceap.db'}"
    store = open_store(url)
    now = utcnow()
    store.write_run(RunRecord("r1", "default", "kill", "succeeded", now),
                    make_candidates(n, now=now, program="kill", channels=["webhook"]))
    upsert_profiles(store, pa.table({"customer_id": [f"c{i}" for i in range(n)]}), "default")
    store.close()
    receiver = Receiver()
    target = f"http://127.0.0.1:{receiver.httpd.server_address[1]}/hook"
    (tmp_path / "run.py").write_text(RUNNER)
    src = str(Path(__file__).parents[1] / "src")
    env = {**os.environ, "HOOK_SECRET": SECRET,
           "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    try:
        for kill_at in (*kills, 0):
            with receiver.lock:
                receiver.kill_at = kill_at
            proc = subprocess.Popen([sys.executable, str(tmp_path / "run.py"), url, target], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            receiver.pid = proc.pid
            out, _ = proc.communicate(timeout=120)
            found = statuses(url)
            if kill_at:
                assert proc.returncode == -signal.SIGKILL, out.decode()[-2000:]
                # at most one attempt per lane in flight, and whatever the receiver got was begun
                assert len(found.get("sending", set())) <= CONCURRENCY
                with receiver.lock:
                    got = set(receiver.keys)
                assert got <= found.get("sent", set()) | found.get("sending", set()) | found["held"]
                threading.Event().wait(1.2)  # the dead worker's leases run out
            else:
                assert proc.returncode == 0, out.decode()[-2000:]
    finally:
        receiver.httpd.shutdown()
        receiver.httpd.server_close()
    counts = Counter(receiver.keys)
    assert max(counts.values()) == 1  # nothing resent: in-flight attempts are held
    held = found["held"]
    assert len(kills) <= len(held) <= len(kills) * CONCURRENCY
    assert set(found) - {"held"} <= {"sent", "ambiguous"}
    assert found.get("ambiguous", set()) == held
    assert len(found["sent"]) + len(held) == n  # every delivery sent or held
    assert set(counts) <= found["sent"] | held
