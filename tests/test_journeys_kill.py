"""Kill ``ceap journeys tick`` with SIGKILL at random moments, run it again, and count: every
customer entered once and got exactly one message per step, and each entry's log names
that message. At the settings users get (``ceap journeys tick`` as it ships); the seed of
the delays is printed (``CEAP_KILL_SEED`` fixes it)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from ceap.journeys.ticker import LEASE
from ceap.model import RunRecord
from ceap.runtime.schedule_book import ScheduleBook
from ceap.store import Store, open_store
from ceap.testing import make_candidates
from tests.journey_helpers import T0

ROOT = Path(__file__).resolve().parents[1]
CUSTOMERS = 3000
SERIES = {"name": "series", "source": {"type": "csv", "path": "x.csv"},
          "action": {"type": "inform", "channels": ["inapp"]},
          "journey": {"steps": [{"id": "hello", "send": {}},
                                {"id": "branch", "branch": {"if": "score > 0.5", "else": "rest"}},
                                {"id": "again", "send": {}}, {"id": "rest", "wait_for": {"within": "1d"}}]}}


def tick_command(project: Path, url: str) -> list[str]:
    return [sys.executable, "-m", "ceap", "--project", str(project), "--store", url, "journeys", "tick",
            "--json"]


def counts(url: str) -> tuple[int, int]:
    store = open_store(url)
    try:
        with store.tx() as tx:
            entries = tx.execute("SELECT count(*) FROM journey_entries").fetchone()[0]
            messages = tx.execute("SELECT count(*) FROM candidates WHERE dedup_key LIKE 'journey:%'"
                                  ).fetchone()[0]
    finally:
        store.close()
    return int(entries), int(messages)


def lapse_lease(url: str) -> None:
    """What ``journeys.lease`` (default 6 s) of waiting does after a ticker was killed: its lease on
    the store lapses, and the next tick may go (docs/journeys.md, who ticks). No lease: nothing."""
    store = open_store(url)
    try:
        ScheduleBook(store, "").release(LEASE, held_by(store), datetime(2000, 1, 1, tzinfo=UTC))
    finally:
        store.close()


def held_by(store: Store) -> str:
    lease = ScheduleBook(store, "").lease(LEASE)
    return lease.holder if lease is not None else ""


def kill_and_rerun(command: list[str], url: str, late: float) -> None:
    """Run ``command`` four times, each SIGKILLed a random moment (up to ``late`` seconds)
    after it first wrote an entry or a message, whatever the machine's load (a run that ends
    first is not killed), its lease then lapsed; then once more to its end, which must succeed.
    The seed of the moments is printed (``CEAP_KILL_SEED`` fixes it)."""
    seed = int(os.environ.get("CEAP_KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    seen: list[tuple[float, int, int]] = []
    for _ in range(4):
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        before = counts(url)
        while proc.poll() is None and counts(url) == before:
            time.sleep(0.02)
        delay = rng.uniform(0, late)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            lapse_lease(url)
        seen.append((round(delay, 2), *counts(url)))
    final = subprocess.run(command, env=env, capture_output=True, timeout=300)  # the bound of a hang
    assert final.returncode == 0, final.stderr.decode()
    print(f"seed {seed}; (delay, entries, messages) after each kill: {seen}")


@dataclass(frozen=True)
class Outcome:
    """What the runs left in the store, for one program."""

    per_entry: list[tuple[str, str, str, int]]  # customer, status, step, its messages
    scores: dict[str, float]  # the entered tickets' scores, by customer
    logged: int  # "sent" lines of the journey log naming a message
    duplicates: int  # (entry, seq) written twice in the log
    tickets: int  # tickets not entered
    timers: int  # wait deadlines left


def outcome(url: str, program: str) -> Outcome:
    store = open_store(url)
    try:
        with store.tx() as tx:
            per_entry = tx.execute(
                "SELECT e.customer_id, e.status, e.step, count(c.id) FROM journey_entries e "
                "LEFT JOIN candidates c ON c.dedup_key LIKE 'journey:' || ? || ':' || e.customer_id "
                "|| ':' || e.id || ':%' WHERE e.program = ? GROUP BY e.id, e.customer_id, e.status, e.step",
                (program, program)).fetchall()
            scores = tx.execute("SELECT customer_id, score FROM candidates WHERE status = 'entered' "
                                "AND program = ?", (program,)).fetchall()
            logged = tx.execute("SELECT count(*) FROM journey_log l JOIN candidates c "
                                "ON c.id = l.candidate_id WHERE l.what = 'sent'").fetchone()[0]
            duplicates = tx.execute("SELECT count(*) FROM (SELECT entry_id, seq FROM journey_log "
                                    "GROUP BY entry_id, seq HAVING count(*) > 1) d").fetchone()[0]
            tickets = tx.execute("SELECT count(*) FROM candidates WHERE status = 'journey'").fetchone()[0]
            timers = tx.execute("SELECT count(*) FROM timers").fetchone()[0]
    finally:
        store.close()
    return Outcome([(str(c), str(st), str(sp), int(n)) for c, st, sp, n in per_entry], dict(scores),
                   int(logged), int(duplicates), int(tickets), int(timers))


def test_a_killed_tick_leaves_one_message_per_step(tmp_path: Path) -> None:
    (tmp_path / "programs").mkdir()
    (tmp_path / "programs" / "series.yaml").write_text(yaml.safe_dump(SERIES, sort_keys=False))
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    store = open_store(url)
    store.write_run(RunRecord("r1", "default", "series", "succeeded", T0),
                    make_candidates(CUSTOMERS, now=T0, program="series", status="journey", payload={},
                                    dedup_key=lambda i: f"ticket-{i}"))
    store.close()
    # once it writes, the tick writes for about a second more
    kill_and_rerun(tick_command(tmp_path, url), url, late=0.8)
    done = outcome(url, "series")
    assert done.tickets == 0 and len(done.per_entry) == CUSTOMERS
    assert len({c for c, *_ in done.per_entry}) == CUSTOMERS  # each customer entered once
    expected = {c: 2 if score > 0.5 else 1 for c, score in done.scores.items()}
    assert {c: n for c, _, _, n in done.per_entry} == expected  # one message per step taken, none twice
    assert done.logged == sum(expected.values()) and done.duplicates == 0


ACTIVATION = {"name": "activation", "source": {"type": "csv", "path": "x.csv"},
              "action": {"type": "inform", "channels": ["inapp"]},
              "journey": {"steps": [{"id": "hello", "send": {}},
                                    {"id": "wait", "wait_for": {"events": {"activated": "thanks"},
                                                                "within": "1d", "timeout": "end"}},
                                    {"id": "thanks", "send": {}}]}}
#: a worker whose journeys move only by its batches' events and deadlines (it never ticks)
WORKER = """
import sys
from datetime import timedelta
from pathlib import Path
from ceap.journeys.ticker import JourneyPrograms, JourneyTicker
from ceap.plugin import PluginContext
from ceap.realtime.replay import ReplayConnector
from ceap.realtime.worker import Worker
from ceap.store import open_store

