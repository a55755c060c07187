"""CPU per request of the channels' HTTP client, against a baseline source tree, side by side.

One thread POSTs a webhook-sized request (a 360-byte JSON body, five headers,
a URL that differs per request) to the raw keep-alive sink of
``dispatch_webhook.py`` (another process, answering 204) and reports the
process CPU time (user + system) per request. With ``--baseline`` (another
checkout's ``src``, e.g. main's) the two trees run alternately in child
processes, ``--rounds`` times each, and the ratio of the medians is printed.

Usage (from the repository root)::

    git -C . archive main src | tar -x -C /tmp/base      # main's code
    .venv/bin/python bench/http_client.py --baseline /tmp/base/src
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def measure(n: int) -> float:
    """CPU microseconds per request of ``guarded_client().request`` (this interpreter's ceap)."""
    sys.path.insert(0, str(HERE))
    from dispatch_webhook import sink

    from ceap.channels.http_common import guarded_client

    ctx = mp.get_context("spawn")
    port, counts, ready, stop = ctx.Value("i", 0), ctx.Array("l", 3), ctx.Event(), ctx.Event()
    server = ctx.Process(target=sink, args=(port, counts, ready, stop), daemon=True)
    server.start()
    ready.wait(30)
    client = guarded_client(allow_private=True, timeout=5)
    body = b'{"type":"ceap.action","data":{"note":"' + b"x" * 320 + b'"}}'
    headers = {"Content-Type": "application/json", "webhook-id": "default:k-1",
               "webhook-timestamp": "1796650200", "webhook-signature": "v1," + "A" * 44}
    base = f"http://127.0.0.1:{port.value}/hooks/c"
    try:
        for i in range(200):  # connect, warm up
            client.request("POST", f"{base}{i}", body, headers)
        started = time.process_time()
        for i in range(n):
            answer = client.request("POST", f"{base}{i}", body, headers)
        cpu = time.process_time() - started
        assert answer.status == 204, answer
    finally:
        client.close()
        stop.set()
        server.join(5)
    return cpu / n * 1e6


def child(src: str, n: int) -> float:
    env = {**os.environ, "PYTHONPATH": src}
    out = subprocess.run([sys.executable, __file__, "--child", "--requests", str(n)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", help="another tree's src directory to compare with")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(f"{measure(args.requests):.2f}")
        return
    here = str(HERE.parent / "src")
    trees = [("baseline", args.baseline), ("this tree", here)] if args.baseline else [("this tree", here)]
    runs: dict[str, list[float]] = {name: [] for name, _ in trees}
    for r in range(args.rounds):
        for name, src in trees:
            us = child(src, args.requests)
            runs[name].append(us)
            print(f"round {r + 1} {name:<9} {us:7.1f} us CPU a request  (load {os.getloadavg()[0]:.1f})")
    medians = {name: statistics.median(values) for name, values in runs.items()}
    for name, value in medians.items():
        print(f"median {name:<9} {value:7.1f} us CPU a request")
    if args.baseline:
        print(f"this tree / baseline: {medians['this tree'] / medians['baseline']:.2f}")


if __name__ == "__main__":
    main()
