"""Kill the dispatcher with SIGKILL at random moments, restart it, and count,
at the settings users get: ``ceap dispatch`` with its default batch size (500),
the SMTP channel's default ``concurrency`` (4 connections), no ``sent_keys``
ledger. Only the lease is shortened (``--lease``), so that a restart need not
wait 30 s for a dead worker's claims; it plays no part in the bound.

A real aiosmtpd server in this process records every message it accepts by
Message-ID (derived from the tenant and the idempotency key, the same on every
attempt). A real ``ceap dispatch`` process sends thousands of candidates to it
and is killed (``kill -9``) several times, then restarted (at once, or once the
leases ran out); a last run, once every lease has run out, finishes the work.
The server itself sends each kill, from the handler of a random k-th message of
the run (before or after accepting it), while that message waits for its reply:
the kill lands mid-work however fast or loaded the machine is. Then the store and
the server are compared. With K kills and C = ``concurrency``:

- every delivery ends ``sent`` or held (``ambiguous``); nothing is lost;
- at most K x C deliveries were in flight at a kill (a dispatcher marks a
  message ``sending`` only right before the point of no return, for SMTP
  after its envelope and before DATA, one per connection), and every one of
  them carries the crash mark: ``ceap deliveries --ambiguous`` lists it,
  whatever its status now;
- ``hold`` (the default): those are held, never resent; the server received
  no message twice. Of the held ones, those the server never accepted (the
  kill came between the durable "sending" and the end of DATA) and those it
  was never even handed (no RCPT TO: none, since the mark comes after the
  envelope) are counted and bounded by K x C too;
- ``resend`` (``resend_in_flight: true``): they were resent; every message
  reached the server, the extra copies it received are at most K x C, and
  each duplicated message is listed by ``ceap deliveries --ambiguous``
  (status ``sent``, ambiguity ``resent``); the summary of ``ceap dispatch``
  counts them as possible duplicates.

The fast runs (1,500 messages, 2 kills, both set-ups) are part of ``make
test``; the slow ones (6,000 messages, 10 kills) are marked ``slow`` and
skipped unless asked for (``make reliability``, ``-m slow`` or
``CEAP_SLOW=1``). ``CEAP_KILL_SEED`` fixes the random choices; the numbers are
printed (``pytest -s``).
"""

from __future__ import annotations

import json
import os
import random
import re
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
from ceap.channels.email_smtp import SmtpConfig, message_id
from ceap.cli import app
from ceap.delivery.outbox import Outbox
from ceap.delivery.profiles import upsert_profiles
from ceap.model import RunRecord, utcnow
from ceap.store import open_store
from ceap.testing.doubles import make_candidates

TENANT = "default"
PROGRAM = "receipts"
DOMAIN = "acme.example"
#: what a user gets without setting it: messages in flight at once per dispatcher
CONCURRENCY = int(SmtpConfig.model_fields["concurrency"].default)


