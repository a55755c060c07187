"""Peer benchmark: CEAP's worker against Quix Streams on the same windowed-count job.

Starts a Tansu broker as ``bench/realtime_kafka.py`` does and, for each partition
count, side by side in one run on the same topic (the events of ``bench/realtime.py``,
keyed by customer):

* **raw read**: confluent-kafka ``consume`` + synchronous commit per batch;
* **CEAP**: a ``Worker`` running the ``count`` program of ``bench/realtime.py``
  (``app_crash`` count over 24 h of event time per customer, ``>= 3``, app version not
  4.0.0; SQLite store; validation, dedup by event id, event log, candidates written
  transactionally);
* **Quix Streams**: ``bench/quix_job.py`` in its own virtual environment, as a
  subprocess: the same filter, a sliding 24 h count per customer (the message key),
  grace 1 h (CEAP's default lateness), results produced to an output topic.

Prints events/s (and per CPU-second) of each, the ratios CEAP/Quix (goal >= 1.5) and
CEAP/raw, and compares the outputs: customers flagged, and customer-days flagged
(CEAP: candidates, one per customer per UTC day by the default ``dedup_window``;
Quix: distinct (key, UTC day of the window's end) among its outputs).

Quix Streams is not a CEAP dependency. Create its venv once, then run::

    python3 -m venv .venv-quix && .venv-quix/bin/pip install quixstreams
    nice .venv/bin/python bench/quix_peer.py --quix-python .venv-quix/bin/python

(``make bench-quix`` does both.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from realtime import PROGRAM, historic_events, log, machine
from realtime_kafka import end_to_end, raw_read, start_tansu

from ceap.connectors.streams_kafka import KafkaConnector

GOAL = 1.5
JOB = Path(__file__).resolve().parent / "quix_job.py"
DAY_MS = 86_400_000
CREATE = ("python3 -m venv .venv-quix && .venv-quix/bin/pip install quixstreams\n"
          "then: --quix-python .venv-quix/bin/python (or make bench-quix)")


def quix_version(python: str) -> str:
    """The peer venv's quixstreams version; exits with how to create the venv if it has none."""
    try:
        out = subprocess.run([python, "-c", "import quixstreams; print(quixstreams.__version__)"],
                             capture_output=True, text=True, timeout=120)
    except OSError as exc:
        raise SystemExit(f"--quix-python {python}: {exc.strerror}. Create the venv:\n{CREATE}") from None
    if out.returncode:
        last = (out.stderr.strip().splitlines() or ["no message"])[-1]
        raise SystemExit(f"--quix-python {python}: quixstreams does not import ({last}). "
                         f"Create the venv:\n{CREATE}")
    return out.stdout.strip()


