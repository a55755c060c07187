"""The PostgreSQL hot reads at the start of a burst, in one process (no HTTP).

``bench/serving_api.py`` offers its routes in 1 s turns, so every candidates slice
starts after a second in which the database served nothing (the ``/healthz`` slice).
This does the same to ``PgServingReads`` alone: ``--rate`` candidates reads a second,
open loop, for 1 s, then ``--idle`` seconds of nothing, ``--cycles`` times. Prints the
latency (from each read's intended send time) of the reads due in the first 0.1 s of a
burst against the rest, how many database connections the reads opened, and the CPU
their database processes spent per read (``/proc/PID/schedstat``: the database must be
on this machine). Run it with each tree on ``PYTHONPATH`` in turn to compare two codes.

    PYTHONPATH=src .venv/bin/python bench/serving_burst.py --pg postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving_api import seed

from ceap.model import utcnow
from ceap.store.pg_serving import PgServingReads


def backend_cpu(pg: str, app: str) -> tuple[float, int]:
    """CPU microseconds so far of the database processes of connections named ``app``."""
    with psycopg.connect(pg, autocommit=True) as conn:
        pids = [r[0] for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,))]
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:  # ended meanwhile
            pass
    return total / 1e3, len(pids)


async def bursts(url: str, pg: str, app: str, customers: int, rate: float, cycles: int,
                 idle: float) -> None:
    reads = PgServingReads(url, utcnow)
    try:
        for _ in range(20):
            await reads.candidates("default", "c1", None, None, 5)
        early: list[float] = []
        rest: list[float] = []

        async def one(due: float, into: list[float]) -> None:
            await reads.candidates("default", f"c{random.randrange(customers)}", None, None, 5)
            into.append(time.perf_counter() - due)

        before, _ = backend_cpu(pg, app)
        n = 0
        for _ in range(cycles):
            await asyncio.sleep(idle)
            start = time.perf_counter()
            tasks = []
            for i in range(int(rate)):
                due = start + i / rate
                wait = due - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                tasks.append(asyncio.ensure_future(one(due, early if i / rate < 0.1 else rest)))
                n += 1
            await asyncio.gather(*tasks)
        after, opened = backend_cpu(pg, app)
        e, r = np.array(early) * 1e3, np.array(rest) * 1e3
        print(f"first 0.1 s of a burst: p50 {np.percentile(e, 50):.2f} p99 {np.percentile(e, 99):.2f} "
              f"max {e.max():.1f} ms | the rest: p50 {np.percentile(r, 50):.2f} p99 "
              f"{np.percentile(r, 99):.2f} ms | connections {opened}, their database processes' "
              f"CPU {(after - before) / n:.0f} us a read")
    finally:
        reads.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", required=True, help="a PostgreSQL URL (a schema is made and dropped)")
    parser.add_argument("--rate", type=float, default=1000, help="reads/s during a burst")
    parser.add_argument("--cycles", type=int, default=8)
    parser.add_argument("--idle", type=float, default=1.0, help="seconds of nothing before each burst")
    parser.add_argument("--customers", type=int, default=20_000)
    args = parser.parse_args()
    schema, app = f"burst_{os.getpid()}", f"ceap_burst_{os.getpid()}"
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in args.pg else "?"
    url = f"{args.pg}{sep}options=-csearch_path%3D{schema}"
    try:
        seed(url, args.customers, 3, 1)
        with open("/proc/loadavg") as f:
            print(f"load before: {' '.join(f.read().split()[:3])}")
        asyncio.run(bursts(f"{url}&application_name={app}", args.pg, app, args.customers,
                           args.rate, args.cycles, args.idle))
    finally:
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    main()
