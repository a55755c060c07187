"""Kill ``ceap journeys tick`` with SIGKILL at random moments, run it again, and count: every
customer entered once and got exactly one message per step, and each entry's log names
that message. At the settings users get (``ceap journeys tick`` as it ships); the seed of
the delays is printed (``CEAP_KILL_SEED`` fixes it)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
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


def tick_process(project: Path, url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen([sys.executable, "-m", "ceap", "--project", str(project), "--store", url,
                             "journeys", "tick", "--json"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


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
    the store lapses, and the next tick may go (docs/journeys.md, who ticks)."""
    store = open_store(url)
    try:
        ScheduleBook(store, "").release(LEASE, held_by(store), datetime(2000, 1, 1, tzinfo=UTC))
    finally:
        store.close()


def held_by(store: Store) -> str:
    lease = ScheduleBook(store, "").lease(LEASE)
    return lease.holder if lease is not None else ""


def test_a_killed_tick_leaves_one_message_per_step(tmp_path: Path) -> None:
    seed = int(os.environ.get("CEAP_KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    (tmp_path / "programs").mkdir()
    (tmp_path / "programs" / "series.yaml").write_text(yaml.safe_dump(SERIES, sort_keys=False))
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    store = open_store(url)
    store.write_run(RunRecord("r1", "default", "series", "succeeded", T0),
                    make_candidates(CUSTOMERS, now=T0, program="series", status="journey", payload={},
                                    dedup_key=lambda i: f"ticket-{i}"))
    store.close()
    seen: list[tuple[float, int, int]] = []
    for _ in range(4):
        proc = tick_process(tmp_path, url)
        # start-up (imports) takes about a second; then the tick writes for a second or more
        delay = rng.uniform(0.9, 2.2)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            lapse_lease(url)
        seen.append((round(delay, 2), *counts(url)))
    final = tick_process(tmp_path, url)
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err.decode()
    print(f"seed {seed}; (delay, entries, messages) after each kill: {seen}")
    store = open_store(url)
    try:
        with store.tx() as tx:
            per_entry = tx.execute(
                "SELECT e.customer_id, count(c.id) FROM journey_entries e LEFT JOIN candidates c "
                "ON c.dedup_key LIKE 'journey:series:' || e.customer_id || ':' || e.id || ':%' "
                "GROUP BY e.id, e.customer_id").fetchall()
            scores = dict(tx.execute("SELECT customer_id, score FROM candidates WHERE status = 'entered'"
                                     ).fetchall())
            logged = tx.execute("SELECT count(*) FROM journey_log l JOIN candidates c "
                                "ON c.id = l.candidate_id WHERE l.what = 'sent'").fetchone()[0]
            duplicates = tx.execute("SELECT count(*) FROM (SELECT entry_id, seq FROM journey_log "
                                    "GROUP BY entry_id, seq HAVING count(*) > 1) d").fetchone()[0]
            tickets = tx.execute("SELECT count(*) FROM candidates WHERE status = 'journey'").fetchone()[0]
    finally:
        store.close()
    assert tickets == 0 and len(per_entry) == CUSTOMERS
    assert len({c for c, _ in per_entry}) == CUSTOMERS  # each customer entered once
    expected = {c: 2 if scores[c] > 0.5 else 1 for c in scores}
    assert {c: n for c, n in per_entry} == expected  # one message per step taken, none twice
    assert logged == sum(expected.values()) and duplicates == 0
