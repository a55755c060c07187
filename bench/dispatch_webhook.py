"""Webhook delivery benchmark: messages per second, in one process, through the
Dispatcher and the signed ``webhook`` channel to a local HTTP sink.

The sink is a raw asyncio HTTP/1.1 server with keep-alive in another process
(it counts requests and distinct ``webhook-id`` headers, nothing more), so the
figure is the sender's. Three runs over the same number of messages, each on
a fresh SQLite store:

* ``dispatcher + null channel``: the dispatcher alone (claim, policies,
  render, outbox writes) with a channel that records and returns; its ceiling;
* ``webhook channel alone``: ``WebhookChannel.send`` over prebuilt messages in
  batches of ``--batch-size`` (JSON, HMAC signature, HTTP on ``--concurrency``
  lanes with kept-alive connections, driven from one thread; ``--threads``: a
  thread per lane);
* ``dispatcher + webhook``: the figure the goal is about (>= 5,000 msgs/s).

Usage (from the repository root)::

    .venv/bin/python bench/dispatch_webhook.py                 # 20,000 messages
    .venv/bin/python bench/dispatch_webhook.py --messages 5000 --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GOAL = 5000.0
SECRET = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


# -- the sink (another process) -------------------------------------------------------
def sink(port: Any, counts: Any, ready: Any, stop: Any) -> None:
    """HTTP/1.1 keep-alive server answering 204 to every request."""
    reply = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
    ids: set[bytes] = set()

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport, self.buf = transport, b""

        def data_received(self, data: bytes) -> None:
            self.buf += data
            while True:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.buf[:end].lower()
                at = head.find(b"content-length:")
                length = int(head[at + 15:head.find(b"\r\n", at) if b"\r\n" in head[at:] else None]) \
                    if at >= 0 else 0
                if len(self.buf) < end + 4 + length:
                    return
                at = head.find(b"webhook-id:")
                if at >= 0:
                    stop_at = head.find(b"\r\n", at)
                    ids.add(head[at + 11:stop_at if stop_at > 0 else None].strip())
                self.buf = self.buf[end + 4 + length:]
                counts[0] += 1
                counts[1] = len(ids)
                counts[2] = int(time.process_time() * 1e6)  # the sink's CPU time, microseconds
                self.transport.write(reply)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Protocol, "127.0.0.1", 0, backlog=1024)
        port.value = server.sockets[0].getsockname()[1]
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.1)
        server.close()

    asyncio.run(main())


# -- the runs --------------------------------------------------------------------------
def seeded_store(folder: Path, n: int, channel: str, db: str | None = None) -> Any:
    import pyarrow as pa

    from ceap.delivery.profiles import upsert_profiles
    from ceap.model import RunRecord, utcnow
    from ceap.store import open_store
    from ceap.testing.doubles import make_candidates

    store = open_store(f"sqlite:///{folder / f'{db or channel}.db'}")
    now = utcnow()
    store.write_run(RunRecord("r1", "default", "bench", "succeeded", now),
                    make_candidates(n, now=now, program="bench", channels=[channel],
                                    payload=lambda i: {"order": f"o{i}", "amount": i % 100}))
    upsert_profiles(store, pa.table({"customer_id": [f"c{i}" for i in range(n)]}), "default")
    return store


def run_dispatcher(store: Any, channel: Any, name: str, batch: int,
                   pipeline: bool = True) -> tuple[float, Any]:
    from ceap.delivery.dispatcher import Dispatcher

    started = time.perf_counter()
    stats = Dispatcher(store, {name: channel}, batch_size=batch, pipeline=pipeline).run()
    return time.perf_counter() - started, stats


def busy(seconds: float, own0: float, sink0: int, counts: Any) -> str:
    """CPU use over a run, as a share of one core: the sender (all its threads) and the sink."""
    own, sink = time.process_time() - own0, (counts[2] - sink0) / 1e6
    return f"(sender CPU {own / seconds:.0%} of one core, sink {sink / seconds:.0%}; {own:.2f} s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=1000, help="dispatcher batch size")
    parser.add_argument("--concurrency", type=int, default=8, help="webhook channel lanes")
    parser.add_argument("--threads", action="store_true",
                        help="a thread per lane (one_thread: false) instead of one thread for all")
    args = parser.parse_args()
    n = args.messages
    os.environ["BENCH_HOOK_SECRET"] = SECRET

    from ceap.channels.webhook import WebhookChannel
    from ceap.plugin import PluginContext
    from ceap.testing.doubles import CaptureConfig, CapturingChannel, make_messages

    ctx = mp.get_context("spawn")
    port, counts, ready, stop = ctx.Value("i", 0), ctx.Array("l", 3), ctx.Event(), ctx.Event()
    server = ctx.Process(target=sink, args=(port, counts, ready, stop), daemon=True)
    server.start()
    ready.wait(30)
    url = f"http://127.0.0.1:{port.value}/hooks/{{customer_id}}"
    config = {"type": "webhook", "url": url, "secret_env": "BENCH_HOOK_SECRET", "allow_private": True,
              "concurrency": args.concurrency, "sent_keys": "sent.db"}
    if args.threads:
        config["one_thread"] = False
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print(f"machine: {os.cpu_count()} CPUs, {cpu}; Python {sys.version.split()[0]}")
    print(f"messages: {n:,}; dispatcher batch {args.batch_size}; webhook concurrency {args.concurrency}"
          f"{' (a thread per lane)' if args.threads else ''}")
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # 1. the dispatcher's ceiling
        store = seeded_store(folder, n, "capture")
        own0 = time.process_time()
        seconds, stats = run_dispatcher(store, CapturingChannel(CaptureConfig(outbox="bench")), "capture",
                                        args.batch_size)
        own = time.process_time() - own0
        store.close()
        assert stats.sent == n, stats
        rows.append(("dispatcher + null channel", n / seconds,
                     f"(CPU {own:.2f} s: {own / n * 1e6:,.0f} us a message)"))
        # 2. the channel alone
        channel = WebhookChannel.from_dict(config, PluginContext(base_dir=folder / "alone"))
        messages = make_messages(n, channel="webhook", idempotency_key=lambda i: f"default:alone-{i}:webhook")
        sink0, own0, started = counts[2], time.process_time(), time.perf_counter()
        for i in range(0, n, args.batch_size):
            results = channel.send(messages[i:i + args.batch_size])
            assert all(r.status == "sent" for r in results), results[:3]
        seconds = time.perf_counter() - started
        rows.append(("webhook channel alone", n / seconds, busy(seconds, own0, sink0, counts)))
        channel.close()
        before = counts[0]
        # 3. the dispatcher and the webhook channel: one pass after the other, then pipelined
        for label, pipeline in (("dispatcher + webhook, serial", False), ("dispatcher + webhook", True)):
            before = counts[0]
            store = seeded_store(folder, n, "webhook", f"webhook{int(pipeline)}")
            channel = WebhookChannel.from_dict(config, PluginContext(base_dir=folder / label[-6:]))
            sink0, own0 = counts[2], time.process_time()
            seconds, stats = run_dispatcher(store, channel, "webhook", args.batch_size, pipeline)
            load = busy(seconds, own0, sink0, counts)
            channel.close()
            store.close()
            assert stats.sent == n, stats
            time.sleep(0.2)
            arrived = counts[0] - before
            rows.append((label, n / seconds, load))
    stop.set()
    server.join(5)
    for name, rate, note in rows:
        print(f"{name:<28} {rate:>9,.0f} msgs/s  {note}")
    print(f"sink received {counts[0]:,} requests, {counts[1]:,} distinct webhook-ids "
          f"(dispatcher run: {arrived:,} for {n:,} messages)")
    rate, alone, null = rows[-1][1], rows[1][1], rows[0][1]
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"ratio dispatcher+webhook / channel alone: {rate / alone:.2f} (goal >= 0.8: "
          f"{'met' if rate / alone >= 0.8 else 'MISSED'}); pipelined / serial: {rate / rows[2][1]:.2f}")
    print(f"goal >= {GOAL:,.0f} msgs/s through the dispatcher: {'met' if rate >= GOAL else 'MISSED'} "
          f"({rate:,.0f}); dispatcher + null channel >= 10,000: "
          f"{'met' if null >= 10_000 else 'MISSED'} ({null:,.0f})")


if __name__ == "__main__":
    main()