root, url = Path(sys.argv[1]), sys.argv[2]
store = open_store(url)
context = PluginContext(base_dir=root, store=store)
source = ReplayConnector.from_dict({"type": "replay", "path": "events.jsonl"}, context)
ticker = JourneyTicker(store, JourneyPrograms(root / "programs"), every=timedelta(0))
worker = Worker(store, source, root / "programs", context, batch=200, journeys=ticker)
stats = worker.run(until_idle=True)
print(stats.journey_moved, stats.journey_messages)
"""


def test_a_killed_worker_leaves_one_message_per_step(tmp_path: Path) -> None:
    """The worker's path: 3,000 entries wait for ``activated``; a worker (that never ticks)
    reads one per customer from a replayed stream and is killed at random moments, then run
    again over the same stream until it ends; every entry got its two messages once."""
    from ceap.journeys.engine import tick
    from ceap.model import utcnow
    from ceap.spec import load_program

    (tmp_path / "programs").mkdir()
    (tmp_path / "programs" / "activation.yaml").write_text(yaml.safe_dump(ACTIVATION, sort_keys=False))
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    store = open_store(url)
    entered = utcnow()
    store.write_run(RunRecord("r1", "default", "activation", "succeeded", entered),
                    make_candidates(CUSTOMERS, now=entered, program="activation", status="journey",
                                    payload={}, dedup_key=lambda i: f"ticket-{i}"))
    ticked = tick(store, [load_program(tmp_path / "programs" / "activation.yaml")], now=entered)
    with store.tx() as tx:
        customers = [c for (c,) in tx.execute("SELECT customer_id FROM journey_entries").fetchall()]
    store.close()
    assert ticked.entered == ticked.messages == CUSTOMERS
    (tmp_path / "events.jsonl").write_text("\n".join(
        json.dumps({"id": f"a-{c}", "customer_id": c, "type": "activated", "ts": utcnow().isoformat()})
        for c in customers))
    kill_and_rerun([sys.executable, "-c", WORKER, str(tmp_path), url], url, late=0.3)
    done = outcome(url, "activation")
    assert len(done.per_entry) == CUSTOMERS and done.duplicates == 0
    # hello and thanks, once each
    assert {(status, step, n) for _, status, step, n in done.per_entry} == {("completed", "thanks", 2)}
    assert done.timers == 0  # every deadline went with the move that ended its wait
