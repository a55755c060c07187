"""Kill the dispatcher with SIGKILL at random points, restart it, and count.

A real aiosmtpd server in this process records every message it accepts by
Message-ID (derived from the tenant and the idempotency key, the same on every
attempt). A real ``ceap dispatch`` process sends thousands of candidates to it
and is killed (``kill -9``) several times, each time at a random moment after
it started sending, then restarted; a last run, once every lease has run out,
finishes the work. Then the store and the server are compared:

- with ``resend_in_flight: true``: every candidate ends ``sent``, each message
  reached the server at least once, and the extra copies the server received
  are at most ``kills x window``, where the window is the number of messages a
  killed worker can have had accepted by the server but not yet recorded. Both
  set-ups here make the window 1 (so: at most one duplicate per kill):
  ``ledger`` commits each accepted key to the ``sent_keys`` file before the
  next message goes out (``sent_keys_commit_every: 1``, ``concurrency: 1``);
  ``outbox`` sends one message per batch (``--batch-size 1``), so the outbox
  records each outcome before the next send. Every duplicate's delivery has
  an ``ambiguous`` event;
- without it: attempts in flight at a kill end ``ambiguous`` (held, listed by
  ``ceap deliveries --status ambiguous``), are never resent, and the server
  received no message twice.

The slow runs (3,000 messages, 8 kills, every set-up) are marked ``slow`` and
skipped unless asked for (``make reliability``, ``-m slow`` or ``CEAP_SLOW=1``);
the fast runs (300 messages, 2 kills, ``outbox`` and ``hold``) are part of
``make test``. ``CEAP_KILL_SEED`` fixes the random delays; the numbers are
printed (``pytest -s``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from aiosmtpd.controller import Controller
from typer.testing import CliRunner

from ceap.channels.base import Message
from ceap.channels.email_smtp import message_id
from ceap.cli import app
from ceap.delivery.profiles import upsert_profiles
from ceap.model import RunRecord, utcnow
from ceap.store import Store, open_store
from ceap.testing.doubles import make_candidates

TENANT = "default"
PROGRAM = "receipts"
DOMAIN = "acme.example"


def slow_enabled(config: pytest.Config) -> bool:
    """Slow runs only when asked for: ``-m slow`` (``make reliability``) or CEAP_SLOW=1."""
    return "slow" in (config.getoption("markexpr") or "") or os.environ.get("CEAP_SLOW") == "1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Recorder:
    """An aiosmtpd handler counting the messages it accepted, by Message-ID."""

    def __init__(self) -> None:
        self.ids: Counter[str] = Counter()
        self.total = 0
        self._lock = threading.Lock()
        self._parser = BytesHeaderParser()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        mid = str(self._parser.parsebytes(envelope.content)["Message-ID"])
        with self._lock:
            self.ids[mid] += 1
            self.total += 1
        return "250 2.0.0 queued"

    def count(self) -> int:
        with self._lock:
            return self.total


@dataclass(frozen=True)
class Setup:
    """One way of running the dispatcher; ``window``: messages a kill may leave
    accepted by the server but unrecorded (when they are resent)."""

    name: str
    resend: bool
    ledger: bool
    batch_size: int
    window: int


LEDGER = Setup("ledger", resend=True, ledger=True, batch_size=100, window=1)
OUTBOX = Setup("outbox", resend=True, ledger=False, batch_size=1, window=1)
HOLD = Setup("hold", resend=False, ledger=False, batch_size=100, window=0)


@dataclass
class Outcome:
    setup: Setup
    messages: int
    kills: int
    runs: int
    statuses: Counter[str]
    candidate_statuses: Counter[str]
    received: Counter[str]
    expected: dict[str, int]            # Message-ID -> delivery id
    events: dict[int, list[str]]        # delivery id -> event details
    seconds: float

    @property
    def duplicates(self) -> dict[str, int]:
        """Message-IDs the server received more than once -> extra copies."""
        return {mid: n - 1 for mid, n in self.received.items() if n > 1}

    @property
    def resent(self) -> int:
        """Deliveries in flight at a kill and requeued (an ``ambiguous ... resent`` event)."""
        return sum(any(e.endswith("; resent") for e in ev) for ev in self.events.values())

    def ambiguous_ids(self) -> set[int]:
        """Deliveries held as ambiguous (in flight at a kill, not resent)."""
        return {i for i, ev in self.events.items() if any("not resent" in e for e in ev)}

    def report(self) -> str:
        dup = sum(self.duplicates.values())
        held = self.ambiguous_ids()
        reached = sum(1 for mid, i in self.expected.items() if i in held and mid in self.received)
        return (f"kill test [{self.setup.name}]: {self.messages:,} messages, {self.kills} kills "
                f"({self.runs} runs, {self.seconds:.1f} s); deliveries {dict(self.statuses)}; "
                f"in flight at a kill and resent: {self.resent}; held ambiguous: "
                f"{len(held)} ({reached} of them had reached the server); server received "
                f"{sum(self.received.values()):,} copies of {len(self.received):,} Message-IDs; "
                f"duplicates: {dup} (bound {self.kills * self.setup.window})")


class KillHarness:
    """A project folder (ceap.yaml, a program, a template), its SQLite store, the SMTP
    server, and the loop that starts, kills and restarts ``ceap dispatch``."""

    def __init__(self, root: Path, setup: Setup, messages: int, lease: float):
        self.root, self.setup, self.messages, self.lease = root, setup, messages, lease
        self.project = root / "project"
        self.url = f"sqlite:///{root / 'ceap.db'}"
        self.recorder = Recorder()
        self.port = free_port()
        self.server = Controller(self.recorder, hostname="127.0.0.1", port=self.port)
        self.server.start()
        self._write_project()
        self._seed()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CEAP_")}
        self.runs = 0
        self.procs: list[subprocess.Popen[bytes]] = []

    def close(self) -> None:
        for proc in self.procs:  # a failed assertion may leave one running
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
        self.server.stop()

    def _write_project(self) -> None:
        email: dict[str, Any] = {"type": "smtp", "host": "127.0.0.1", "port": self.port,
                                 "security": "none", "from_address": f"Acme <receipts@{DOMAIN}>",
                                 "timeout": 10, "concurrency": 1}
        if self.setup.resend:
            email["resend_in_flight"] = True
        if self.setup.ledger:
            email.update(sent_keys="state/sent-keys.db", sent_keys_commit_every=1)
        (self.project / "programs").mkdir(parents=True)
        (self.project / "templates").mkdir()
        (self.project / "ceap.yaml").write_text(yaml.safe_dump(
            {"store": self.url, "channels": {"email": email}}, sort_keys=False))
        (self.project / "programs" / f"{PROGRAM}.yaml").write_text(yaml.safe_dump(
            {"name": PROGRAM, "source": {"type": "csv", "path": "orders.csv"},
             "action": {"type": "inform", "channels": ["email"], "template": "receipt",
                        "category": "transactional"}}, sort_keys=False))
        (self.project / "templates" / "receipt.yaml").write_text(yaml.safe_dump(
            {"email": {"subject": "Your receipt {{ payload.i }}",
                       "text": "Hello {{ candidate.customer_id }}, here is receipt {{ payload.i }}."}}))

    def _seed(self) -> None:
        now = utcnow()
        n = self.messages
        store = open_store(self.url)
        try:
            store.write_run(RunRecord("r1", TENANT, PROGRAM, "succeeded", now),
                            make_candidates(n, now=now, program=PROGRAM, run_id="r1",
                                            channels=["email"], category="transactional",
                                            template="receipt", customer_id=lambda i: f"c{i}"))
            upsert_profiles(store, pa.table({"customer_id": [f"c{i}" for i in range(n)],
                                             "email": [f"c{i}@customers.example" for i in range(n)]}),
                            TENANT)
        finally:
            store.close()

    def _start(self) -> subprocess.Popen[bytes]:
        self.runs += 1
        log = (self.root / f"dispatch-{self.runs}.log").open("wb")
        cmd = [sys.executable, "-m", "ceap", "--project", str(self.project), "dispatch",
               "--lease", f"{self.lease:g}", "--batch-size", str(self.setup.batch_size)]
        try:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                    cwd=self.project)
        finally:
            log.close()
        self.procs.append(proc)
        return proc

    def log(self, run: int) -> str:
        return (self.root / f"dispatch-{run}.log").read_text(errors="replace")

    def kill_loop(self, kills: int, rng: random.Random, max_delay: float) -> int:
        """Start ``ceap dispatch``; once the server saw its first message, wait a random
        delay and SIGKILL it; restart (at once, or after the leases ran out). Returns the
        number of processes actually killed."""
        done = 0
        for _ in range(kills):
            before = self.recorder.count()
            proc = self._start()
            deadline = time.monotonic() + 60
            while self.recorder.count() == before and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, max_delay))
            if proc.poll() is not None:  # it finished the work before the kill
                break
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            done += 1
            if rng.random() < 0.5:  # sometimes restart while the dead worker's leases still run
                time.sleep(self.lease + 0.2)
        return done

    def finish(self) -> None:
        """Runs to completion after every lease ran out, until nothing is queued or in flight."""
        for _ in range(4):
            time.sleep(self.lease + 0.3)
            proc = self._start()
            assert proc.wait(600) == 0, self.log(self.runs)
            if not self._open():
                return
        raise AssertionError(f"still open after the final runs: {self._open()}")

    def _open(self) -> int:
        with self._store() as store, store.tx() as tx:
            n = tx.execute("SELECT count(*) FROM deliveries WHERE status IN ('queued', 'sending')"
                           ).fetchone()[0]
            pending = tx.execute("SELECT count(*) FROM candidates WHERE status = 'pending'").fetchone()[0]
        return int(n) + int(pending)

    def _store(self) -> Any:
        class _Ctx:
            def __enter__(ctx) -> Store:
                ctx.store = open_store(self.url)
                return ctx.store

            def __exit__(ctx, *exc: Any) -> None:
                ctx.store.close()
        return _Ctx()

    def outcome(self, kills: int, seconds: float) -> Outcome:
        time.sleep(0.2)  # the server's last DATA handler
        with self._store() as store, store.tx() as tx:
            deliveries = tx.execute("SELECT id, candidate_id, idempotency_key, status FROM deliveries"
                                    ).fetchall()
            candidates = tx.execute("SELECT status, count(*) FROM candidates GROUP BY status").fetchall()
            events: dict[int, list[str]] = {}
            for delivery_id, status, detail in tx.execute(
                    "SELECT delivery_id, status, detail FROM delivery_events ORDER BY id").fetchall():
                events.setdefault(int(delivery_id), []).append(f"{status}: {detail}")
        expected = {message_id(Message(TENANT, key, "", PROGRAM, "email"), DOMAIN): int(i)
                    for i, _, key, _ in deliveries}
        return Outcome(self.setup, self.messages, kills, self.runs,
                       Counter(s for *_, s in deliveries), Counter(dict(candidates)),
                       Counter(self.recorder.ids), expected, events, seconds)


def run_kill_test(root: Path, setup: Setup, messages: int, kills: int, max_delay: float,
                  lease: float) -> Outcome:
    seed = int(os.environ.get("CEAP_KILL_SEED") or random.SystemRandom().randrange(1 << 30))
    rng = random.Random(seed)
    harness = KillHarness(root, setup, messages, lease)
    started = time.monotonic()
    try:
        done = harness.kill_loop(kills, rng, max_delay)
        harness.finish()
        outcome = harness.outcome(done, time.monotonic() - started)
    finally:
        harness.close()
    print(f"\n{outcome.report()} [CEAP_KILL_SEED={seed}]")
    assert done >= 1, "no run was killed: the work finished before the first kill"
    check(outcome, harness)
    return outcome


def check(o: Outcome, harness: KillHarness) -> None:
    # one delivery per candidate, every candidate accounted for, none left open
    assert sum(o.statuses.values()) == o.messages
    assert len(o.expected) == o.messages
    assert o.statuses.get("queued", 0) == o.statuses.get("sending", 0) == 0
    unknown = set(o.received) - set(o.expected)
    assert not unknown, f"the server received messages no delivery accounts for: {sorted(unknown)[:3]}"
    if o.setup.resend:
        assert o.statuses == Counter({"sent": o.messages}), o.statuses
        assert o.candidate_statuses == Counter({"sent": o.messages}), o.candidate_statuses
        missing = set(o.expected) - set(o.received)
        assert not missing, f"{len(missing)} sent message(s) never reached the server"
        duplicates = o.duplicates
        assert sum(duplicates.values()) <= o.kills * o.setup.window, duplicates
        for mid in duplicates:
            ev = o.events.get(o.expected[mid], [])
            assert any(e.startswith("ambiguous") for e in ev), (mid, ev)
        return
    # held: in-flight attempts are ambiguous, reported, never resent
    assert set(o.statuses) <= {"sent", "ambiguous"}, o.statuses
    assert o.duplicates == {}, o.duplicates
    held = o.ambiguous_ids()
    assert len(held) == o.statuses.get("ambiguous", 0)
    sent_ids = {mid for mid, i in o.expected.items() if i not in held}
    assert sent_ids <= set(o.received), "a delivery recorded as sent never reached the server"
    for i in held:
        assert o.events[i] == ["ambiguous: in flight at a crash; not resent"], o.events[i]
    assert o.candidate_statuses["sent"] == o.statuses["sent"]
    assert o.candidate_statuses["dispatched"] == o.statuses.get("ambiguous", 0)
    listed = CliRunner().invoke(app, ["--project", str(harness.project), "deliveries", "--status",
                                      "ambiguous", "--limit", "100000", "--json"], env={"CEAP_STORE": None})
    assert listed.exit_code == 0, listed.output
    assert {d["id"] for d in json.loads(listed.stdout)} == held
    if o.statuses.get("ambiguous"):  # the run that found them logged them
        logs = [harness.log(r) for r in range(1, o.runs + 1)]
        assert any("marked ambiguous, not resent" in text for text in logs)


# -- the tests -------------------------------------------------------------------


def test_the_ledger_commits_each_key_when_asked(tmp_path: Path) -> None:
    """What the ``ledger`` set-up relies on: with ``commit_every=1`` an accepted key is in
    the file as soon as ``add`` returns (another process would see it), not at the next flush."""
    import sqlite3

    from ceap.channels.external import SentLedger

    def on_disk(path: Path) -> int:
        with sqlite3.connect(path) as db:
            return int(db.execute("SELECT count(*) FROM sent_keys").fetchone()[0])

    each, batched = SentLedger(tmp_path / "each.db", commit_every=1), SentLedger(tmp_path / "batched.db")
    for ledger in (each, batched):
        ledger.seen("t", "warm-up")  # opens the file
        ledger.add("t", "k1", "<id@x>")
    assert (on_disk(tmp_path / "each.db"), on_disk(tmp_path / "batched.db")) == (1, 0)
    batched.flush()
    assert on_disk(tmp_path / "batched.db") == 1
    each.close()
    batched.close()


@pytest.mark.parametrize("setup", [OUTBOX, HOLD], ids=lambda s: s.name)
def test_kill_and_restart_fast(tmp_path: Path, setup: Setup) -> None:
    run_kill_test(tmp_path, setup, messages=300, kills=2, max_delay=0.4, lease=1.0)


@pytest.mark.slow
@pytest.mark.parametrize("setup", [LEDGER, OUTBOX, HOLD], ids=lambda s: s.name)
def test_kill_and_restart_thousands(tmp_path: Path, setup: Setup, request: pytest.FixtureRequest) -> None:
    if not slow_enabled(request.config):
        pytest.skip("slow: run with `make reliability` (or -m slow, or CEAP_SLOW=1)")
    outcome = run_kill_test(tmp_path, setup, messages=3000, kills=8, max_delay=0.8, lease=2.0)
    assert outcome.kills >= 6  # the work outlasted most of the kills
