"""Instructions a message of the dispatcher with the null channel, counted by valgrind's
callgrind (deterministic: the same on a busy machine as on a quiet one, where CPU time
on a shared 2-core VM moves by 20-40 % from run to run).

For each source tree given (``--src``, e.g. main's and a branch's), a child process
seeds a fresh SQLite store with ``--messages`` candidates, then runs
``Dispatcher.run`` (serial: ``pipeline=False``, one thread, so the count does not
depend on thread timing) with instrumentation switched on only around the run
(``callgrind_control -i on/off``). It prints the instructions a message of each tree
and their ratio to the first. Needs ``valgrind`` on the PATH; about a minute a tree.

Usage (from the repository root)::

    .venv/bin/python bench/dispatch_instructions.py --src /work/main/src --src src
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import os, subprocess, sys, tempfile
from pathlib import Path
sys.path.insert(0, {bench!r})
from dispatch_webhook import seeded_store
from ceap.delivery.dispatcher import Dispatcher
from ceap.testing.doubles import CaptureConfig, CapturingChannel
n = {n}
with tempfile.TemporaryDirectory() as tmp:
    store = seeded_store(Path(tmp), n, "capture")
    d = Dispatcher(store, {{"capture": CapturingChannel(CaptureConfig(outbox="bench"))}},
                   batch_size={batch}, pipeline=False)
    subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], capture_output=True)
    stats = d.run()
    subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())], capture_output=True)
    assert stats.sent == n, stats
"""


def count(src: str, n: int, batch: int) -> float:
    """Instructions a message of one run of the dispatcher from source tree ``src``."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "child.py"
        script.write_text(CHILD.format(bench=str(Path(__file__).parent), n=n, batch=batch))
        out = subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                              f"--callgrind-out-file={tmp}/cg.out", sys.executable, str(script)],
                             env={**os.environ, "PYTHONPATH": src}, capture_output=True, text=True)
        found = re.search(r"I\s+refs:\s+([\d,]+)", out.stderr)
        if out.returncode or not found:
            raise SystemExit(f"valgrind failed for {src}:\n{out.stderr[-2000:]}")
        return int(found.group(1).replace(",", "")) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", action="append", required=True, help="a source tree (repeat)")
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    first = None
    for src in args.src:
        per = count(src, args.messages, args.batch_size)
        first = first or per
        print(f"{src:<40} {per:>10,.0f} instructions a message  ({per / first:.3f} of the first)")


if __name__ == "__main__":
    main()