def slow_enabled(config: pytest.Config) -> bool:
    """Slow runs only when asked for: ``-m slow`` (``make reliability``) or CEAP_SLOW=1."""
    return "slow" in (config.getoption("markexpr") or "") or os.environ.get("CEAP_SLOW") == "1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Recorder:
    """An aiosmtpd handler counting the messages it accepted, by Message-ID, and the
    recipients it was handed (``RCPT TO``: the message's conversation had started); it
    kills the dispatcher when told to (``kill_at``)."""

    def __init__(self) -> None:
        self.ids: Counter[str] = Counter()
        self.rcpts: Counter[str] = Counter()
        self.total = 0
        self.data = 0     # messages handed to it (DATA), accepted or not
        self._victim: tuple[int, int, bool] | None = None
        self._lock = threading.Lock()
        self._parser = BytesHeaderParser()

    def kill_at(self, pid: int, data: int, accept: bool) -> None:
        """SIGKILL process ``pid`` in the handler of the ``data``-th message handed to the
        server (counting every one since it started), after accepting it or without."""
        with self._lock:
            self._victim = (pid, data, accept)
            now = self.data >= data  # (it went past before being told: at once)
        if now:
            self._kill()

    def _kill(self) -> None:
        """Send the kill asked for, once."""
        with self._lock:
            victim, self._victim = self._victim, None
        if victim is not None:
            os.kill(victim[0], signal.SIGKILL)

    def disarm(self) -> None:
        with self._lock:
            self._victim = None

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        with self._lock:
            self.rcpts[address] += 1
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        mid = str(self._parser.parsebytes(envelope.content)["Message-ID"])
        with self._lock:
            self.data += 1
            kill = self._victim is not None and self.data >= self._victim[1]
            accept = not kill or (self._victim is not None and self._victim[2])
            if accept:
                self.ids[mid] += 1
                self.total += 1
        if kill:  # the sender waits for this reply: it is mid-work
            self._kill()
        return "250 2.0.0 queued" if accept else "451 4.3.0 not accepted"

    def count(self) -> int:
        with self._lock:
            return self.total


@dataclass(frozen=True)
class Setup:
    name: str
    resend: bool


HOLD = Setup("hold", resend=False)
RESEND = Setup("resend", resend=True)


