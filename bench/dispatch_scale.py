"""Several dispatcher processes on one PostgreSQL store: the aggregate rate.

Seeds ``--messages`` due candidates in a fresh schema, then starts 1, 2 and 4
dispatcher processes (``Dispatcher.run`` with a channel that records and
returns, in-flight 1,000) at the same moment and times until the last one
has finished. Every run checks that each candidate was sent exactly once
(the store's deliveries and the channels' own counts). Printed per run: the
aggregate msgs/s, the ratio to one process, and the CPU seconds per message
the dispatchers used (which, unlike the wall time, does not depend on what
else the machine is doing).

Usage (from the repository root; trust auth on 127.0.0.1)::

    .venv/bin/python bench/dispatch_scale.py --pg postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
import uuid
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from ceap.channels.base import Channel, ChannelConfig, Message, SendResult


class NullConfig(ChannelConfig):
    type: Literal["null"] = "null"


class NullChannel(Channel[NullConfig]):
    """Accepts everything at once."""

    config_model: ClassVar[type[ChannelConfig]] = NullConfig
    in_flight: ClassVar[int] = 1000

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        return [SendResult(m.idempotency_key, "sent") for m in messages]


def worker(url: str, batch: int, ready: Any, go: Any, out: Any, i: int) -> None:
    from ceap.delivery.dispatcher import Dispatcher
    from ceap.store import open_store

    store = open_store(url)  # migrates (schema checks) before anyone dispatches
    ready.wait()
    go.wait()
    cpu0 = time.process_time()
    stats = Dispatcher(store, {"null": NullChannel(NullConfig())}, batch_size=batch).run()
    if os.environ.get("BENCH_DEBUG"):
        print(stats, flush=True)
    out[i * 3], out[i * 3 + 1], out[i * 3 + 2] = stats.sent, time.process_time() - cpu0, time.time()
    store.close()


def seed(url: str, n: int) -> None:
    import pyarrow as pa

    from ceap.delivery.profiles import upsert_profiles
    from ceap.model import RunRecord, utcnow
    from ceap.store import open_store
    from ceap.testing.doubles import make_candidates

    store = open_store(url)
    now = utcnow()
    for start in range(0, n, 50_000):
        size = min(50_000, n - start)
        store.write_run(RunRecord(f"r{start}", "default", "bench", "succeeded", now),
                        make_candidates(size, now=now, program="bench", channels=["null"],
                                        customer_id=lambda i, s=start: f"c{s + i}",
                                        dedup_key=lambda i, s=start: f"d{s + i}",
                                        payload=lambda i: {"order": f"o{i}"}))
    upsert_profiles(store, pa.table({"customer_id": [f"c{i}" for i in range(n)]}), "default")
    store.close()


def run(base: str, n: int, procs: int, batch: int) -> tuple[float, float, int]:
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = f"{base}?options=-csearch_path%3D{schema}"
    try:
        seed(url, n)
        ctx = mp.get_context("spawn")
        ready, go, out = ctx.Barrier(procs + 1), ctx.Event(), ctx.Array("d", procs * 3)
        workers = [ctx.Process(target=worker, args=(url, batch, ready, go, out, i)) for i in range(procs)]
        for w in workers:
            w.start()
        ready.wait()  # every process imported and connected
        time.sleep(0.5)
        started = time.time()
        go.set()
        for w in workers:
            w.join()
        finished = max(out[i * 3 + 2] for i in range(procs))
        sent = sum(int(out[i * 3]) for i in range(procs))
        cpu = sum(out[i * 3 + 1] for i in range(procs))
        with psycopg.connect(url, autocommit=True) as conn:
            rows, distinct = conn.execute("SELECT count(*), count(DISTINCT candidate_id) FROM deliveries "
                                          "WHERE status = 'sent'").fetchone()  # type: ignore[misc]
        if not sent == rows == distinct == n:
            with psycopg.connect(url, autocommit=True) as conn:
                left = conn.execute("SELECT status, worker IS NOT NULL, count(*) FROM candidates "
                                    "GROUP BY 1, 2").fetchall()
            raise AssertionError(f"sent {sent}, rows {rows}, distinct {distinct} of {n}: {left}")
        return n / (finished - started), cpu / n, sent
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg", default=os.environ.get("CEAP_TEST_PG",
                                                       "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--processes", default="1,2,4")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f}; "
          f"{args.messages:,} messages, batch {args.batch_size}, PostgreSQL")
    one = None
    for procs in (int(p) for p in args.processes.split(",")):
        rate, cpu, _ = run(args.pg, args.messages, procs, args.batch_size)
        one = one or rate
        print(f"{procs} process(es): {rate:>8,.0f} msgs/s aggregate  ({rate / one:.2f}x one process; "
              f"{cpu * 1e6:,.0f} us of CPU a message; every message sent once)")


if __name__ == "__main__":
    main()
