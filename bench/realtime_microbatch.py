"""CPU time of the real-time worker per micro-batch, without a broker: the fixed cost of
a micro-batch against the cost per event (what bounds the latency of ``bench/realtime.py``).

A ``Worker`` with a SQLite store runs the program of ``bench/realtime.py`` over micro-batches
of ``--sizes`` events handed to it from memory (stamped a few minutes before now, a tenth of
the customers crashing, as in its latency phase), and the thread's CPU time of each
``Worker.step`` is taken; an empty poll is measured too. A line through the medians of the
sizes gives the fixed cost per micro-batch and the cost per event.

With ``--baseline SRC`` the same measurement runs, in turns, in a child process with
``PYTHONPATH=SRC`` (e.g. an export of main: ``git archive main | tar -x -C /tmp/main``),
and both are printed side by side::

    PYTHONPATH=src nice .venv/bin/python bench/realtime_microbatch.py --baseline /tmp/main/src
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import realtime as rt

from ceap.connectors.base import ConnectorConfig
from ceap.plugin import PluginContext
from ceap.realtime.source import Received, StreamConfig, StreamConnector
from ceap.realtime.worker import Worker
from ceap.store import open_store


class Memory(StreamConnector[StreamConfig]):
    """Hands out prepared message bodies, ``size`` per poll."""

    config_model: ClassVar[type[ConnectorConfig]] = StreamConfig

    def __init__(self, bodies: list[bytes]):
        super().__init__(StreamConfig(type="memory"))
        self.bodies, self.size, self.next = bodies, 0, 0

    def poll(self, max_messages: int, timeout: float) -> list[Received]:
        chunk = self.bodies[self.next:self.next + min(max_messages, self.size)]
        self.next += len(chunk)
        return [Received(b, self.next + i) for i, b in enumerate(chunk)]

    def commit(self, tokens: Sequence[Any]) -> None:
        return None


def bodies(n: int, customers: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(minutes=5)
    out = []
    for k in range(n):
        etype = rng.choices(rt.TYPES, rt.TYPE_SHARE)[0]
        who = rng.randrange(customers // 10) if etype == "app_crash" else rng.randrange(customers)
        event = rt.make_event(rng, f"m{k}", f"M{who:07d}", etype, start + timedelta(milliseconds=k))
        out.append(json.dumps(event, separators=(",", ":")).encode())
    return out


def measure(sizes: list[int], steps: int, customers: int) -> dict[str, Any]:
    """Median thread CPU ms of a step per micro-batch size, and of an empty poll."""
    root = Path(tempfile.mkdtemp(prefix="ceap-bench-mb-"))
    (root / "programs").mkdir()
    (root / "programs" / "p.yaml").write_text(yaml.safe_dump(rt.PROGRAM))
    need = sum(s * (steps + 10) for s in sizes)
    source = Memory(bodies(need, customers, 7))
    store = open_store(f"sqlite:///{root / 'mb.db'}")
    worker = Worker(store, source, root / "programs", PluginContext(base_dir=root, store=store),
                    batch=max(sizes), wait=0.0)
    worker.reload(force=True)
    out: dict[str, Any] = {}
    try:
        for size in sizes:
            source.size = size
            for _ in range(10):  # warm: plans, the first micro-batch the plain way
                worker.step()
            cpu = []
            for _ in range(steps):
                start = time.thread_time()
                worker.step()
                cpu.append(1000 * (time.thread_time() - start))
            out[str(size)] = statistics.median(cpu)
        source.size = 0
        empty = []
        for _ in range(steps):
            start = time.thread_time()
            worker.step()
            empty.append(1000 * (time.thread_time() - start))
        out["empty"] = statistics.median(empty)
        out["candidates"] = worker.stats.candidates
    finally:
        worker.close()
        store.close()
    return out


def line(result: dict[str, Any], sizes: list[int]) -> tuple[float, float]:
    """Fixed ms per micro-batch and µs per event: least squares through the medians."""
    xs, ys = sizes, [result[str(s)] for s in sizes]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / max(
        sum((x - mx) ** 2 for x in xs), 1e-9)
    return my - slope * mx, 1000 * slope


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10,100,400", help="events per micro-batch, comma-separated")
    p.add_argument("--steps", type=int, default=60, help="micro-batches measured per size")
    p.add_argument("--customers", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=2, help="turns of this code and the baseline")
    p.add_argument("--baseline", help="src directory of the code to compare with (run in a child)")
    p.add_argument("--json", action="store_true", help="print one measurement as JSON (the child's mode)")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.json:
        print(json.dumps(measure(sizes, args.steps, args.customers)))
        return 0

    def child(src: str) -> dict[str, Any]:
        cmd = [sys.executable, __file__, "--json", "--sizes", args.sizes, "--steps", str(args.steps),
               "--customers", str(args.customers)]
        done = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": src}, check=True,
                              capture_output=True, text=True)
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    here = str(Path(rt.__file__).resolve().parent.parent / "src")
    runs: dict[str, list[dict[str, Any]]] = {"this": [], "baseline": []}
    for _ in range(args.rounds):
        runs["this"].append(child(os.environ.get("PYTHONPATH", here)))
        if args.baseline:
            runs["baseline"].append(child(args.baseline))
    print(f"machine: {rt.machine()}; sizes {sizes}, {args.steps} micro-batches each, "
          f"{args.rounds} round(s)")
    print("| code | round | " + " | ".join(f"{s} events: CPU ms" for s in sizes)
          + " | empty poll ms | fixed ms per micro-batch | µs per event |")
    print("|---|---:|" + "---:|" * (len(sizes) + 3))
    for name, results in runs.items():
        for i, r in enumerate(results):
            fixed, per_event = line(r, sizes)
            print(f"| {name} | {i + 1} | " + " | ".join(f"{r[str(s)]:.2f}" for s in sizes)
                  + f" | {r['empty']:.2f} | {fixed:.2f} | {per_event:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
