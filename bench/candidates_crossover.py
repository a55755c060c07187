"""Thread CPU of a stream micro-batch's candidate rows made in Python
(``pipeline.candidates_arrow``) against the query (``selection._candidate_sql``), by
number of rows: where the Python loop stops paying (``candidates_arrow.MAX_ROWS``).

Both over the same best rows of ``bench/realtime.py``'s program shape (payload columns of
text and integers, a holdout draw), median of ``--repeat`` runs each::

    PYTHONPATH=src .venv/bin/python bench/candidates_crossover.py --sizes 16,64,128,256,512,1024
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from ceap.pipeline import candidates_arrow, selection
from ceap.pipeline.funnel import Funnel
from ceap.pipeline.plan import SCORE
from ceap.pipeline.selection import RunInfo
from ceap.spec.loading import parse_program
from ceap.sqlexpr import sandboxed_connection

SPEC = parse_program({
    "name": "p", "source": {"type": "events", "on": ["app_crash"]},
    "selection": {"dedup_window": "1d"}, "experiment": {"holdout": 0.1},
    "action": {"type": "alert", "channels": ["email"], "category": "transactional",
               "payload_columns": ["crashes_24h", "app_version", "app"]}})


def best(n: int) -> pa.Table:
    rng = random.Random(n)
    t0 = datetime(2026, 11, 20, 10)
    return pa.table({
        "customer_id": [f"L{i:07d}" for i in range(n)],
        "crashes_24h": [rng.randrange(3, 9) for _ in range(n)],
        "app_version": [rng.choice(["5.2.1", "5.1.4"]) for _ in range(n)],
        "app": [rng.choice(["ios", "web"]) for _ in range(n)],
        "event_ts": pa.array([t0 + timedelta(seconds=i) for i in range(n)], pa.timestamp("us")),
        "event_id": [f"e{i}" for i in range(n)],
        SCORE: [0.3 + rng.random() / 2 for _ in range(n)]})


def cpu_ms(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.thread_time()
        fn()
        times.append(1000 * (time.thread_time() - start))
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="16,64,128,256,512,1024")
    p.add_argument("--repeat", type=int, default=30)
    args = p.parse_args(argv)
    con = sandboxed_connection()
    con.execute("PRAGMA disable_optimizer")
    con.execute("SET threads = 1")
    info = RunInfo("default", "run-1", datetime(2026, 11, 20, 12, tzinfo=UTC), "m1")
    limit = candidates_arrow.MAX_ROWS
    candidates_arrow.MAX_ROWS = 10**9  # both ways at every size
    print("| rows | Python (ms CPU) | query (ms CPU) |")
    print("|---:|---:|---:|")
    for n in [int(s) for s in args.sizes.split(",")]:
        rows = best(n)
        python = cpu_ms(lambda rows=rows: candidates_arrow.candidate_rows(
            rows, SPEC, "default", "run-1", "m1", 0.0, "event_ts", 86400), args.repeat)
        original = candidates_arrow.supported
        candidates_arrow.supported = lambda *a: False  # type: ignore[assignment]
        try:
            query = cpu_ms(lambda rows=rows: selection._select_in_one(
                con, rows, SPEC, info, Funnel(), None, "event_ts"), args.repeat)
            arrow_best = cpu_ms(lambda rows=rows: selection.best_per_bucket(
                rows, SPEC, "event_ts", selection.tie_columns(rows.schema, SPEC)), args.repeat)
        finally:
            candidates_arrow.supported = original  # type: ignore[assignment]
        print(f"| {n} | {python:.2f} | {max(query - arrow_best, 0.0):.2f} |")
    candidates_arrow.MAX_ROWS = limit
    return 0


if __name__ == "__main__":
    sys.exit(main())
