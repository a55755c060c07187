"""The attempt journal's store cost per message: ``Outbox.begin_in`` (queued -> sending) and
``Outbox.record_in`` (sending -> sent) of K messages in one transaction, as the dispatcher's
journal commits them, on a store that already holds settled deliveries. CPU time of this
process per message (SQLite works in-process; on PostgreSQL the server's share is not in it).

Run it on two trees side by side (``PYTHONPATH=<src>``) to compare their indexes::

    nice .venv/bin/python bench/outbox_journal.py --messages 20000 --k 8
    nice .venv/bin/python bench/outbox_journal.py --messages 20000 --k 8 --no-provider-id  # webhooks
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ceap.channels.base import SendResult
from ceap.delivery.outbox import Outbox, Retry
from ceap.store.base import open_store

_INSERT = ("INSERT INTO deliveries (tenant_id, candidate_id, program, customer_id, channel, step, "
           "remaining, idempotency_key, status, attempts, next_attempt_at, worker, provider_id, category, "
           "created_at, updated_at, sent_at) VALUES (?,?,?,?,?,0,'[]',?,?,0,?,?,?,'marketing',?,?,?)")


def fill(store: object, messages: int, settled: int, now: datetime) -> list[int]:
    """``settled`` sent deliveries and ``messages`` queued ones leased to ``bench``."""
    rows = []
    for i in range(settled + messages):
        sent = i < settled
        at = (now - timedelta(seconds=settled + messages - i)).isoformat()
        rows.append(("t", i, "p", f"c{i % 20000}", "webhook", f"k{i}", "sent" if sent else "queued", at,
                     None if sent else "bench", f"pid{i}" if sent else None, at, at, at if sent else None))
    with store.tx() as tx:  # type: ignore[attr-defined]
        tx.executemany(_INSERT, rows)
        return [r[0] for r in tx.execute("SELECT id FROM deliveries WHERE status = 'queued' ORDER BY id")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--settled", type=int, default=100000, help="sent deliveries already there")
    parser.add_argument("--k", type=int, default=8, help="messages a transaction")
    parser.add_argument("--no-provider-id", action="store_true",
                        help="results without a provider id (as the webhook channel's)")
    args = parser.parse_args()
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{Path(tmp) / 'ceap.db'}")
        ids = fill(store, args.messages, args.settled, now)
        outbox = Outbox(store, "bench")
        claimed = {d.id: d for d in outbox.deliveries("t", status="queued", limit=len(ids))}
        cpu = time.process_time()
        wall = time.perf_counter()
        for start in range(0, len(ids), args.k):
            chunk = ids[start:start + args.k]
            with store.tx() as tx:
                granted = outbox.begin_in(tx, chunk, now)
                outcomes = []
                for i in chunk:
                    d = claimed[i]
                    d.attempts = 1
                    pid = None if args.no_provider_id else f"p{i}"
                    outcomes.append((d, SendResult(d.idempotency_key, "sent", provider_id=pid)))
                outbox.record_in(tx, outcomes, now, Retry(), [])
            assert len(granted) == len(chunk)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        with store.tx() as tx:
            sent = tx.execute("SELECT count(*) FROM deliveries WHERE sent_at IS NOT NULL").fetchone()[0]
        assert sent == args.settled + args.messages, sent
        store.close()
    print(f"{args.messages:,} messages, K={args.k}, {args.settled:,} settled"
          f"{', no provider id' if args.no_provider_id else ''}: "
          f"{cpu / args.messages * 1e6:.1f} µs CPU a message ({wall / args.messages * 1e6:.1f} µs wall)")


if __name__ == "__main__":
    main()
