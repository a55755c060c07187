"""Rows the dispatcher writes per message on SQLite, by statement: a run of the
``Dispatcher`` over ``--messages`` candidates with the null channel (``capture``), every
statement of the store's write connection traced (``set_trace_callback``) and the rows
each one changed counted (``total_changes`` between statements). Row counts only, no
timing; run it on two trees (``PYTHONPATH=<src>``) to compare them::

    .venv/bin/python bench/dispatch_rows.py --messages 2000
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dispatch_webhook import seeded_store


def shape(sql: str) -> str | None:
    """A write statement with its literals blanked (``UPDATE deliveries SET status = ? ...``)."""
    s = " ".join(sql.split())
    if not re.match(r"(INSERT|UPDATE|DELETE)\b", s, re.I):
        return None
    s = re.sub(r"'[^']*'", "?", s)
    s = re.sub(r"\b\d+(\.\d+)?\b", "?", s)
    s = re.sub(r"\((\?, ?)+\?\)", "(?...)", s)
    found = re.search(r"SET (.*?) WHERE", s)
    head = re.match(r"(\w+)(?: OR \w+)?(?: INTO| FROM)? (\w+)", s)
    assert head is not None
    return f"{head.group(1).upper()} {head.group(2)}" + (f" SET {found.group(1)[:60]}" if found else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    n = args.messages

    from ceap.delivery.dispatcher import Dispatcher
    from ceap.testing.doubles import CaptureConfig, CapturingChannel

    rows: Counter[str] = Counter()
    runs: Counter[str] = Counter()
    lock = threading.Lock()
    with tempfile.TemporaryDirectory() as tmp:
        store = seeded_store(Path(tmp), n, "capture")
        conn = store._conn  # the write connection: every write of the store goes through it
        state: dict[str, object] = {"last": None, "total": conn.total_changes}

        def trace(sql: str) -> None:
            with lock:
                total = conn.total_changes
                if state["last"] is not None:
                    rows[str(state["last"])] += total - int(state["total"])  # type: ignore[call-overload]
                state["total"], state["last"] = total, shape(sql)
                if state["last"] is not None:
                    runs[str(state["last"])] += 1

        conn.set_trace_callback(trace)
        stats = Dispatcher(store, {"capture": CapturingChannel(CaptureConfig(outbox="bench"))},
                           batch_size=500).run()
        trace("SELECT 1")
        conn.set_trace_callback(None)
        store.close()
    assert stats.sent == n, stats
    print(f"{n:,} messages through the dispatcher and the null channel, SQLite; per message:")
    print(f"{'rows':>6} {'runs':>6}  statement")
    for what, count in sorted(rows.items(), key=lambda kv: (-kv[1], kv[0])):
        if count or runs[what] / n >= 0.01:
            print(f"{count / n:6.2f} {runs[what] / n:6.3f}  {what}")
    print(f"{sum(rows.values()) / n:6.2f} {sum(runs.values()) / n:6.3f}  in all")


if __name__ == "__main__":
    main()
