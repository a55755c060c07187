"""Serving API latency under a steady load, measured with wrk.

Seeds a SQLite store with candidates for many customers, serves the API with
uvicorn in a child process, and drives ``GET /v1/customers/{id}/candidates``
with wrk: connections each pause a fixed delay between requests, so the offered
rate is about ``connections / delay``. Prints the achieved rate and the latency
percentiles wrk reports.

    .venv/bin/python bench/serving_api.py --customers 20000 --connections 20 --delay-ms 20
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from ceap.model import RunRecord, utcnow
from ceap.store import open_store
from ceap.testing.doubles import make_candidates

LUA = """
local n = {customers}
math.randomseed(42)
request = function()
  return wrk.format("GET", "/v1/customers/c" .. math.random(0, n - 1) .. "/candidates?limit=5")
end
delay = function() return {delay} end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed(url: str, customers: int, per_customer: int) -> None:
    store = open_store(url)
    now = utcnow() - timedelta(minutes=1)
    n = customers * per_customer
    table = make_candidates(n, now=now, customer_id=lambda i: f"c{i % customers}",
                            program=lambda i: f"p{i // customers}", channels=["inapp"],
                            dedup_key=lambda i: f"k{i}", score=lambda i: (i * 7919 % 1000) / 1000)
    store.write_run(RunRecord("bench", "default", "bench", "succeeded", now), table)
    store.close()


def wait_up(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the API did not start")


def parse(output: str) -> dict[str, float]:
    def ms(text: str) -> float:
        value, unit = float(re.match(r"([\d.]+)", text).group(1)), re.sub(r"[\d.]", "", text)  # type: ignore[union-attr]
        return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    found = {f"p{p}": ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", output, re.M)}
    found["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    found["non_2xx"] = float(errors.group(1)) if errors else 0.0
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--per-customer", type=int, default=3)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--delay-ms", type=int, default=20, help="pause per connection")
    parser.add_argument("--duration", type=int, default=20, help="seconds")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    folder = Path(tempfile.mkdtemp(prefix="ceap-api-bench-"))
    url = f"sqlite:///{folder / 'api.db'}"
    print(f"seeding {args.customers * args.per_customer:,} candidates ...", flush=True)
    seed(url, args.customers, args.per_customer)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "ceap", "--store", url, "serve", "--port", str(port), "--no-auth"],
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_up(port)
        script = folder / "load.lua"
        script.write_text(LUA.format(customers=args.customers, delay=args.delay_ms))
        base = f"http://127.0.0.1:{port}"
        subprocess.run(["wrk", "-t2", "-c10", "-d3s", "-s", str(script), base],
                       check=True, capture_output=True)  # warm-up
        print(f"wrk: {args.connections} connections x 1 request per {args.delay_ms} ms, "
              f"{args.duration} s", flush=True)
        run = subprocess.run(["wrk", "-t2", f"-c{args.connections}", f"-d{args.duration}s",
                              "--latency", "-s", str(script), base],
                             check=True, capture_output=True, text=True)
        figures = parse(run.stdout)
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
    print(f"achieved {figures['rps']:,.0f} requests/s; latency p50 {figures['p50']:.2f} ms, "
          f"p90 {figures['p90']:.2f} ms, p99 {figures['p99']:.2f} ms; non-2xx {figures['non_2xx']:.0f}")
    verdict = "meets" if figures["p99"] < 20 and figures["rps"] >= 1000 else "misses"
    print(f"goal p99 < 20 ms at >= 1,000 requests/s: {verdict}")


if __name__ == "__main__":
    main()
