"""Thread CPU of the real-time worker's phases per micro-batch, without a broker.

A ``Worker`` with a SQLite store runs the program of ``bench/realtime.py`` over
micro-batches of ``size`` events handed to it from memory (``realtime_microbatch.Memory``),
with each phase wrapped in a ``time.thread_time`` counter (nested phases count in their
parents too); prints the median CPU of a step (and its p99, p99.9, max: ``--steps`` in the
thousands include keyed-state compactions) and each phase's mean per step. Run it once
per code to compare (``PYTHONPATH=<src>``)::

    PYTHONPATH=src .venv/bin/python bench/realtime_phases.py --size 30 --steps 300
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import realtime as rt
import realtime_microbatch as mb

import ceap.pipeline.selection as selection
import ceap.realtime.engine as engine
import ceap.realtime.keyed as keyed
import ceap.realtime.microbatch as microbatch
import ceap.realtime.worker as worker_module
from ceap.plugin import PluginContext
from ceap.realtime.events import EVENT_SCHEMA
from ceap.store import open_store

spent: dict[str, float] = {}


def wrap(owner: Any, name: str, label: str) -> None:
    fn = getattr(owner, name, None)
    if fn is None:  # not in this code (an older or newer version)
        return

    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[label] = spent.get(label, 0.0) + time.thread_time() - start

    setattr(owner, name, timed)


def preload(state: Any, n: int) -> None:
    """``n`` events of the kept types, of ``n // 3`` customers no micro-batch names, within the
    last hour, loaded into the state's (first) partition with what it holds: the state a
    worker holding many customers has."""
    rng = np.random.default_rng(11)
    now = datetime.now(UTC).replace(tzinfo=None)
    types = sorted(state.types)
    extra = pa.table({
        "event_id": [f"pre{k}" for k in range(n)], "tenant_id": ["default"] * n,
        "customer_id": [f"P{c:07d}" for c in rng.integers(0, max(1, n // 3), n)],
        "type": [types[k % len(types)] for k in range(n)],
        "ts": pa.array([now - timedelta(seconds=int(s)) for s in rng.integers(0, 3600, n)],
                       pa.timestamp("us")),
        "attributes": ["{}"] * n}, schema=EVENT_SCHEMA)
    [(name, part)] = list(state.partitions.items())[:1]
    held = [t.select(EVENT_SCHEMA.names) for t in part.tables()]
    state.load(name, pa.concat_tables([*held, extra]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=30, help="events per micro-batch")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--program", choices=sorted(rt.PROGRAMS), default="count")
    p.add_argument("--preload", type=int, default=0,
                   help="events of other customers added to the keyed state after the warm-up")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="ceap-bench-phases-"))
    (root / "programs").mkdir()
    (root / "programs" / "p.yaml").write_text(yaml.safe_dump(rt.PROGRAMS[args.program]))
    source = mb.Memory(mb.bodies(args.size * (args.steps + 20), 5000, 7))
    store = open_store(f"sqlite:///{root / 'phases.db'}")
    worker = worker_module.Worker(store, source, root / "programs",
                                  PluginContext(base_dir=root, store=store), batch=1000, wait=0.0)
    for owner, name in [(worker_module, "parse_received"), (worker_module, "drop_deleted"),
                        (worker_module, "run_micro_batch"), (worker_module, "record_event_outcomes"),
                        (worker_module.Worker, "_hold"), (microbatch, "_log"),
                        (engine.ProgramRunner, "process"), (engine.ProgramRunner, "_fused_rows"),
                        (engine.ProgramRunner, "_select_and_write"), (engine, "run_arrow"),
                        (engine, "run_rows"), (engine.incremental, "rows_input"), (engine, "select"),
                        (selection, "run_arrow"), (selection, "run_rows"), (selection, "best_per_bucket"),
                        (type(worker.log), "seen"), (type(worker.log), "append"),
                        (type(worker.claims), "take"), (type(worker.claims), "written"),
                        (type(store), "write_run"), (type(store), "record_run"),
                        (keyed.KeyedState, "history"), (keyed.KeyedState, "add")]:
        wrap(owner, name, f"{getattr(owner, '__name__', owner)}.{name}")
    worker.reload(force=True)
    source.size = args.size
    for _ in range(20):  # warm: plans, the first micro-batch the plain way
        worker.step()
    if args.preload and worker.keyed is not None:
        preload(worker.keyed, args.preload)
    spent.clear()
    cpu = []
    for _ in range(args.steps):
        start = time.thread_time()
        worker.step()
        cpu.append(1000 * (time.thread_time() - start))
    print(f"machine: {rt.machine()}; {args.size} events a micro-batch, {args.steps} micro-batches: "
          f"median {statistics.median(cpu):.2f} ms CPU a step, mean {statistics.mean(cpu):.2f}; "
          f"{worker.stats.candidates} candidates")
    ranked = sorted(cpu)
    held = worker.keyed.rows() if worker.keyed is not None else 0
    print(f"CPU a step: p50 {ranked[len(ranked) // 2]:.2f} ms, "
          f"p99 {ranked[int(0.99 * (len(ranked) - 1))]:.2f}, "
          f"p99.9 {ranked[int(0.999 * (len(ranked) - 1))]:.2f}, max {ranked[-1]:.2f}; "
          f"keyed state at the end: {held} events")
    for label, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"| {label} | {1000 * seconds / args.steps:.3f} ms |")
    worker.close()
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
