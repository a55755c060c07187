"""Where the real-time latency's tail comes from: each poll of ``bench/realtime.py``'s
latency phase recorded (wall time, thread CPU, events, what ran in it).

Runs ``realtime.latency`` (Redis Streams, SQLite, the ``count`` program by default) at
each ``--rate`` with the worker instrumented: per ``Worker.step``, the wall and thread
CPU time, the time in the broker's poll (its wait included), the events, and the wall
time of what ran in it (the collector, by generation; store transactions and
``write_run``, whose commit may hold a WAL checkpoint; a keyed-state compaction; the
programs' reload scan; the dead letters); between steps, the worker loop's own work (the
lag and status report every 2 s). Each stored candidate's latency (commit time minus its
event's due time) is split into the wait before the poll that read it returned and the
time from then to its commit. Prints the distributions, the slowest steps and the
decomposition of the slowest 1 % of candidates::

    PYTHONPATH=src .venv/bin/python bench/realtime_polls.py --rate 2000,10000 --seconds 10 --catch-up 8
"""

from __future__ import annotations

import argparse
import functools
import gc
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import realtime as rt

import ceap.realtime.keyed as keyed
import ceap.realtime.worker as worker_module
import ceap.store.sqlite as sqlite_module


class Recorder:
    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self.current: dict[str, Any] | None = None
        self.between: Counter[str] = Counter()
        self.commits: dict[str, tuple[float, float, int]] = {}  # dedup key -> (due, commit, step)
        self._gc_start = self._gc_cpu = 0.0

    def tag(self, label: str, seconds: float, cpu: float = 0.0) -> None:
        target = self.current["tags"] if self.current is not None else self.between
        target[label] += seconds
        if self.current is not None:
            self.current["cpu_tags"][label] += cpu

    def gc_callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start, self._gc_cpu = time.perf_counter(), time.thread_time()
        else:
            self.tag(f"gc{info['generation']}", time.perf_counter() - self._gc_start,
                     time.thread_time() - self._gc_cpu)


REC = Recorder()


def timed(owner: Any, name: str, label: str) -> None:
    fn = getattr(owner, name, None)
    if fn is None:
        return

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            REC.tag(label, time.perf_counter() - start, time.thread_time() - cpu)

    setattr(owner, name, wrapper)


def instrument() -> None:
    real_step = worker_module.Worker.step

    def step(self: worker_module.Worker) -> int:
        events, reloaded = self.stats.events, self._reloaded
        REC.current = {"tags": Counter(), "cpu_tags": Counter(), "start": time.perf_counter(),
                       "index": len(REC.steps)}
        cpu = time.thread_time()
        try:
            return real_step(self)
        finally:
            rec = REC.current
            rec["wall"] = time.perf_counter() - rec["start"]
            rec["cpu"] = time.thread_time() - cpu
            rec["events"] = self.stats.events - events
            if self._reloaded != reloaded:
                rec["tags"]["reload"] += 0.0
            REC.steps.append(rec)
            REC.current = None

    worker_module.Worker.step = step  # type: ignore[method-assign]
    real_poll = worker_module.Worker._poll

    def poll(self: worker_module.Worker) -> list[Any]:
        start = time.perf_counter()
        try:
            return real_poll(self)
        finally:
            if REC.current is not None:
                REC.current["polled"] = time.perf_counter()
                REC.current["poll"] = REC.current["polled"] - start

    worker_module.Worker._poll = poll  # type: ignore[method-assign]
    real_write = sqlite_module.SqliteStore.write_run

    def write_run(self: Any, run: Any, candidates: Any, quarantine: Any = None) -> Any:
        start, cpu = time.perf_counter(), time.thread_time()
        result = real_write(self, run, candidates, quarantine)
        done = time.perf_counter()
        REC.tag("write_run", done - start, time.thread_time() - cpu)
        committed = time.time()
        index = REC.current["index"] if REC.current is not None else -1
        for key, created in zip(candidates.column("dedup_key").to_pylist(),
                                candidates.column("created_at").to_pylist(), strict=True):
            REC.commits.setdefault(key, (created.timestamp(), committed, index))
        if REC.current is not None:
            REC.current.setdefault("commit_at", done)
        return result

    sqlite_module.SqliteStore.write_run = write_run  # type: ignore[method-assign]
    real_tx = sqlite_module.SqliteStore.tx

    @functools.wraps(real_tx)
    def tx(self: Any) -> Any:
        start, cpu = time.perf_counter(), time.thread_time()
        with real_tx(self) as t:
            yield t
        REC.tag("store tx", time.perf_counter() - start, time.thread_time() - cpu)

    import contextlib

    sqlite_module.SqliteStore.tx = contextlib.contextmanager(tx)  # type: ignore[method-assign]
    timed(keyed.KeyedState, "_compact", "keyed compaction")
    timed(worker_module.Worker, "_read_lag", "lag + status report")
    timed(worker_module.Worker, "_prune", "prune check")
    timed(worker_module.Worker, "reload", "reload check")
    timed(worker_module, "record_event_outcomes", "goal events")
    timed(worker_module, "run_micro_batch", "run_micro_batch")
    gc.callbacks.append(REC.gc_callback)


