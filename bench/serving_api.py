"""Serving API latency at a constant offered rate, against a constant-answer baseline.

Seeds a store (SQLite, or PostgreSQL with ``--pg``) with candidates and in-app inbox
messages for many customers, makes an API key, starts ``ceap serve --workers N`` in
a child process and offers, with the open-loop generator of ``bench/loadgen.py``,
``--rate`` requests a second to each of three routes in turn (1 s slices, round and
round, so all three see the same machine):

* ``GET /healthz``: a constant answer on the same server stack (the baseline);
* ``GET /v1/customers/{id}/candidates?limit=5`` for random customers, with the key;
* ``GET /v1/customers/{id}/inbox`` for random customers, with the key.

Latency runs from each request's intended send time. Prints the percentiles of each
and the verdicts: p99 < 10 ms, and p99 <= 1.5 x the baseline's p99.

    .venv/bin/python bench/serving_api.py --rate 2000 --workers 2 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import Result, Target, run, summary

from ceap.api.auth import create_key
from ceap.model import InboxItem, RunRecord, utcnow
from ceap.store import open_store
from ceap.testing.doubles import make_candidates

GOAL_MS, GOAL_RATIO = 10.0, 1.5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed(url: str, customers: int, per_customer: int, inbox_per_customer: int) -> str:
    """Fill the store; return an API key of the default tenant."""
    store = open_store(url)
    try:
        now = utcnow() - timedelta(minutes=1)
        n = customers * per_customer
        table = make_candidates(n, now=now, customer_id=lambda i: f"c{i % customers}",
                                program=lambda i: f"p{i // customers}", channels=["inapp"],
                                dedup_key=lambda i: f"k{i}", score=lambda i: (i * 7919 % 1000) / 1000)
        store.write_run(RunRecord("bench", "default", "bench", "succeeded", now), table)
        items = [InboxItem("default", f"c{i % customers}", f"m{i}", "bench", f"Offer {i}",
                           "A message for you", {"n": i})
                 for i in range(customers * inbox_per_customer)]
        for start in range(0, len(items), 5000):
            store.inbox_add(items[start:start + 5000])
        return create_key(store, "default", "bench")
    finally:
        store.close()


def wait_up(port: int, server: subprocess.Popen[bytes], timeout: float = 600) -> None:
    """Until every worker answers (a busy machine may take a minute to start them)."""
    deadline = time.monotonic() + timeout
    answered = 0
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the API exited with {server.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), 2) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answered = answered + 1 if s.recv(64).startswith(b"HTTP/1.1 200") else 0
            if answered >= 20:
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the API did not start")


def targets(customers: int, key: str, seed_value: int = 42) -> list[Target]:
    rng = random.Random(seed_value)
    picks = [rng.randrange(customers) for _ in range(1 << 16)]
    auth = (("Authorization", f"Bearer {key}"),)
    return [
        Target("healthz (baseline)", lambda i: "/healthz"),
        Target("candidates", lambda i: f"/v1/customers/c{picks[i & 0xFFFF]}/candidates?limit=5", auth),
        Target("inbox", lambda i: f"/v1/customers/c{picks[(i * 7) & 0xFFFF]}/inbox", auth),
    ]


def early_share(result: Result, slice_s: float = 1.0, early_s: float = 0.1) -> float:
    """Of a route's slowest 1 % of requests, the share due in the first ``early_s`` of
    their slice (``early_s / slice_s`` if the slow ones fall anywhere alike)."""
    order = sorted(range(len(result.latencies)), key=result.latencies.__getitem__)
    slow = order[len(order) - max(1, len(order) // 100):]
    return sum(1 for j in slow if result.offsets[j] % slice_s < early_s) / len(slow)


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2000, help="requests/s offered to each route")
    parser.add_argument("--duration", type=float, default=30, help="seconds, all routes together")
    parser.add_argument("--workers", type=int, default=2, help="`ceap serve --workers`")
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--per-customer", type=int, default=3, help="candidates per customer")
    parser.add_argument("--inbox", type=int, default=2, help="inbox messages per customer")
    parser.add_argument("--dump", help="write every request's route, intended send time and "
                                       "latency (seconds) to this JSON file")
    parser.add_argument("--pg", help="a PostgreSQL URL to use instead of SQLite (its tables are "
                                     "created in a fresh schema, dropped afterwards)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="ceap-api-bench-"))
    schema = None
    if args.pg:
        import psycopg

        schema = f"bench_{os.getpid()}"
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        url = f"{args.pg}{'&' if '?' in args.pg else '?'}options=-csearch_path%3D{schema}"
    else:
        url = f"sqlite:///{folder / 'api.db'}"
    server = None
    try:
        print(f"seeding {args.customers * args.per_customer:,} candidates and "
              f"{args.customers * args.inbox:,} inbox messages ...", flush=True)
        key = seed(url, args.customers, args.per_customer, args.inbox)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "ceap", "--project", str(folder), "--store", url, "serve",
             "--port", str(port), "--workers", str(args.workers)],
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wait_up(port, server)
        routes = targets(args.customers, key)
        asyncio.run(run("127.0.0.1", port, routes, rate=args.rate, duration=3, slice_s=0.5))  # warm-up
        print(f"load before: {load()}; offering {args.rate:,.0f} req/s to each of "
              f"{len(routes)} routes in 1 s turns for {args.duration:g} s; "
              f"{args.workers} worker(s); store {'PostgreSQL' if args.pg else 'SQLite'}", flush=True)
        results = asyncio.run(run("127.0.0.1", port, routes, rate=args.rate, duration=args.duration))
        print(f"load after: {load()}")
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(folder, ignore_errors=True)
        if schema:
            import psycopg

            with psycopg.connect(args.pg, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")
    figures = {name: summary(r) for name, r in results.items()}
    base = figures[routes[0].name]["p99"]
    print(f"{'route':<20}{'requests':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}"
          f"{'max ms':>9}{'p99/base':>9}{'gen lag p99':>12}{'not 200':>8}")
    for name, f in figures.items():
        print(f"{name:<20}{f['requests']:>9.0f}{f['p50']:>9.2f}{f['p90']:>9.2f}{f['p99']:>9.2f}"
              f"{f['p99.9']:>10.2f}{f['max']:>9.2f}{f['p99'] / base:>9.2f}{f['send_lag_p99']:>12.2f}"
              f"{f['not_200'] + f['unanswered']:>8.0f}")
    print("slowest 1 % of each route, where in its 1 s slice it was due: "
          + "; ".join(f"{name} {early_share(r):.0%} in the first 0.1 s" for name, r in results.items()))
    if args.dump:
        Path(args.dump).write_text(json.dumps({name: {"offsets": r.offsets, "latencies": [
            v if math.isfinite(v) else None for v in r.latencies]} for name, r in results.items()}))
    for name in [t.name for t in routes[1:]]:
        f = figures[name]
        ok_abs = f["p99"] < GOAL_MS and not f["not_200"] and not f["unanswered"]
        ok_ratio = math.isfinite(f["p99"]) and math.isfinite(base) and f["p99"] <= GOAL_RATIO * base
        print(f"{name}: p99 < {GOAL_MS:g} ms at {args.rate:,.0f} req/s: {'meets' if ok_abs else 'misses'}; "
              f"p99 <= {GOAL_RATIO}x baseline: {'meets' if ok_ratio else 'misses'}")


if __name__ == "__main__":
    main()
