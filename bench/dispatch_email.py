"""E-mail delivery benchmark: the Dispatcher and the ``smtp`` channel against a
plain smtplib loop, sending the same messages to the same local SMTP server,
in one run.

The server is aiosmtpd in another process; it counts messages and distinct
Message-IDs (so "each message exactly once" is checked too). The runs:

* ``raw smtplib``: one connection, for each message build an EmailMessage
  (Subject, From, To, Date, Message-ID, text body) and ``send_message`` it:
  the program one would write without CEAP. Its inputs (address, title,
  body) are prepared before the clock starts;
* ``dispatcher + null channel``: the dispatcher alone (claim, policies,
  render, outbox writes), for reference;
* ``dispatcher + smtp``: candidates in a SQLite store, claimed, rendered and
  sent through ``SmtpChannel`` (a pool of ``--concurrency`` connections),
  results recorded in the outbox. Goal: three times the raw loop's rate
  (ratio >= 3.0, issue 11; it was 1.0).

The server offers PIPELINING, as production servers do (``--no-server-pipelining``
turns it off); smtplib never uses it, the ``smtp`` channel does when offered.

Usage (from the repository root)::

    .venv/bin/python bench/dispatch_email.py                  # 5,000 messages
    .venv/bin/python bench/dispatch_email.py --messages 20000 --concurrency 8
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import smtplib
import socket
import sys
import tempfile
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

GOAL = 3.0
SENDER = "Acme <news@acme.example>"


def smtp_server(port: int, counts: Any, ready: Any, stop: Any, pipelining: bool = True) -> None:
    """aiosmtpd counting messages and distinct Message-IDs; offering PIPELINING (RFC 2920)
    unless told not to, as production servers do (aiosmtpd does not by itself)."""
    from aiosmtpd.controller import Controller

    ids: set[bytes] = set()

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            content = envelope.content
            at = content.find(b"Message-ID:")
            if at < 0:
                at = content.find(b"Message-Id:")
            ids.add(content[at:content.find(b"\n", at)])
            counts[0] += 1
            counts[1] = len(ids)
            counts[2] = int(time.process_time() * 1e6)  # the server's CPU time, microseconds
            return "250 2.0.0 queued"

    class Pipelining(Handler):
        async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                              responses: list[str]) -> list[str]:
            session.host_name = hostname
            return [*responses[:-1], "250-PIPELINING", responses[-1]]

    controller = Controller(Pipelining() if pipelining else Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    stop.wait()
    controller.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seeded_store(folder: Path, n: int, channel: str) -> Any:
    import pyarrow as pa

    from ceap.delivery.profiles import upsert_profiles
    from ceap.model import RunRecord, utcnow
    from ceap.store import open_store
    from ceap.testing.doubles import make_candidates

    store = open_store(f"sqlite:///{folder / f'{channel}.db'}")
    now = utcnow()
    store.write_run(RunRecord("r1", "default", "win_back", "succeeded", now),
                    make_candidates(n, now=now, program="win_back", channels=[channel],
                                    category="transactional",
                                    payload=lambda i: {"discount": 10, "order": f"o{i}"}))
    upsert_profiles(store, pa.table({"customer_id": [f"c{i}" for i in range(n)],
                                     "email": [f"c{i}@example.com" for i in range(n)]}), "default")
    return store


def raw_smtplib(port: int, inputs: list[tuple[str, str, str]]) -> float:
    """Seconds to build and send every message over one plain connection."""
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        for to, title, body in inputs:
            msg = EmailMessage()
            msg["Subject"] = title
            msg["From"] = SENDER
            msg["To"] = to
            msg["Date"] = formatdate(usegmt=True)
            msg["Message-ID"] = make_msgid(domain="acme.example")
            msg.set_content(body)
            smtp.send_message(msg)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=500, help="dispatcher batch size")
    parser.add_argument("--concurrency", type=int, default=4, help="SMTP connections in the pool")
    parser.add_argument("--no-server-pipelining", action="store_true",
                        help="the server does not offer PIPELINING (the channel then makes four "
                             "round trips a message instead of two)")
    parser.add_argument("--no-pipeline", action="store_true",
                        help="one pass after the other (Dispatcher(pipeline=False)), for comparison")
    args = parser.parse_args()
    n = args.messages

    from ceap.channels.email_smtp import SmtpChannel
    from ceap.delivery.dispatcher import Dispatcher
    from ceap.plugin import PluginContext
    from ceap.testing.doubles import CaptureConfig, CapturingChannel

    ctx = mp.get_context("spawn")
    port, counts, ready, stop = free_port(), ctx.Array("l", 3), ctx.Event(), ctx.Event()
    server = ctx.Process(target=smtp_server, daemon=True,
                         args=(port, counts, ready, stop, not args.no_server_pipelining))
    server.start()
    if not ready.wait(60):
        raise SystemExit("the SMTP server did not start")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print(f"machine: {os.cpu_count()} CPUs, {cpu}; Python {sys.version.split()[0]}")
    print(f"messages: {n:,}; dispatcher batch {args.batch_size}; SMTP pool {args.concurrency}; "
          f"{'serial' if args.no_pipeline else 'pipelined'}; server "
          f"{'without' if args.no_server_pipelining else 'with'} PIPELINING; load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # the same messages the dispatcher will render (PlainRenderer: title from the program, body
        # from the payload)
        inputs = [(f"c{i}@example.com", "Win back", f"discount: 10\norder: o{i}") for i in range(n)]
        cpu0 = counts[2]
        raw_own0 = time.process_time()
        raw = raw_smtplib(port, inputs)
        raw_own = time.process_time() - raw_own0
        raw_count, raw_cpu = counts[0], (counts[2] - cpu0) / 1e6

        store = seeded_store(folder, n, "capture")
        started = time.perf_counter()
        stats = Dispatcher(store, {"capture": CapturingChannel(CaptureConfig(outbox="bench"))},
                           batch_size=args.batch_size).run()
        null = time.perf_counter() - started
        store.close()
        assert stats.sent == n, stats

        store = seeded_store(folder, n, "email")
        channel = SmtpChannel.from_dict(
            {"type": "smtp", "host": "127.0.0.1", "port": port, "security": "none",
             "from_address": SENDER, "concurrency": args.concurrency, "sent_keys": "sent.db"},
            PluginContext(base_dir=folder))
        cpu0, own0 = counts[2], time.process_time()
        started = time.perf_counter()
        stats = Dispatcher(store, {"email": channel}, batch_size=args.batch_size,
                           pipeline=not args.no_pipeline).run()
        ceap = time.perf_counter() - started
        ceap_cpu, own_cpu = (counts[2] - cpu0) / 1e6, time.process_time() - own0
        channel.close()
        store.close()
        assert stats.sent == n, stats
    time.sleep(0.2)
    total, distinct = counts[0], counts[1]
    stop.set()
    server.join(10)
    print(f"{'raw smtplib, one connection':<30} {n / raw:>9,.0f} msgs/s  (server CPU busy "
          f"{raw_cpu / raw:.0%} of the time; sender CPU {raw_own / n * 1e6:.0f} us a message)")
    print(f"{'dispatcher + null channel':<30} {n / null:>9,.0f} msgs/s")
    print(f"{'dispatcher + smtp':<30} {n / ceap:>9,.0f} msgs/s  (server CPU busy {ceap_cpu / ceap:.0%}; "
          f"sender CPU {own_cpu / ceap:.0%} of one core, {own_cpu / n * 1e6:.0f} us a message)")
    ratio = raw / ceap
    print(f"server received {total:,} messages, {distinct:,} distinct Message-IDs "
          f"(raw run {raw_count:,}, dispatcher run {total - raw_count:,}, for {n:,} each)")
    print(f"ratio dispatcher+smtp / raw smtplib: {ratio:.2f} "
          f"(goal >= {GOAL:.1f}: {'met' if ratio >= GOAL else 'MISSED'})")
    print(f"sender CPU a message, raw smtplib / dispatcher+smtp: {raw_own / own_cpu:.2f} "
          "(messages per CPU-second, which load distorts less; not the goal)")


if __name__ == "__main__":
    main()
