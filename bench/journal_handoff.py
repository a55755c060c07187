"""What the attempt journal's hand-off costs the ``webhook`` channel's lanes, without SQL.

The same signed webhooks, on the same 8 lanes, to the sink of ``dispatch_webhook.py``
(another process), alternating, in one run; each way with the lanes on one thread
(``http_loop``, the default) and with a thread per lane (``one_thread: false``, ``-t``):

* ``alone``: ``send(batch)``, no journal (the "channel alone" of ``dispatch_webhook.py``);
* ``instant`` (threads only): a journal whose ``begin`` grants at once (the journal
  protocol's Python);
* ``journal``: the ``AttemptJournal`` over an outbox whose store does nothing: with a
  thread per lane, its committer thread and each lane waiting for its begin's commit;
  on one thread, ``begin_many``/``end_many`` committed in the sending thread.

CPU time of this process per message (all threads). With a thread per lane, the
difference between ``journal`` and ``instant`` is the hand-off itself: one more wait and
wake-up of each lane a message.

Usage (from the repository root)::

    PYTHONPATH=src .venv/bin/python bench/journal_handoff.py --messages 10000 --rounds 2
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import dispatch_webhook as dw  # the sink and the secret


class Instant:
    """A journal that grants every begin at once and forgets every end."""

    def begin(self, message: Any) -> bool:
        return True

    def begin_soon(self, message: Any) -> Callable[[], bool]:
        return lambda: True

    def end(self, message: Any, result: Any) -> None:
        pass


class NullTx:
    dialect = "sqlite"

    def ts(self, value: Any) -> Any:
        return value


class NullStore:
    @contextlib.contextmanager
    def tx(self) -> Iterator[NullTx]:
        yield NullTx()


class NullOutbox:
    """``Outbox``'s journal side, writing nothing: every begin granted."""

    store = NullStore()

    def record_in(self, tx: Any, done: list[Any], now: Any, retry: Any, jitter: Any) -> dict[str, int]:
        return {"sent": len(done)}

    def begin_in(self, tx: Any, ids: list[int], now: Any) -> set[int]:
        return set(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    n = args.messages
    os.environ["BENCH_HOOK_SECRET"] = dw.SECRET

    from ceap.channels.webhook import WebhookChannel
    from ceap.delivery.journal import AttemptJournal
    from ceap.delivery.model import Delivery
    from ceap.delivery.outbox import Retry
    from ceap.delivery.timed_journal import TimedJournal
    from ceap.plugin import PluginContext
    from ceap.testing.doubles import make_messages

    ctx = mp.get_context("spawn")
    port, counts, ready, stop = ctx.Value("i", 0), ctx.Array("l", 3), ctx.Event(), ctx.Event()
    server = ctx.Process(target=dw.sink, args=(port, counts, ready, stop), daemon=True)
    server.start()
    ready.wait(30)
    config = {"type": "webhook", "url": f"http://127.0.0.1:{port.value}/hooks/{{customer_id}}",
              "secret_env": "BENCH_HOOK_SECRET", "allow_private": True,
              "concurrency": args.concurrency, "sent_keys": "sent.db"}
    now = datetime.now(UTC)
    print(f"messages: {n:,}; lanes {args.concurrency}; load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for mode in ("alone", "alone-t", "instant-t", "journal", "journal-t"):
                threaded = mode.endswith("-t")
                channel = WebhookChannel.from_dict({**config, "one_thread": not threaded},
                                                   PluginContext(base_dir=Path(tmp) / f"{mode}{r}"))
                messages = make_messages(n, channel="webhook",
                                         idempotency_key=lambda i, m=mode, r=r: f"default:{m}{r}-{i}:webhook")
                deliveries = [Delivery(i, m.tenant_id, i, m.program, m.customer_id, "webhook", 0,
                                       m.idempotency_key, "queued", 0, now, "marketing")
                              for i, m in enumerate(messages)]
                cpu, wall = time.process_time(), time.perf_counter()
                for i in range(0, n, 1000):
                    batch = messages[i:i + 1000]
                    if mode.startswith("alone"):
                        results = channel.send(batch)
                    elif mode.startswith("instant"):
                        results = channel.send(batch, journal=Instant())
                    else:
                        with AttemptJournal(NullOutbox(), deliveries[i:i + 1000],  # type: ignore[arg-type]
                                            lambda: now, Retry(), lambda: 0.5,
                                            lanes=args.concurrency) as journal:
                            results = channel.send(batch, journal=TimedJournal(journal, "webhook"))
                    assert all(x.status == "sent" for x in results), results[:3]
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                channel.close()
                print(f"round {r + 1} {mode:<9} {n / wall:8,.0f} msgs/s  {cpu / n * 1e6:5.0f} us CPU a "
                      f"message ({cpu / wall:.0%} of a core)")
    stop.set()
    server.join(5)


if __name__ == "__main__":
    main()