@dataclass
class Outcome:
    setup: Setup
    messages: int
    kills: int
    runs: int
    statuses: Counter[str]              # delivery status -> count
    candidate_statuses: Counter[str]
    received: Counter[str]              # Message-ID -> copies the server accepted
    handed: set[int]                    # deliveries whose recipient the server was given
    expected: dict[str, int]            # Message-ID -> delivery id
    status_of: dict[int, str]           # delivery id -> status
    events: dict[int, list[str]]        # delivery id -> "status: detail" of its events
    marked: dict[int, str | None]       # delivery id -> ambiguity, for those with ambiguous_at
    seconds: float

    @property
    def bound(self) -> int:
        return self.kills * CONCURRENCY

    @property
    def duplicates(self) -> dict[str, int]:
        """Message-IDs the server received more than once -> extra copies."""
        return {mid: n - 1 for mid, n in self.received.items() if n > 1}

    def in_flight_at_a_kill(self) -> set[int]:
        """Deliveries crash recovery found ``sending`` (its ``ambiguous`` events)."""
        return {i for i, ev in self.events.items() if any("in flight at a crash" in e for e in ev)}

    def held(self) -> set[int]:
        return {i for i, s in self.status_of.items() if s == "ambiguous"}

    def held_not_accepted(self) -> set[int]:
        """Held, and the server never accepted it (cut during the SMTP conversation, or before)."""
        return {i for mid, i in self.expected.items() if i in self.held() and mid not in self.received}

    def held_never_handed(self) -> set[int]:
        """Held, and the server never even got its recipient: the kill came between the
        durable "sending" and the conversation (composing, connecting, MAIL FROM)."""
        return self.held() - self.handed

    def report(self) -> str:
        return (f"kill test [{self.setup.name}]: {self.messages:,} messages, {self.kills} kills "
                f"({self.runs} runs, {self.seconds:.1f} s), concurrency {CONCURRENCY}, bound "
                f"{self.bound}; deliveries {dict(self.statuses)}; in flight at a kill: "
                f"{len(self.in_flight_at_a_kill())}; held: {len(self.held())} (not accepted by the "
                f"server: {len(self.held_not_accepted())}, of which never handed to it: "
                f"{len(self.held_never_handed())}); server received "
                f"{sum(self.received.values()):,} copies of {len(self.received):,} Message-IDs; "
                f"duplicates: {sum(self.duplicates.values())}")


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
        # the defaults: no concurrency, no sent_keys, no batch size
        email: dict[str, Any] = {"type": "smtp", "host": "127.0.0.1", "port": self.port,
                                 "security": "none", "from_address": f"Acme <receipts@{DOMAIN}>",
                                 "timeout": 10}
        if self.setup.resend:
            email["resend_in_flight"] = True
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
               "--lease", f"{self.lease:g}"]
        try:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                    cwd=self.project)
        finally:
            log.close()
        self.procs.append(proc)
        return proc

    def log(self, run: int) -> str:
        return (self.root / f"dispatch-{run}.log").read_text(errors="replace")

    def kill_loop(self, kills: int, rng: random.Random, most: int) -> int:
        """Start ``ceap dispatch``; the server SIGKILLs it when handed the k-th message of
        the run (k random, 1 to ``most``), after accepting it or not; restart (at once, or
        after the leases ran out). Returns the number of processes actually killed."""
        done = 0
        for _ in range(kills):
            before = self.recorder.data
            proc = self._start()
            self.recorder.kill_at(proc.pid, before + rng.randint(1, most), accept=rng.random() < 0.5)
            code = proc.wait(600)
            self.recorder.disarm()
            if code != -signal.SIGKILL:  # it finished the work before the kill
                assert code == 0, self.log(self.runs)
                break
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
        store = open_store(self.url)
        try:
            with store.tx() as tx:
                n = tx.execute("SELECT count(*) FROM deliveries WHERE status IN ('queued', 'sending')"
                               ).fetchone()[0]
                pending = tx.execute("SELECT count(*) FROM candidates WHERE status = 'pending'"
                                     ).fetchone()[0]
        finally:
            store.close()
        return int(n) + int(pending)

    def outcome(self, kills: int, seconds: float) -> Outcome:
        time.sleep(0.2)  # the server's last DATA handler
        store = open_store(self.url)
        try:
            with store.tx() as tx:
                deliveries = tx.execute("SELECT id, idempotency_key, status, customer_id FROM deliveries"
                                        ).fetchall()
                candidates = tx.execute("SELECT status, count(*) FROM candidates GROUP BY status"
                                        ).fetchall()
                events: dict[int, list[str]] = {}
                for delivery_id, status, detail in tx.execute(
                        "SELECT delivery_id, status, detail FROM delivery_events ORDER BY id").fetchall():
                    events.setdefault(int(delivery_id), []).append(f"{status}: {detail}")
            marked = {d.id: d.ambiguity
                      for d in Outbox(store, "test").deliveries(TENANT, limit=10**9, ambiguous=True)}
        finally:
            store.close()
        expected = {message_id(Message(TENANT, key, "", PROGRAM, "email"), DOMAIN): int(i)
                    for i, key, *_ in deliveries}
        handed = {int(i) for i, *_, customer in deliveries
                  if self.recorder.rcpts[f"{customer}@customers.example"]}
        return Outcome(self.setup, self.messages, kills, self.runs,
                       Counter(s for _, _, s, _ in deliveries), Counter(dict(candidates)),
                       Counter(self.recorder.ids), handed, expected,
                       {int(i): s for i, _, s, _ in deliveries}, events, marked, seconds)


def run_kill_test(root: Path, setup: Setup, messages: int, kills: int, most: int,
                  lease: float) -> Outcome:
    seed = int(os.environ.get("CEAP_KILL_SEED") or random.SystemRandom().randrange(1 << 30))
    rng = random.Random(seed)
    harness = KillHarness(root, setup, messages, lease)
    started = time.monotonic()
    try:
        done = harness.kill_loop(kills, rng, most)
        harness.finish()
        outcome = harness.outcome(done, time.monotonic() - started)
    finally:
        harness.close()
    print(f"\n{outcome.report()} [CEAP_KILL_SEED={seed}]")
    assert done >= 1, "no run was killed: the work finished before the first kill"
    check(outcome, harness)
    return outcome


