"""CPU time per request of the serving API's hot routes, in process (no HTTP, no network).

Seeds a store as ``bench/serving_api.py`` does (SQLite, or PostgreSQL with ``--pg``),
builds the app with API keys on, and calls the ASGI application itself (every
middleware included) ``--n`` times per route, one request at a time: ``GET /healthz``
(the constant answer), a customer's candidates (``?limit=5``) and inbox, with the key.
Prints process CPU microseconds per request (user + system: what load on a shared
machine distorts least) and each route's ratio to ``/healthz``; with ``--pg``, also
the CPU the PostgreSQL server processes serving this process's connections spent per
request (their ``/proc/PID/schedstat`` run time: the database must be on this machine).

    .venv/bin/python bench/serving_cpu.py                       # the code on PYTHONPATH
    .venv/bin/python bench/serving_cpu.py --baseline SRC_DIR    # and another tree beside it

``--baseline`` runs the same measurement in a child process with ``PYTHONPATH=SRC_DIR``
(for example ``git archive main | tar -x -C /tmp/serving-main`` gives
``/tmp/serving-main/src``), rounds alternating with this checkout's, and prints the
ratios per round. uvicorn's own parsing (about the same for every route) is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROUTES = ("healthz", "candidates", "inbox")


def _scope(path: str, key: str | None) -> dict[str, Any]:
    raw, _, query = path.partition("?")
    headers = [(b"host", b"bench")]
    if key:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": raw, "raw_path": raw.encode(), "root_path": "",
            "query_string": query.encode(), "headers": headers, "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000)}


async def _call(app: Any, scope: dict[str, Any]) -> int:
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


def _backends(url: str, name: str) -> list[int]:
    """The PostgreSQL server processes of the connections named ``name``."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return [pid for (pid,) in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s "
            "AND pid <> pg_backend_pid()", (name,))]


def _run_ns(pids: list[int]) -> int:
    """Nanoseconds those processes have run on a CPU (ended ones count nothing)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def measure(url: str, key: str, customers: int, n: int) -> dict[str, float]:
    """CPU microseconds per request of each route (one round); with PostgreSQL also its
    server processes' (``ROUTE db``)."""
    from ceap.api import create_app
    from ceap.store import open_store

    pg = url.startswith("postgres")
    name = f"ceap-cpu-{os.getpid()}"
    if pg:  # every connection of this process's store carries the name
        url = f"{url}{'&' if '?' in url else '?'}application_name={name}"
    store = open_store(url, migrate=False)
    app = create_app(store, auth=True)
    rng = random.Random(7)
    paths = {
        "healthz": lambda: "/healthz",
        "candidates": lambda: f"/v1/customers/c{rng.randrange(customers)}/candidates?limit=5",
        "inbox": lambda: f"/v1/customers/c{rng.randrange(customers)}/inbox",
    }

    async def go() -> dict[str, float]:
        found = {}
        for route in ROUTES:
            scopes = [_scope(paths[route](), None if route == "healthz" else key) for _ in range(n)]
            for s in scopes[: n // 10]:  # warm-up: connections, caches, first-call imports
                if await _call(app, dict(s)) != 200:
                    raise SystemExit(f"{route}: not 200")
            pids = _backends(url, name) if pg else []
            db, start = _run_ns(pids), time.process_time()
            for s in scopes:
                await _call(app, s)
            found[route] = (time.process_time() - start) / n * 1e6
            if pg:
                found[f"{route} db"] = (_run_ns(pids) - db) / n / 1e3
        return found

    try:
        return asyncio.run(go())
    finally:
        store.close()


def seeded(args: argparse.Namespace, folder: Path) -> tuple[str, str, Any]:
    """The store URL, an API key, and a function dropping the store afterwards."""
    from serving_api import seed

    drop: Any = lambda: None  # noqa: E731
    if args.pg:
        import psycopg

        schema = f"bench_cpu_{os.getpid()}"
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        url = f"{args.pg}{'&' if '?' in args.pg else '?'}options=-csearch_path%3D{schema}"

        def drop() -> None:
            with psycopg.connect(args.pg, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")
    else:
        url = f"sqlite:///{folder / 'api.db'}"
    return url, seed(url, args.customers, 3, 2), drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="requests per route and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--pg", help="a PostgreSQL URL instead of SQLite (a fresh schema)")
    parser.add_argument("--baseline", type=Path, help="another source tree, measured alternately")
    parser.add_argument("--child", nargs=2, metavar=("URL", "KEY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], args.child[1], args.customers, args.n)))
        return
    folder = Path(tempfile.mkdtemp(prefix="ceap-api-cpu-"))
    url, key, drop = seeded(args, folder)
    codes = {"this": os.environ.get("PYTHONPATH", "")}
    if args.baseline:
        codes["baseline"] = str(args.baseline.resolve())
    rows: dict[str, list[dict[str, float]]] = {code: [] for code in codes}
    try:
        with open("/proc/loadavg") as f:
            print(f"load before: {' '.join(f.read().split()[:3])}", flush=True)
        for r in range(args.rounds):
            for code, src in codes.items():
                env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, str(HERE)) if p)}
                out = subprocess.run([sys.executable, __file__, "--n", str(args.n), "--customers",
                                      str(args.customers), "--child", url, key],
                                     env=env, check=True, capture_output=True, text=True).stdout
                found = json.loads(out.strip().splitlines()[-1])
                rows[code].append(found)
                print(f"round {r + 1} {code:<9}" + "".join(
                    f"{route} {found[route]:7.1f} us  " for route in ROUTES) + "".join(
                    f"db {route} {found[f'{route} db']:6.1f} us  " for route in ROUTES
                    if f"{route} db" in found), flush=True)
        with open("/proc/loadavg") as f:
            print(f"load after: {' '.join(f.read().split()[:3])}")
    finally:
        drop()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{'code':<10}" + "".join(f"{r + ' us':>16}{r + '/healthz':>20}" for r in ROUTES[1:])
          + f"{'healthz us':>12}")
    for code, found in rows.items():
        med = {route: statistics.median(f[route] for f in found) for route in ROUTES}
        print(f"{code:<10}" + "".join(f"{med[r]:>16.1f}{med[r] / med['healthz']:>20.2f}"
                                      for r in ROUTES[1:]) + f"{med['healthz']:>12.1f}")
    if args.pg:
        print(f"{'code':<10}" + "".join(f"{r + ' db us':>16}" for r in ROUTES)
              + f"{'candidates app+db us':>22}{'inbox app+db us':>17}")
        for code, found in rows.items():
            med = {k: statistics.median(f[k] for f in found) for k in found[0]}
            print(f"{code:<10}" + "".join(f"{med[r + ' db']:>16.1f}" for r in ROUTES)
                  + "".join(f"{med[r] + med[r + ' db']:>{w}.1f}"
                            for r, w in (("candidates", 22), ("inbox", 17))))
    if args.baseline:
        for route in ROUTES[1:]:
            ratios = [a[route] / b[route] for a, b in zip(rows["this"], rows["baseline"], strict=True)]
            print(f"{route}: this / baseline CPU per request, by round: "
                  + ", ".join(f"{x:.2f}" for x in ratios))
            if args.pg:
                both = [(a[route] + a[f"{route} db"]) / (b[route] + b[f"{route} db"])
                        for a, b in zip(rows["this"], rows["baseline"], strict=True)]
                print(f"{route}: this / baseline CPU per request with the database's, by round: "
                      + ", ".join(f"{x:.2f}" for x in both))


if __name__ == "__main__":
    main()
