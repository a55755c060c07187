"""Recovery: SIGKILL a worker again and again during a replay over a consumer group of two.

Starts a Tansu broker (Kafka protocol, memory storage), publishes ``--events``
events (customers keyed to partitions; crashes that cross a count window, carts
with and without an order for an absence timer) to a topic of ``--partitions``
partitions, and runs two ``ceap worker`` processes in one consumer group with a
PostgreSQL store (a fresh schema). While they work, ``--kills`` times, one worker
is SIGKILLed and started again; the group rebalances and the partitions of the
dead one move, their state read back from the store. Then one worker that is
never killed reads the same topic in another group into another fresh schema:
the clean run. Checks: no candidate lost, none twice (per program, customer and
dedup key), the event log and the pending timers equal to the clean run's.

    make bench-realtime-recovery          # 100,000 events, 10 kills
    nice .venv/bin/python bench/realtime_recovery.py --events 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from realtime import machine, postgres_target
from realtime_kafka import start_tansu

from ceap.connectors.streams_kafka import KafkaConnector
from ceap.store import open_store

T0 = datetime(2026, 11, 20, tzinfo=UTC)
PROGRAMS = [
    {"name": "crashes", "source": {"type": "events", "on": ["app_crash"]},
     "state": {"crashes_1h": {"count": "app_crash", "window": "1h"}},
     "filters": [{"id": "three", "expr": "crashes_1h >= 3"}],
     "action": {"type": "alert", "channels": ["email"]}},
    {"name": "abandoned", "source": {"type": "events", "on": []},
     "state": {"no_order": {"absence": {"after": "cart_updated", "missing": "order_placed"},
                            "within": "30m"}},
     "filters": [{"id": "abandoned", "expr": "no_order"}],
     "action": {"type": "offer", "channels": ["email"]}},
]


def events(n: int, customers: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    span = timedelta(days=2).total_seconds()
    out = []
    for i in range(n):
        etype = rng.choices(["app_crash", "cart_updated", "order_placed", "page_view"], [4, 1, 1, 4])[0]
        ts = T0 + timedelta(seconds=i * span / n)
        customer = f"C{rng.randrange(customers):06d}"
        out.append(json.dumps({"id": f"r{i}", "type": etype, "customer_id": customer,
                               "ts": ts.isoformat()}).encode())
    return out


def project(root: Path, store_url: str, bootstrap: str, topic: str, group: str = "workers") -> None:
    (root / "programs").mkdir(parents=True)
    for spec in PROGRAMS:
        (root / "programs" / f"{spec['name']}.yaml").write_text(yaml.safe_dump(spec))
    (root / "ceap.yaml").write_text(yaml.safe_dump({"store": store_url, "streams": {"events": {
        "type": "kafka", "topic": topic, "bootstrap_servers": bootstrap, "group": group,
        "session_timeout": 3}}}))


def start(root: Path, n: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "ceap", "--project", str(root), "worker", "--batch", "500",
                             "--wait", "0.2"], stdout=subprocess.DEVNULL,
                            stderr=open(root / f"worker-{n}.log", "ab"))


def snapshot(url: str) -> dict[str, Any]:
    store = open_store(url)
    with store.tx() as tx:
        candidates = tx.execute("SELECT program, customer_id, dedup_key FROM candidates").fetchall()
        logged = tx.execute("SELECT count(*), count(DISTINCT event_id) FROM event_log").fetchone()
        timers = sorted(tx.execute("SELECT program, customer_id, event_id FROM timers").fetchall())
    store.close()
    return {"candidates": candidates, "logged": tuple(logged), "timers": timers}


def lag(bootstrap: str, topic: str, group: str = "workers") -> int | None:
    reader = KafkaConnector.from_dict({"type": "kafka", "topic": topic, "bootstrap_servers": bootstrap,
                                       "group": group}, None)
    try:
        return reader.lag()
    finally:
        reader.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--customers", type=int, default=5_000)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--every", type=float, default=8.0, help="seconds between kills")
    p.add_argument("--pg", default=os.environ.get("CEAP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"))
    p.add_argument("--seed", type=int, default=3)
    args = p.parse_args(argv)
    print(machine())
    bodies = events(args.events, args.customers, args.seed)
    proc, bootstrap = start_tansu()
    killed, target, clean = 0, postgres_target(args.pg), postgres_target(args.pg)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "group"
            topic = f"recovery-{uuid.uuid4().hex[:6]}"
            publisher = KafkaConnector.from_dict({"type": "kafka", "topic": topic,
                                                  "bootstrap_servers": bootstrap,
                                                  "partitions": args.partitions}, None)
            publisher.publish(bodies)
            publisher.close()
            project(root, target.url, bootstrap, topic)
            workers = [start(root, 0), start(root, 1)]
            began = time.monotonic()
            rng = random.Random(args.seed)
            while killed < args.kills:
                time.sleep(args.every)
                n = rng.randrange(2)
                workers[n].send_signal(signal.SIGKILL)
                workers[n].wait(10)
                killed += 1
                waiting = lag(bootstrap, topic)
                print(f"[{time.monotonic() - began:6.1f}s] kill {killed}: worker {n}; lag {waiting}",
                      flush=True)
                workers[n] = start(root, n)
            while (left := lag(bootstrap, topic)) != 0 and time.monotonic() - began < 3600:
                time.sleep(2)
            time.sleep(3)
            for w in workers:
                w.send_signal(signal.SIGTERM)
                w.wait(30)
            print(f"group of two done in {time.monotonic() - began:.0f}s (lag {left})", flush=True)
            got = snapshot(target.url)
            # the clean run: one worker, never killed, over the same topic in another group
            clean_root = Path(tmp) / "clean"
            project(clean_root, clean.url, bootstrap, topic, group="clean")
            began = time.monotonic()
            single = start(clean_root, 0)
            while lag(bootstrap, topic, "clean") != 0 and time.monotonic() - began < 3600:
                time.sleep(2)
            time.sleep(3)
            single.send_signal(signal.SIGTERM)
            single.wait(30)
            want = snapshot(clean.url)
    finally:
        proc.terminate()
        proc.wait(10)
        for t in (target, clean):
            if t.cleanup:
                t.cleanup()
    keys = got["candidates"]
    report = {
        "kills": killed,
        "candidates (group / clean)": f"{len(keys)} / {len(want['candidates'])}",
        "written twice": len(keys) - len(set(keys)),
        "lost": len(set(want["candidates"]) - set(keys)),
        "extra": len(set(keys) - set(want["candidates"])),
        "event log (rows, distinct ids) group / clean": f"{got['logged']} / {want['logged']}",
        "pending timers equal": got["timers"] == want["timers"],
    }
    for k, v in report.items():
        print(f"{k}: {v}")
    differ = {"lost": set(want["candidates"]) - set(keys), "extra": set(keys) - set(want["candidates"])}
    for name, keys_ in differ.items():
        by_program: dict[str, int] = {}
        for program, *_ in keys_:
            by_program[program] = by_program.get(program, 0) + 1
        if by_program:
            print(f"{name} by program: {by_program}")
    if got["timers"] != want["timers"]:
        group, single = set(got["timers"]), set(want["timers"])
        print(f"pending timers in the group only: {len(group - single)}, "
              f"in the clean run only: {len(single - group)}")
    ok = (report["written twice"] == 0 and report["lost"] == 0 and report["extra"] == 0
          and got["logged"] == want["logged"] and got["timers"] == want["timers"])
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
