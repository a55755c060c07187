"""Memory of the worker's keyed state (``ceap.realtime.keyed``): bytes per active customer
and per feature.

For each point (active customers x features), a fresh process feeds ``KeyedState`` the
events a worker keeps, in micro-batches of ``--batch`` through ``KeyedState.add`` (the
worker's own path): per customer and per feature, ``--per-feature`` events of that
feature's type inside its window, with attributes like ``bench/realtime.py``'s. Reports
the Arrow bytes held (``KeyedState.nbytes``) and the process's RSS growth over its
start (both per customer and per customer-feature), and the peak RSS.

    nice .venv/bin/python bench/realtime_state_memory.py                       # 10k, 100k
    nice .venv/bin/python bench/realtime_state_memory.py --customers 1000000 --features 3
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from realtime import machine

from ceap.realtime.events import EVENT_SCHEMA
from ceap.realtime.keyed import KeyedState

T0 = datetime(2026, 11, 20)
TYPES = ["app_crash", "purchase", "login", "support_contact", "page_view"]


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def point(customers: int, features: int, per: int, batch: int) -> dict[str, float]:
    start = rss()
    types = TYPES[:features]
    state = KeyedState(set(types), timedelta(hours=25))
    rng = np.random.default_rng(1)
    total = customers * features * per
    ids = np.arange(total)
    for lo in range(0, total, batch):
        k = ids[lo:lo + batch]
        who = k % customers
        kind = (k // customers) % features
        seconds = rng.integers(0, 24 * 3600, len(k))
        attrs = [f'{{"app":"ios","app_version":"5.2.{v}","error_code":"E{c}","screen":"/home"}}'
                 for v, c in zip(rng.integers(0, 9, len(k)).tolist(), rng.integers(100, 999, len(k)).tolist(),
                                 strict=True)]
        table = pa.table({
            "event_id": pa.array([f"e{i}" for i in k.tolist()], pa.string()),
            "tenant_id": pa.array(["default"] * len(k), pa.string()),
            "customer_id": pa.array([f"C{c:07d}" for c in who.tolist()], pa.string()),
            "type": pa.array([types[t] for t in kind.tolist()], pa.string()),
            "ts": pa.array((np.datetime64(T0) + seconds.astype("timedelta64[s]")).astype("datetime64[us]")),
            "attributes": pa.array(attrs, pa.string()),
        }, schema=EVENT_SCHEMA)
        state.add(table, pa.array(["p0"] * len(k), pa.string()), {"p0": T0 + timedelta(hours=24)})
        del table, attrs
    held = state.nbytes()
    grown = rss() - start
    found = state.history(pa.array(["C0000001"]), pa.array(["default"])).num_rows
    assert found == features * per, found
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"customers": customers, "features": features, "per_feature": per, "rows": state.rows(),
            "arrow_bytes": held, "rss_growth": grown, "peak_rss": peak}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--customers", default="10000,100000", help="comma-separated")
    p.add_argument("--features", default="1,3", help="comma-separated, at most 5")
    p.add_argument("--per-feature", type=int, default=1, help="events per customer and feature kept")
    p.add_argument("--batch", type=int, default=100_000)
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        c, f = (int(x) for x in args.one.split(","))
        print(json.dumps(point(c, f, args.per_feature, args.batch)))
        return 0
    print(machine())
    print(f"command: {' '.join(['.venv/bin/python', *sys.argv])}\n")
    print("| active customers | features | events kept | Arrow bytes per customer / per customer-feature "
          "| RSS growth per customer / per customer-feature | peak RSS |")
    print("|---:|---:|---:|---:|---:|---:|")
    for c in (int(x) for x in args.customers.split(",")):
        for f in (int(x) for x in args.features.split(",")):
            out = subprocess.run([sys.executable, __file__, "--one", f"{c},{f}", "--per-feature",
                                  str(args.per_feature), "--batch", str(args.batch)],
                                 check=True, capture_output=True, text=True).stdout
            r = json.loads(out)
            held = r["arrow_bytes"]
            print(f"| {c:,} | {f} | {r['rows']:,} | {held / c:,.0f} / {held / c / f:,.0f} "
                  f"| {r['rss_growth'] / c:,.0f} / {r['rss_growth'] / c / f:,.0f} "
                  f"| {r['peak_rss'] / 2**20:,.0f} MiB |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
