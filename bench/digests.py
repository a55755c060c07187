"""Digest benchmark: what holding candidates for digests costs the dispatcher, in one run.

On fresh SQLite stores (a temporary folder), the dispatcher with an in-memory channel:

* ``plain``: N customers, one pending candidate each, dispatched (claim, policies,
  render, outbox): N messages;
* ``plain N x K``: K pending candidates per customer, each sent on its own (what the
  customers would get without a digest);
* ``digest``: the same N customers with K candidates each held for a 1 h digest whose
  window has passed, dispatched: collected, flushed into N digest messages, then those
  dispatched like the plain ones: N messages listing N x K candidates;
* ``idle pass``: the planning pass of a dispatcher with nothing to do (a program with a
  digest in the programs), with the digest hook and with it replaced by a no-op: what
  the hook's two indexed reads add to every pass.

Usage (from the repository root)::

    .venv/bin/python bench/digests.py                   # 5,000 customers, 3 items each
    .venv/bin/python bench/digests.py --customers 20000 --items 5
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


def program(name: str, digest: bool) -> Any:
    from ceap.spec.loading import parse_program

    action: dict[str, Any] = {"type": "inform", "channels": ["capture"]}
    if digest:
        action["digest"] = {"window": "1h", "max_items": 10}
    return parse_program({"name": name, "source": {"type": "csv", "path": "x.csv"}, "action": action})


def seeded(folder: Path, name: str, customers: int, items: int, status: str, now: datetime) -> Any:
    from ceap.model import RunRecord
    from ceap.store import open_store
    from ceap.testing.doubles import make_candidates

    store = open_store(f"sqlite:///{folder / f'{name}.db'}")
    at = now - timedelta(hours=2)
    n = customers * items
    store.write_run(RunRecord("r1", "default", name, "succeeded", at), make_candidates(
        n, now=at, program=name, channels=["capture"], template=None, category="marketing",
        status=status, customer_id=lambda i: f"c{i // items}", dedup_key=lambda i: f"d{i}",
        created_at=lambda i: at + timedelta(seconds=i % items)))
    return store


def dispatch(store: Any, spec: Any, now: datetime) -> tuple[float, Any]:
    from ceap.delivery.dispatcher import Dispatcher
    from ceap.testing.doubles import CaptureConfig, CapturingChannel

    channel = CapturingChannel(CaptureConfig(outbox=f"bench-{spec.name}"))
    dispatcher = Dispatcher(store, {"capture": channel}, programs={spec.name: spec}, clock=lambda: now)
    started = time.perf_counter()
    stats = dispatcher.run()
    return time.perf_counter() - started, stats


def idle_passes(store: Any, spec: Any, now: datetime, passes: int) -> tuple[float, float]:
    """Seconds per idle planning pass: with the digest hook, and with a no-op instead."""
    import ceap.delivery.dispatcher as module
    from ceap.delivery.dispatcher import Dispatcher
    from ceap.testing.doubles import CaptureConfig, CapturingChannel

    dispatcher = Dispatcher(store, {"capture": CapturingChannel(CaptureConfig(outbox="idle"))},
                            programs={spec.name: spec}, clock=lambda: now)
    hook = module.flush_digests
    timings: dict[str, list[float]] = {"hook": [], "none": []}
    dispatcher.plan()  # warm
    for _ in range(5):  # alternated, the best of five each: the machine is shared
        for label, replacement in (("hook", hook), ("none", lambda *_: None)):
            module.flush_digests = replacement  # type: ignore[assignment]
            try:
                started = time.perf_counter()
                for _ in range(passes):
                    dispatcher.plan()
                timings[label].append((time.perf_counter() - started) / passes)
            finally:
                module.flush_digests = hook
    return min(timings["hook"]), min(timings["none"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--items", type=int, default=3)
    parser.add_argument("--passes", type=int, default=100)
    args = parser.parse_args()
    n, k = args.customers, args.items
    now = datetime.now(UTC)
    print(f"machine: {os.cpu_count()} CPUs; Python {sys.version.split()[0]}; "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"customers: {n:,}; items per digest: {k}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        plain_spec, digest_spec = program("plain", False), program("digest", True)
        store = seeded(folder, "plain", n, 1, "pending", now)
        plain, stats = dispatch(store, plain_spec, now)
        assert stats.sent == n, stats
        store.close()
        store = seeded(folder, "plain_all", n, k, "pending", now)
        every, stats = dispatch(store, program("plain_all", False), now)
        assert stats.sent == n * k, stats
        store.close()
        store = seeded(folder, "digest", n, k, "digest", now)
        digest, stats = dispatch(store, digest_spec, now)
        assert stats.sent == n, stats
        with store.tx() as tx:
            held = tx.execute("SELECT count(*) FROM candidates WHERE status = 'digested'").fetchone()[0]
        assert held == n * k, held
        with_hook, without = idle_passes(store, digest_spec, now, args.passes)
        store.close()
    print(f"{'plain: N messages':<44} {plain:7.2f} s  {n / plain:>8,.0f} msgs/s")
    print(f"{'digest: N messages of K items (collect+flush)':<44} {digest:7.2f} s  {n / digest:>8,.0f} msgs/s"
          f"  {n * k / digest:>8,.0f} items/s")
    print(f"{'plain: N x K messages (each item on its own)':<44} {every:7.2f} s  "
          f"{n * k / every:>8,.0f} msgs/s")
    print(f"time ratios: digest / plain N = {digest / plain:.2f}; "
          f"digest / plain N x K = {digest / every:.2f}")
    print(f"idle planning pass: {with_hook * 1e3:.2f} ms with the digest hook, {without * 1e3:.2f} ms "
          f"without ({with_hook / without:.2f}x)")


if __name__ == "__main__":
    main()
