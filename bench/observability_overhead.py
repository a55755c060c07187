"""What the metrics and spans cost the API: CPU time per request of
``GET /v1/customers/{id}/candidates`` with the instrumentation and without it,
side by side in one run (alternating rounds, in process through httpx's ASGI
transport), and the cost of one labelled counter update.

    .venv/bin/python bench/observability_overhead.py [--requests 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import timeit
from datetime import UTC, datetime

import httpx

from ceap.api import create_app
from ceap.model import RunRecord
from ceap.observability.asgi import Instrument
from ceap.observability.metrics import DELIVERIES
from ceap.store import open_store
from ceap.testing.doubles import make_candidates


def build(url: str, instrumented: bool) -> object:
    app = create_app(open_store(url), auth=False)
    if not instrumented:  # the same app without the middleware (/metrics stays, unused)
        app.user_middleware = [m for m in app.user_middleware if m.cls is not Instrument]
    return app


async def drive(app: object, n: int, customers: int) -> float:
    """CPU seconds per request over ``n`` requests."""
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for i in range(50):  # warm up
            await client.get(f"/v1/customers/c{i % customers}/candidates?limit=5")
        start = time.process_time()
        for i in range(n):
            r = await client.get(f"/v1/customers/c{i % customers}/candidates?limit=5")
            assert r.status_code == 200
        return (time.process_time() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    folder = tempfile.mkdtemp()
    url = f"sqlite:///{folder}/bench.db"
    store = open_store(url)
    now = datetime.now(UTC)
    n = 20_000
    store.write_run(RunRecord("r1", "default", "bench", "succeeded", now),
                    make_candidates(n, now=now, customer_id=lambda i: f"c{i % 5000}",
                                    dedup_key=lambda i: f"d{i}", program="bench", run_id="r1"))
    store.close()
    with_, without = build(url, True), build(url, False)
    on, off = [], []
    for _ in range(args.rounds):
        on.append(asyncio.run(drive(with_, args.requests, 5000)))
        off.append(asyncio.run(drive(without, args.requests, 5000)))
    m_on, m_off = statistics.median(on), statistics.median(off)
    per_inc = min(timeit.repeat(lambda: DELIVERIES.labels("email", "sent").inc(3), number=100_000,
                                repeat=5)) / 100_000
    print(f"load: {os.getloadavg()[0]:.2f} (1 min)")
    print(f"CPU per request, instrumented:   {m_on * 1e6:8.1f} µs (rounds: "
          f"{', '.join(f'{x * 1e6:.0f}' for x in on)})")
    print(f"CPU per request, uninstrumented: {m_off * 1e6:8.1f} µs (rounds: "
          f"{', '.join(f'{x * 1e6:.0f}' for x in off)})")
    print(f"ratio instrumented / uninstrumented: {m_on / m_off:.3f}")
    print(f"one labelled counter update: {per_inc * 1e9:.0f} ns")


if __name__ == "__main__":
    main()
