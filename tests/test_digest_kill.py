"""Kill ``ceap dispatch`` with SIGKILL while it flushes digests, restart it, and count,
at the settings users get (default batch size, the SMTP channel's default concurrency,
no ``sent_keys`` ledger; only the lease is shortened so a restart need not wait 30 s).

1,500 customers each have 3 comments held for a 1 h digest whose window has passed.
The first ``ceap dispatch`` is killed between its two flush transactions (of ``CHUNK``
digests): the test starts it through a wrapper that stops the process (SIGSTOP) right
after the first one committed, and kills it there, so the kill lands in the same place
however loaded the machine is; a second run is killed at a random moment once the SMTP
server has seen a message; then runs finish the work. Then: every customer has exactly one
digest message holding its 3 comments, every comment is in it, and the server received
at most one message per customer (none twice); what was in flight at a kill is held
(``ambiguous``), at most kills x concurrency of them.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml
from aiosmtpd.controller import Controller

from ceap.channels.email_smtp import SmtpConfig
from ceap.delivery.digest import CHUNK
from ceap.delivery.profiles import upsert_profiles
from ceap.delivery.unsubscribe import SECRET_ENV
from ceap.model import RunRecord, utcnow
from ceap.store import open_store
from ceap.testing.doubles import make_candidates
from tests.digest_helpers import DIGEST_TEMPLATE
from tests.test_reliability_kill import free_port

CUSTOMERS, ITEMS = 1500, 3
CONCURRENCY = int(SmtpConfig.model_fields["concurrency"].default)
LEASE = 1.0
#: ``ceap dispatch``, stopping itself (SIGSTOP) once its first flush transaction committed
STOP_AFTER_A_FLUSH = """
import os, signal
from ceap.cli import main
from ceap.delivery.digest import Digests

flush = Digests._flush

def flush_then_stop(self, *args, **kwargs):
    committed = flush(self, *args, **kwargs)
    if committed:
        os.kill(os.getpid(), signal.SIGSTOP)
    return committed

Digests._flush = flush_then_stop
main()
"""


class Recorder:
    """Counts the messages the server accepted, per recipient and per Message-ID."""

    def __init__(self) -> None:
        self.by_rcpt: Counter[str] = Counter()
        self.ids: Counter[str] = Counter()
        self._parser = BytesHeaderParser()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.ids[str(self._parser.parsebytes(envelope.content)["Message-ID"])] += 1
        for rcpt in envelope.rcpt_tos:
            self.by_rcpt[rcpt] += 1
        return "250 2.0.0 queued"


def _project(root: Path, port: int) -> str:
    url = f"sqlite:///{root / 'ceap.db'}"
    (root / "programs").mkdir(parents=True)
    (root / "templates").mkdir()
    (root / "ceap.yaml").write_text(yaml.safe_dump({
        "store": url,
        "channels": {"email": {"type": "smtp", "host": "127.0.0.1", "port": port, "security": "none",
                               "from_address": "Acme <news@acme.example>", "timeout": 10}},
        "delivery": {"templates": {"unsubscribe_url": "https://acme.example/u"}}}, sort_keys=False))
    (root / "programs" / "comments.yaml").write_text(yaml.safe_dump({
        "name": "comments", "source": {"type": "csv", "path": "comments.csv", "subject_id": "comment_id"},
        "action": {"type": "inform", "channels": ["email"], "template": "comments_digest",
                   "payload_columns": ["author", "text"], "digest": {"window": "1h", "max_items": 2}}},
        sort_keys=False))
    (root / "templates" / "comments_digest.yaml").write_text(yaml.safe_dump(DIGEST_TEMPLATE))
    return url


def _seed(url: str) -> None:
    """Comments of two hours ago, held for their digest (as a run writes them)."""
    at = utcnow() - timedelta(hours=2)
    n = CUSTOMERS * ITEMS
    store = open_store(url)
    try:
        store.write_run(RunRecord("r1", "default", "comments", "succeeded", at), make_candidates(
            n, now=at, program="comments", run_id="r1", channels=["email"], category="marketing",
            template="comments_digest", status="digest", customer_id=lambda i: f"c{i // ITEMS}",
            subject_id=lambda i: f"m{i}", payload=lambda i: {"author": f"a{i}", "text": f"t{i}"},
            created_at=lambda i: at + timedelta(seconds=i % ITEMS)))
        upsert_profiles(store, pa.table({"customer_id": [f"c{i}" for i in range(CUSTOMERS)],
                                         "email": [f"c{i}@customers.example" for i in range(CUSTOMERS)]}),
                        "default")
    finally:
        store.close()


def _count(db: Path, sql: str) -> int:
    with sqlite3.connect(db, timeout=30) as conn:
        return int(conn.execute(sql).fetchone()[0])


def _stopped(proc: subprocess.Popen[bytes], within: float = 300) -> bool:
    """Whether ``proc`` stopped itself (SIGSTOP), waiting for it; False when it ended first
    (its exit code then in ``proc.returncode``). ``within`` only bounds a hang."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        pid, status = os.waitpid(proc.pid, os.WUNTRACED | os.WNOHANG)
        if pid:
            if os.WIFSTOPPED(status):
                return True
            proc.returncode = os.waitstatus_to_exitcode(status)
            return False
        time.sleep(0.01)
    return False