def check_program() -> None:
    """The Quix job hard-codes the count program's job: fail loudly if the program moved."""
    filters = [f["expr"] for f in PROGRAM["filters"]]
    state = PROGRAM["state"]["crashes_24h"]
    if (filters != ["crashes_24h >= 3", "app_version <> '4.0.0'"] or state != {"count": "app_crash",
                                                                                 "window": "24h"}):
        raise SystemExit(f"bench/realtime.py's PROGRAM changed ({filters}, {state}): update quix_job.py")


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create ``topic`` with ``retention.ms`` and ``retention.bytes`` set explicitly.

    Tansu's DescribeConfigs returns only the configs a topic was created with, and Quix
    Streams (3.28) derives its changelog topics' config from the source topic's
    ``retention.ms``: without it, ``TopicManager.derive_topic_config`` raises
    ``KeyError: 'retention.ms'`` before the job starts.
    """
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1,
                                            config={"retention.ms": "-1", "retention.bytes": "-1"})])
    futures[topic].result(15)


def run_quix(python: str, bootstrap: str, topic: str, total: int, root: Path,
             group_by: bool) -> dict[str, Any]:
    output = f"{topic}-quix-out-{uuid.uuid4().hex[:4]}"
    cmd = [python, str(JOB), "--bootstrap", bootstrap, "--topic", topic, "--output", output,
           "--total", str(total), "--state-dir", str(root / uuid.uuid4().hex[:8]),
           "--group", f"quix-{uuid.uuid4().hex[:6]}"] + (["--group-by"] if group_by else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        raise SystemExit(f"the Quix job failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(read_outputs(bootstrap, output, result["outputs"]))
    return result


def read_outputs(bootstrap: str, topic: str, expected: int) -> dict[str, int]:
    """Customers and customer-days (UTC day of the window's end) in the Quix output topic,
    read by partition assignment (no group to join) until ``expected`` or 10 s idle."""
    import confluent_kafka

    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{topic}",
                                         "enable.auto.commit": False})
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                     for p in meta.partitions])
    customers: set[bytes] = set()
    days: set[tuple[bytes, int]] = set()
    n, idle = 0, time.monotonic() + 10
    while n < expected and time.monotonic() < idle:
        for msg in consumer.consume(5000, 0.5):
            if msg.error() is None:
                key = msg.key() or b""
                customers.add(key)
                days.add((key, int(json.loads(msg.value())["end"]) // DAY_MS))
                n += 1
                idle = time.monotonic() + 10
    consumer.close()
    return {"read": n, "customers": len(customers), "customer_days": len(days)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quix-python", default=os.environ.get("CEAP_QUIX_PYTHON", ".venv-quix/bin/python"),
                   help="python of a venv with quixstreams (env CEAP_QUIX_PYTHON)")
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--customers", type=int, default=10_000)
    p.add_argument("--partitions", default="1,2")
    p.add_argument("--batch", type=int, default=5000)
    p.add_argument("--group-by", action="store_true",
                   help="Quix re-keys by customer_id with sdf.group_by (a repartition topic)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    check_program()
    version = quix_version(args.quix_python)
    before = machine()
    log(f"{before}; quixstreams {version}")
    bodies = historic_events(args.events, args.customers, args.seed)
    proc, bootstrap = start_tansu()
    rows: list[tuple[str, ...]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for parts in [int(x) for x in args.partitions.split(",")]:
                topic = f"peer-{parts}-{uuid.uuid4().hex[:6]}"
                create_topic(bootstrap, topic, parts)
                publisher = KafkaConnector.from_dict({"type": "kafka", "topic": topic, "bootstrap_servers":
                                                      bootstrap, "partitions": parts}, None)
                log(f"publishing {len(bodies):,} events to {parts} partition(s)")
                publisher.publish(bodies)
                publisher.close()
                raw = raw_read(bootstrap, topic, len(bodies), args.batch)
                raw_rate = raw["events"] / raw["seconds"]
                log(f"raw read: {raw_rate:,.0f} ev/s")
                ceap = end_to_end(Path(tmp), bootstrap, topic, len(bodies), args.batch, [PROGRAM])
                ceap_rate = ceap["events"] / ceap["seconds"]
                log(f"CEAP: {ceap_rate:,.0f} ev/s, {ceap['candidates']:,} candidates, "
                    f"{ceap['customers']:,} customers, late {ceap['late']}")
                quix = run_quix(args.quix_python, bootstrap, topic, len(bodies), Path(tmp), args.group_by)
                quix_rate = quix["events"] / quix["seconds"]
                log(f"Quix: {quix_rate:,.0f} ev/s, {quix}")
                rows.append((str(parts), f"{raw_rate:,.0f}",
                             f"{ceap_rate:,.0f} ({ceap['events'] / ceap['cpu']:,.0f})",
                             f"{quix_rate:,.0f} ({quix['events'] / quix['cpu']:,.0f})",
                             f"{ceap_rate / quix_rate:.2f}", f"{ceap_rate / raw_rate:.3f}",
                             f"{ceap['customers']:,} / {quix['customers']:,}",
                             f"{ceap['candidates']:,} / {quix['customer_days']:,}",
                             f"{quix['outputs']:,}"))
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"machine: {before} (before); {machine()} (after)")
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    print(f"events: {args.events:,}, customers: {args.customers:,}, quixstreams {version}"
          f"{' with group_by' if args.group_by else ''}")
    print(f"| partitions | raw read ev/s | CEAP ev/s (per CPU-s) | Quix ev/s (per CPU-s) "
          f"| CEAP / Quix (goal ≥ {GOAL}) | CEAP / raw | customers flagged CEAP / Quix "
          "| customer-days CEAP / Quix | Quix outputs |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