def listed(harness: KillHarness, *args: str) -> set[int]:
    """The ids ``ceap deliveries ARGS --json`` lists."""
    result = CliRunner().invoke(app, ["--project", str(harness.project), "deliveries", *args,
                                      "--limit", "100000", "--json"], env={"CEAP_STORE": None})
    assert result.exit_code == 0, result.output
    return {int(d["id"]) for d in json.loads(result.stdout)}


def check(o: Outcome, harness: KillHarness) -> None:
    # one delivery per candidate, every one sent or held, none left open; nothing unknown received
    assert sum(o.statuses.values()) == o.messages and len(o.expected) == o.messages
    assert set(o.statuses) <= ({"sent"} if o.setup.resend else {"sent", "ambiguous"}), o.statuses
    unknown = set(o.received) - set(o.expected)
    assert not unknown, f"the server received messages no delivery accounts for: {sorted(unknown)[:3]}"
    sent = {mid for mid, i in o.expected.items() if o.status_of[i] == "sent"}
    assert sent <= set(o.received), "a delivery recorded as sent never reached the server"
    # the bound: what a kill can leave in flight is what the connections had
    in_flight = o.in_flight_at_a_kill()
    assert len(in_flight) <= o.bound, (len(in_flight), o.bound)
    # ... and every one of them stays findable, whatever its status now
    assert set(o.marked) == in_flight
    assert listed(harness, "--ambiguous") == in_flight
    if o.setup.resend:
        assert o.candidate_statuses == Counter({"sent": o.messages}), o.candidate_statuses
        missing = set(o.expected) - set(o.received)
        assert not missing, f"{len(missing)} sent message(s) never reached the server"
        duplicates = o.duplicates
        assert sum(duplicates.values()) <= o.bound, duplicates
        for mid in duplicates:
            assert o.marked.get(o.expected[mid]) == "resent", (mid, o.events.get(o.expected[mid]))
        assert set(o.marked.values()) <= {"resent"}
        summary = harness.log(o.runs)  # the last run reports the store's possible duplicates
        found = re.search(r"store_possible_duplicates\t(\d+)", summary)
        assert found and int(found.group(1).replace(",", "")) == len(in_flight), summary
        return
    # held: in flight at a kill, never resent, listed; nothing received twice
    assert o.duplicates == {}, o.duplicates
    held = o.held()
    assert held == in_flight and set(o.marked.values()) <= {"held"}
    for i in held:
        assert o.events[i] == ["ambiguous: in flight at a crash; not resent"], o.events[i]
    # held, never handed to the server: only a kill between "sending" and the conversation
    assert o.held_never_handed() <= o.held_not_accepted() <= held
    assert len(o.held_never_handed()) <= o.bound
    assert o.candidate_statuses["sent"] == o.statuses["sent"]
    assert o.candidate_statuses["dispatched"] == o.statuses.get("ambiguous", 0)
    assert listed(harness, "--status", "ambiguous") == held


# -- the tests -------------------------------------------------------------------


def test_the_ledger_commits_each_key_when_asked(tmp_path: Path) -> None:
    """With ``commit_every=1`` an accepted key is in the file as soon as ``add`` returns
    (another process would see it), not at the next flush."""
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


@pytest.mark.parametrize("setup", [HOLD, RESEND], ids=lambda s: s.name)
def test_kill_and_restart_fast(tmp_path: Path, setup: Setup) -> None:
    run_kill_test(tmp_path, setup, messages=1500, kills=2, most=500, lease=1.0)


@pytest.mark.slow
@pytest.mark.parametrize("setup", [HOLD, RESEND], ids=lambda s: s.name)
def test_kill_and_restart_thousands(tmp_path: Path, setup: Setup, request: pytest.FixtureRequest) -> None:
    if not slow_enabled(request.config):
        pytest.skip("slow: run with `make reliability` (or -m slow, or CEAP_SLOW=1)")
    outcome = run_kill_test(tmp_path, setup, messages=6000, kills=10, most=500, lease=2.0)
    assert outcome.kills >= 8  # the work outlasted most of the kills