def test_a_kill_mid_flush_then_a_rerun_sends_one_digest_per_customer(tmp_path: Path) -> None:
    recorder = Recorder()
    port = free_port()
    server = Controller(recorder, hostname="127.0.0.1", port=port)
    server.start()
    root = tmp_path / "project"
    url = _project(root, port)
    _seed(url)
    db = tmp_path / "project" / "ceap.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CEAP_")}
    env[SECRET_ENV] = "kill-test-signing-secret-0123456789"
    procs: list[subprocess.Popen[bytes]] = []

    def start(*python: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"dispatch-{len(procs)}.log").open("wb")
        proc = subprocess.Popen([sys.executable, *(python or ("-m", "ceap")), "--project", str(root),
                                 "dispatch", "--lease", f"{LEASE:g}"], stdout=log,
                                stderr=subprocess.STDOUT, env=env, cwd=root)
        log.close()
        procs.append(proc)
        return proc

    messages = "SELECT count(*) FROM candidates WHERE run_id = 'digest'"
    kills, written = 0, -1
    try:
        proc = start("-c", STOP_AFTER_A_FLUSH)  # 1: killed between two flush transactions
        stopped = _stopped(proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert stopped, f"the first run never stopped after a flush (exit code {proc.returncode}): " + \
            (tmp_path / "dispatch-0.log").read_text()
        kills, written = 1, _count(db, messages)
        proc = start()  # 2: killed at a random moment once it sends
        before = sum(recorder.ids.values())
        while sum(recorder.ids.values()) == before and proc.poll() is None:
            time.sleep(0.005)
        time.sleep(random.uniform(0.0, 0.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            kills += 1
        for _ in range(4):  # finish, once the leases ran out
            time.sleep(LEASE + 0.3)
            assert start().wait(600) == 0, (tmp_path / f"dispatch-{len(procs) - 1}.log").read_text()
            if not _count(db, "SELECT count(*) FROM deliveries WHERE status IN ('queued', 'sending')"):
                break
        time.sleep(0.2)  # the server's last DATA handler
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(30)
        server.stop()
    # the first flush transaction had committed, the second had not begun
    assert 0 < written == CHUNK < CUSTOMERS, written
    with sqlite3.connect(db) as conn:
        per_customer = Counter(r[0] for r in conn.execute(
            "SELECT customer_id FROM candidates WHERE run_id = 'digest'"))
        items = dict(conn.execute("SELECT status, count(*) FROM candidates WHERE run_id = 'r1' "
                                  "GROUP BY status").fetchall())
        linked = conn.execute(
            "SELECT count(*) FROM digest_items i JOIN candidates m ON m.id = i.message_id "
            "WHERE m.customer_id = i.customer_id AND m.run_id = 'digest'").fetchone()[0]
        counts = Counter(r[0] for r in conn.execute(
            "SELECT json_extract(payload, '$.digest.count') FROM candidates WHERE run_id = 'digest'"))
        deliveries = Counter(r[0] for r in conn.execute("SELECT status FROM deliveries"))
    assert per_customer == Counter({f"c{i}": 1 for i in range(CUSTOMERS)})
    assert items == {"digested": CUSTOMERS * ITEMS} and linked == CUSTOMERS * ITEMS
    assert counts == Counter({ITEMS: CUSTOMERS})
    assert sum(deliveries.values()) == CUSTOMERS and set(deliveries) <= {"sent", "ambiguous"}
    assert deliveries["ambiguous"] <= kills * CONCURRENCY
    assert max(recorder.ids.values()) == 1 and max(recorder.by_rcpt.values()) == 1
    assert sum(recorder.by_rcpt.values()) >= deliveries["sent"]
    print(f"\ndigest kill test: {kills} kills (1 mid-flush), deliveries {dict(deliveries)}, "
          f"server received {sum(recorder.ids.values())} messages for {len(recorder.by_rcpt)} customers")