def q(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def report(rate: float, started: float, warmup: float) -> None:
    steps = [s for s in REC.steps if s.get("events")]
    wall = [1000 * s["wall"] for s in steps]
    cpu = [1000 * s["cpu"] for s in steps]
    print(f"\n## {rate:,.0f} events/s: {len(REC.steps)} steps, {len(steps)} with events")
    for name, vals in (("wall ms", wall), ("cpu ms", cpu),
                       ("poll ms (broker, wait included)", [1000 * s.get("poll", 0) for s in steps]),
                       ("events", [float(s["events"]) for s in steps])):
        print(f"  {name}: p50 {q(vals, 50):.2f}, p90 {q(vals, 90):.2f}, p99 {q(vals, 99):.2f}, "
              f"max {max(vals, default=float('nan')):.2f}, mean {statistics.fmean(vals) if vals else 0:.2f}")
    off = [w - c for w, c in zip(wall, cpu, strict=True)]
    print(f"  wall - cpu (off CPU: broker wait, I/O, descheduled): p50 {q(off, 50):.2f}, "
          f"p99 {q(off, 99):.2f}, max {max(off, default=0):.2f}")
    tags: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for s in REC.steps:
        for k, v in s["tags"].items():
            tags[k] += v
            counts[k] += 1
    print("  in steps (total wall ms; steps): " + ", ".join(
        f"{k} {1000 * v:.0f} ({counts[k]})" for k, v in tags.most_common()))
    print("  between steps (total wall ms): " + ", ".join(
        f"{k} {1000 * v:.0f}" for k, v in REC.between.most_common()))
    cpu_tags: Counter[str] = Counter()
    for s in REC.steps:
        cpu_tags.update(s["cpu_tags"])
    print("  in steps (total CPU ms): " + ", ".join(f"{k} {1000 * v:.0f}"
                                                     for k, v in cpu_tags.most_common()))
    for key, title in (("wall", "wall"), ("cpu", "CPU")):
        print(f"  slowest steps by {title} (wall / cpu / poll ms, events: CPU ms of what ran, over 1 ms):")
        for s in sorted(steps, key=lambda s: -s[key])[:10]:
            tag = ", ".join(f"{k} {1000 * v:.1f}" for k, v in s["cpu_tags"].most_common()
                            if v >= 0.001) + (", reload" if "reload" in s["tags"] else "")
            print(f"    #{s['index']}: {1000 * s['wall']:.1f} / {1000 * s['cpu']:.1f} / "
                  f"{1000 * s.get('poll', 0):.1f}, {s['events']} events: {tag}")
    # each candidate: the wait until its poll returned, then until its commit
    by_index = {s["index"]: s for s in REC.steps}
    t0 = time.perf_counter() - time.time()  # perf_counter = time.time() + t0 (approximately)
    lat, before, inside = [], [], []
    for due, commit, index in REC.commits.values():
        if due < started + warmup or index not in by_index:
            continue
        s = by_index[index]
        polled = s.get("polled", s["start"]) - t0
        lat.append(1000 * (commit - due))
        before.append(1000 * (polled - due))
        inside.append(1000 * (commit - polled))
    if not lat:
        return
    order = sorted(range(len(lat)), key=lambda i: lat[i])
    tail = order[int(len(order) * 0.99):]
    print(f"  candidates {len(lat)}: latency p50 {q(lat, 50):.1f}, p99 {q(lat, 99):.1f} ms; "
          f"before its poll returned p50 {q(before, 50):.1f}, p99 {q(before, 99):.1f}; "
          f"poll to commit p50 {q(inside, 50):.1f}, p99 {q(inside, 99):.1f}")
    print(f"  the slowest 1 % ({len(tail)}): before its poll returned mean "
          f"{statistics.fmean(before[i] for i in tail):.1f} ms, poll to commit mean "
          f"{statistics.fmean(inside[i] for i in tail):.1f} ms")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", default="2000,10000")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--catch-up", type=int, default=8)
    p.add_argument("--customers", type=int, default=50_000)
    p.add_argument("--program", choices=sorted(rt.PROGRAMS), default="count")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = p.parse_args(argv)
    instrument()
    print(f"machine: {rt.machine()}")
    program = rt.PROGRAMS[args.program]
    for rate in [float(r) for r in args.rate.split(",")]:
        root = Path(tempfile.mkdtemp(prefix="ceap-bench-polls-"))
        (root / "programs").mkdir()
        (root / "programs" / f"{program['name']}.yaml").write_text(yaml.safe_dump(program))
        REC.__init__()  # type: ignore[misc]
        started = time.time()
        try:
            out = rt.latency(root, args.redis, f"ceap-bench-polls-{rate:.0f}", 1000, 0.05, rate,
                             args.seconds, args.customers, 1.0, args.catch_up, program)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print(f"\nlatency {rate:,.0f}/s: p50 {out['p50']:.1f}, p99 {out['p99']:.1f}, "
              f"max {out['max']:.1f} ms; "
              f"{out['mean_batch']:.0f} events a poll; CPU share {out['busy'] / out['seconds']:.0%}; "
              f"{1000 * out['busy'] / max(out['polls'], 1):.1f} ms CPU a poll")
        report(rate, started, 1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
