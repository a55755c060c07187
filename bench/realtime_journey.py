"""Real-time benchmark with a journey program: events -> worker -> journey tickets -> the
worker's journey tick -> the first step's messages, against the same run's plain program.

The plain program is ``bench/realtime.py``'s (customers whose app crashed at least 3 times
in 24 hours get an outreach); the journey program is the same program with a ``journey``:
send an e-mail, wait a day for a click, send an SMS (``exit_on: [purchase]``). Measured in
one process and one run, side by side on the same store kind and the same events:

The journey waits a day for a ``support_contact`` event (10 % of the stream's events) and
then sends a follow-up. Its worker runs in two modes, side by side: **ticks only** (the
worker's own journey moves turned off: what moved journeys before issue 15's real-time
work) and **worker pass** (as ``ceap worker`` runs: a batch's events move their customers'
waiting entries in the pass that stored them, deadlines fire as timers).

* **throughput**: a ``Worker`` drains a pre-loaded Redis stream (``--events``); the plain
  program's worker has no journey ticker, the journey program's ticks its journeys each poll
  loop at most every ``--tick-every`` seconds (as ``ceap worker`` does), plus one last tick
  once the stream is drained. Events/s over the whole drain (ticks included), and entries/s
  over the time spent in ticks (tickets turned into entries and first messages written);
* **latency**: a producer process publishes events stamped with their send time at
  ``--rate`` for ``--seconds``; plain: the time from an event to the commit of the candidate
  it triggered; journey: from an event to the commit of its entry's first message (the end
  of the pass whose tick wrote it), and from a ``support_contact`` event on the stream to
  the commit of the follow-up it led to (the end of the pass that wrote it). The journey
  runs use ``--next-customers`` customers (5,000: more entries meet a reply in 15 s).

Usage (from the repository root; Redis on 127.0.0.1:6379)::

    PYTHONPATH=src .venv/bin/python bench/realtime_journey.py
    PYTHONPATH=src .venv/bin/python bench/realtime_journey.py --events 200000 --stores sqlite,postgres
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import realtime as rt

from ceap.journeys.ticker import JourneyPrograms, JourneyTicker
from ceap.plugin import PluginContext
from ceap.realtime.worker import Worker
from ceap.store import Store, open_store

JOURNEY = {"exit_on": ["purchase"], "steps": [
    {"id": "email", "send": {"channels": ["email"]}},
    {"id": "wait_reply", "wait_for": {"events": {"clicked": "end", "support_contact": "followup"},
                                      "within": "1d", "timeout": "sms"}},
    {"id": "sms", "send": {"channels": ["sms"]}, "next": "end"},
    {"id": "followup", "send": {"channels": ["email"], "template": "followup"}},
]}


#: (journey, the worker's own journey moves): plain, ticks only, worker pass
MODES = ((False, True), (True, False), (True, True))


def programs(root: Path, journey: bool) -> Path:
    folder = root / ("programs_journey" if journey else "programs_plain")
    folder.mkdir(exist_ok=True)
    spec = copy.deepcopy(rt.PROGRAM)
    if journey:
        spec["action"] = {"type": "inform", "channels": ["email"],
                          "payload_columns": spec["action"]["payload_columns"]}
        spec["journey"] = JOURNEY
    (folder / "program.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


class TimedTicker(JourneyTicker):
    """A ticker that notes how long its ticks took and when each ended (the messages a tick
    wrote are committed by then), with the largest candidate id at that moment."""

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.busy = 0.0
        self.ends: list[tuple[int, float]] = []  # (max candidate id, wall time) after each tick
        self.entered = 0
        self.messages = 0

    def run(self, specs: Any = None) -> Any:
        start = time.perf_counter()
        done = super().run(specs)
        self.busy += time.perf_counter() - start
        if done is not None:
            self.entered += done.entered
            self.messages += done.messages
            with self.store.tx() as tx:
                top = tx.execute("SELECT max(id) FROM candidates").fetchone()[0]
            self.ends.append((int(top or 0), time.time()))
        return done


class TimedWorker(Worker):
    """A worker that notes when each pass ended (what it wrote is committed by then), with
    the largest candidate id at that moment."""

    ends: list[tuple[int, float]]

    def step(self) -> int:
        handled = super().step()
        if self.live_journeys is not None or self.journeys is not None:
            with self.store.tx() as tx:
                top = tx.execute("SELECT max(id) FROM candidates").fetchone()[0]
            self.ends.append((int(top or 0), time.time()))
        return handled


def make_worker(root: Path, store: Store, url: str, stream: str, group: str, batch: int, wait: float,
                journey: bool, every: float, live: bool = True) -> tuple[Worker, TimedTicker | None]:
    from ceap.connectors.streams_redis import RedisStreamsConnector

    folder = programs(root, journey)
    context = PluginContext(base_dir=root, store=store)
    source = RedisStreamsConnector.from_dict(
        {"type": "redis_streams", "stream": stream, "group": group, "url": url,
         "consumer": f"bench-{group}"}, context)
    ticker = TimedTicker(store, JourneyPrograms(folder), every=timedelta(seconds=every),
                         holder=f"bench-{group}") if journey else None
    worker = TimedWorker(store, source, folder, context, batch=batch, wait=wait, journeys=ticker)
    worker.ends = []
    if not live:  # journeys move at the ticks only (before the worker moved them itself)
        worker.live_journeys = None
    worker.reload(force=True)
    if worker.stats.programs != [rt.PROGRAM["name"]]:
        raise SystemExit("the benchmark program did not load (see the log above)")
    return worker, ticker


def throughput(root: Path, target: rt.Target, redis_url: str, stream: str, batch: int, journey: bool,
               every: float, live: bool = True) -> dict[str, Any]:
    store = open_store(target.url)
    kind = ("journey" if live else "ticks") if journey else "plain"
    worker, ticker = make_worker(root, store, redis_url, stream, f"tp-{target.name}-{kind}", batch, 0.05,
                                 journey, every, live)
    start = time.perf_counter()
    stats = worker.run(until_idle=True)
    if ticker is not None:
        ticker.run()  # the last tickets of the drain
    elapsed = time.perf_counter() - start
    with store.tx() as tx:
        tickets = int(tx.execute("SELECT count(*) FROM candidates WHERE status IN ('journey', 'entered', "
                                 "'cancelled') AND substr(dedup_key, 1, 8) <> 'journey:'").fetchone()[0])
        stored = int(tx.execute("SELECT count(*) FROM candidates").fetchone()[0])
    worker.close()
    store.close()
    out = {"events": stats.events, "seconds": elapsed, "candidates": stats.candidates, "stored": stored,
           "moved": stats.journey_moved}
    if ticker is not None:
        out |= {"tickets": tickets, "entered": ticker.entered, "messages": ticker.messages,
                "ticks": len(ticker.ends), "tick_seconds": ticker.busy}
    return out


def latency(root: Path, target: rt.Target, redis_url: str, stream: str, batch: int, rate: float,
            seconds: float, customers: int, warmup: float, journey: bool, every: float,
            live: bool = True) -> dict[str, Any]:
    r = redis.Redis.from_url(redis_url)
    r.delete(stream)
    store = open_store(target.url)
    kind = "journey" if journey else "plain"
    group = f"live-{kind}"
    worker, ticker = make_worker(root, store, redis_url, stream, group, batch, 0.05, journey, every, live)
    committed: dict[str, float] = {}  # plain: dedup key -> commit time
    real_write = store.write_run

    def hooked(run: Any, candidates: Any, quarantine: Any = None) -> Any:
        result = real_write(run, candidates, quarantine)
        now = time.time()
        for key in candidates.column("dedup_key").to_pylist():
            committed.setdefault(key, now)
        return result

    store.write_run = hooked  # type: ignore[method-assign]
    worker.step()  # connect
    producer = mp.get_context("spawn").Process(
        target=rt.produce, args=(redis_url, stream, rate, seconds, 7, customers, 0.005), daemon=True)
    stop = threading.Event()

    def watch() -> None:  # stop once the producer is done and every event is acknowledged
        producer.join()
        last = r.xinfo_stream(stream)["last-generated-id"]
        while True:
            g = next((g for g in r.xinfo_groups(stream) if g["name"] in (group.encode(), group)), None)
            if g is not None and g["last-delivered-id"] == last and not g["pending"]:
                break
            time.sleep(0.02)
        stop.set()

    producer.start()
    started = time.time()
    threading.Thread(target=watch, daemon=True).start()
    worker.run(stop)
    if ticker is not None:
        ticker.run()
    events = worker.stats.events
    worker.close()
    with store.tx() as tx:
        if journey:  # each entry's first message, and the event time of its ticket
            rows = tx.execute(
                "SELECT m.id, t.created_at FROM journey_log l JOIN journey_entries e ON e.id = l.entry_id "
                "JOIN candidates m ON m.id = l.candidate_id JOIN candidates t ON t.id = e.candidate_id "
                "WHERE l.seq = 1 AND l.what = 'sent'").fetchall()
            nexts = next_rows(tx)
        else:
            rows = tx.execute("SELECT dedup_key, created_at FROM candidates").fetchall()
    store.close()
    r.delete(stream)
    r.close()
    from ceap.store.schema import from_iso

    samples = []
    for key, created in rows:
        sent = from_iso(created).timestamp()  # type: ignore[union-attr]
        if journey:
            assert ticker is not None
            done = next((at for top, at in ticker.ends if top >= key), None)
        else:
            done = committed.get(key)
        if done is not None and sent >= started + warmup:
            samples.append((done - sent) * 1000)
    samples.sort()
    out = {"events": events, "samples": len(samples), "p50": rt.percentile(samples, 50),
           "p99": rt.percentile(samples, 99), "max": samples[-1] if samples else float("nan")}
    if journey:
        assert isinstance(worker, TimedWorker)
        later = []
        for key, event_at in nexts:
            done = next((at for top, at in worker.ends if top >= key), None)
            if done is not None and event_at >= started + warmup:
                later.append((done - event_at) * 1000)
        later.sort()
        out |= {"next_samples": len(later), "next_p50": rt.percentile(later, 50),
                "next_p99": rt.percentile(later, 99), "next_max": later[-1] if later else float("nan")}
    return out


def next_rows(tx: Any) -> list[tuple[int, float]]:
    """``(candidate id, event time)`` of each follow-up message: the message a
    ``support_contact`` event on the stream led to, and the first such event of the
    customer at or after its e-mail was written (the one the wait took)."""
    from ceap.store.schema import from_iso

    mails = tx.execute("SELECT l.entry_id, e.customer_id, l.at FROM journey_log l JOIN journey_entries e "
                       "ON e.id = l.entry_id WHERE l.step = 'email' AND l.what = 'sent'").fetchall()
    follow = dict(tx.execute("SELECT entry_id, candidate_id FROM journey_log WHERE step = 'followup' "
                             "AND what = 'sent'").fetchall())
    contacts: dict[str, list[float]] = {}
    for customer, ts in tx.execute("SELECT customer_id, ts FROM goal_events WHERE type = 'support_contact'"
                                   ).fetchall():
        contacts.setdefault(customer, []).append(from_iso(ts).timestamp())  # type: ignore[union-attr]
    out = []
    for entry_id, customer, at in mails:
        if entry_id not in follow:
            continue
        since = from_iso(at).timestamp()  # type: ignore[union-attr]
        came = min((t for t in contacts.get(customer, []) if t >= since), default=None)
        if came is not None:
            out.append((int(follow[entry_id]), came))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--customers", type=int, default=50_000)
    p.add_argument("--batch", type=int, default=5000)
    p.add_argument("--stores", default="sqlite", help="comma-separated: sqlite, postgres")
    p.add_argument("--pg", default=os.environ.get("CEAP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"))
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    p.add_argument("--tick-every", type=float, default=1.0, help="the worker's journeys.tick_every, seconds")
    p.add_argument("--next-customers", type=int, default=5000,
                   help="customers of the journey latency runs (fewer: more entries meet a reply)")
    p.add_argument("--rate", type=float, default=2000.0)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--phases", default="throughput,latency", help="comma-separated: throughput, latency")
    args = p.parse_args(argv)
    phases = set(args.phases.split(","))
    r = redis.Redis.from_url(args.redis)
    stream = f"bench-rtj-{os.getpid()}"
    root = Path(tempfile.mkdtemp(prefix="ceap-bench-rtj-"))
    print(f"machine: {rt.machine()}; {args.events:,} events, {args.customers:,} customers, batch "
          f"{args.batch}, tick_every {args.tick_every}s")
    try:
        rt.log("pre-loading the stream")
        if "throughput" in phases:
            rt.preload(r, stream, rt.historic_events(args.events, args.customers, args.seed))
        for kind in args.stores.split(","):
            for journey, live in MODES if "throughput" in phases else ():
                target = rt.sqlite_target(root, f"tp-{kind}-{journey}-{live}") if kind == "sqlite" \
                    else rt.postgres_target(args.pg)
                mode = ("journey, worker pass" if live else "journey, ticks only") if journey else "plain"
                try:
                    rt.log(f"throughput {kind} {mode}")
                    res = throughput(root, target, args.redis, stream, args.batch, journey, args.tick_every,
                                     live)
                finally:
                    if target.cleanup:
                        target.cleanup()
                line = (f"throughput {kind:8s} {mode}: "
                        f"{res['events']:,} events in {res['seconds']:.2f} s = "
                        f"{res['events'] / res['seconds']:,.0f} events/s; {res['candidates']:,} candidates")
                if journey:
                    line += (f"; {res['entered']:,} entries ({res['tickets']:,} tickets), "
                             f"{res['messages']:,} messages in {res['ticks']} ticks taking "
                             f"{res['tick_seconds']:.2f} s = "
                             f"{res['entered'] / max(res['tick_seconds'], 1e-9):,.0f} entries/s; "
                             f"{res['moved']:,} entries moved between ticks")
                print(line, flush=True)
            for journey, live in MODES if "latency" in phases else ():
                target = rt.sqlite_target(root, f"lat-{kind}-{journey}-{live}") if kind == "sqlite" \
                    else rt.postgres_target(args.pg)
                mode = ("worker pass" if live else "ticks only") if journey else "plain"
                try:
                    rt.log(f"latency {kind} {mode}")
                    lat = latency(root, target, args.redis, f"{stream}-live", args.batch, args.rate,
                                  args.seconds, args.next_customers if journey else args.customers,
                                  args.warmup, journey, args.tick_every, live)
                finally:
                    if target.cleanup:
                        target.cleanup()
                what = f"event -> first journey message ({mode})" if journey else "event -> candidate"
                print(f"latency {kind:8s} {what}: {lat['events']:,} events at {args.rate:,.0f}/s, "
                      f"{lat['samples']:,} samples: p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms, "
                      f"max {lat['max']:.0f} ms", flush=True)
                if journey:
                    print(f"latency {kind:8s} stream event -> next journey message ({mode}): "
                          f"{lat['next_samples']:,} samples: p50 {lat['next_p50']:.0f} ms, "
                          f"p99 {lat['next_p99']:.0f} ms, max {lat['next_max']:.0f} ms", flush=True)
    finally:
        r.delete(stream)
        r.close()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
