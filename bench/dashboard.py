"""Latency of the dashboard's pages on the demo's data: p50 and p95 per page, against
the goal of 200 ms at the p95, with ``/healthz`` measured in the same run as the floor
(what any request to this server costs).

Serves the project with ``ceap serve`` in a child process (the same command a user
runs), signs in with a fresh API key, then asks for each page ``--n`` times in turn,
one request at a time, after two warm-up requests per page; the first of those is
printed too (``first ms``: an uplift page computes its report then, and keeps it while
the outcomes are unchanged).

    .venv/bin/ceap demo                          # once: fills .ceap/demo.db
    .venv/bin/python bench/dashboard.py          # --project . --n 60
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

GOAL_MS = 200.0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ceap(project: Path, store: str, *args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "ceap"), "--project", str(project), "--store", store, *args]


def pick_pages(client: httpx.Client) -> list[str]:
    """The pages to time: each kind once, with a program, a customer and an experiment
    taken from the demo's data."""
    import re

    listing = client.get("/ui/programs").text
    runs = re.findall(r'<tr data-program="([^"]+)">.*?<td class="n runs">([\d,]+)</td>', listing, re.S)
    program = max(runs, key=lambda r: int(r[1].replace(",", "")))[0]
    customers = client.get("/ui/customers?q=").text
    customer = re.search(r'/ui/customers/([^"]+)"', customers)
    experiments = client.get("/ui/experiments").text
    rows = re.findall(r'<tr data-program="([^"]+)">.*?<td class="n control">([\d,]+)</td>',
                      experiments, re.S)
    tested = max(rows, key=lambda r: int(r[1].replace(",", "")))[0]
    return ["/ui/programs", f"/ui/programs/{program}", "/ui/customers?q=",
            f"/ui/customers/{customer.group(1) if customer else 'C000001'}", "/ui/deliveries",
            "/ui/experiments", f"/ui/experiments/{tested}", f"/ui/experiments/{tested}?by=variant",
            "/ui/realtime"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--store", help="store URL (default: the demo's, PROJECT/.ceap/demo.db)")
    parser.add_argument("--n", type=int, default=60, help="requests per page")
    args = parser.parse_args()
    project = args.project.resolve()
    store = args.store or f"sqlite:///{project / '.ceap' / 'demo.db'}"
    if not args.store and not (project / ".ceap" / "demo.db").exists():
        sys.exit(f"{project}/.ceap/demo.db not found: run `ceap demo` there first")
    key = subprocess.run(ceap(project, store, "apikey", "create", "bench-dashboard"), capture_output=True,
                         text=True, check=True).stdout.strip()
    port = free_port()
    server = subprocess.Popen(ceap(project, store, "serve", "--port", str(port)))
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            for _ in range(200):
                try:
                    client.get("/healthz")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            r = client.post("/ui/login", data={"key": key, "next": "/ui/programs"})
            assert r.status_code == 303, r.text
            pages = ["/healthz", *pick_pages(client)]
            times: dict[str, list[float]] = {p: [] for p in pages}
            first: dict[str, float] = {}
            for page in pages:  # the first request computes what a page keeps (uplift reports)
                start = time.perf_counter()
                client.get(page).raise_for_status()
                first[page] = (time.perf_counter() - start) * 1000
                client.get(page).raise_for_status()
            for _ in range(args.n):
                for page in pages:
                    start = time.perf_counter()
                    client.get(page).raise_for_status()
                    times[page].append((time.perf_counter() - start) * 1000)
    finally:
        server.terminate()
        server.wait(10)
    floor = statistics.quantiles(times["/healthz"], n=20)[18]
    print(f"{'page':<46} {'first ms':>9} {'p50 ms':>8} {'p95 ms':>8} {'p95/healthz':>12}  "
          f"goal p95 < {GOAL_MS:.0f} ms")
    worst = 0.0
    for page, samples in times.items():
        p95 = statistics.quantiles(samples, n=20)[18]
        worst = max(worst, p95) if page != "/healthz" else worst
        print(f"{page:<46} {first[page]:>9.1f} {statistics.median(samples):>8.1f} {p95:>8.1f} "
              f"{p95 / floor:>12.1f}  "
              f"{'' if page == '/healthz' else ('met' if p95 < GOAL_MS else 'MISSED')}")
    print(f"worst page p95 {worst:.1f} ms; load {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
