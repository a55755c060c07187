"""The peer job of ``bench/quix_peer.py``, written in Quix Streams (run in its own venv).

Reads the benchmark topic (JSON events keyed by customer, event time in ``ts``),
keeps the ``app_crash`` events, counts them per customer (the message key) in a
sliding 24 h window over event time (grace = CEAP's default lateness, 1 h),
emits each updated window (``.current()``: Quix emits only "left" windows, those
ending at a crash's own time), keeps those with ``crashes >= 3`` whose latest
crash is not on app version 4.0.0, and produces them to ``--output``.

Stops once ``--total`` events have reached the window stage and prints one JSON line on
stdout: ``events``, ``seconds`` and ``cpu`` (from the first message to the return of
``Application.run``, so the final checkpoint commit is included; start-up, topic
creation and the first rebalance are not), and ``outputs``.

Not imported by CEAP; needs ``quixstreams`` (``python3 -m venv V && V/bin/pip install
quixstreams``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timedelta
from typing import Any

from quixstreams import Application
from quixstreams.dataframe.windows import Count, Latest


def event_time(value: Any, _headers: Any, _timestamp: int, _kind: Any) -> int:
    """Milliseconds of the event's ``ts`` (ISO 8601, ``Z``): windows run on event time."""
    return int(datetime.fromisoformat(value["ts"]).timestamp() * 1000)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--total", type=int, required=True, help="stop after this many input messages")
    p.add_argument("--state-dir", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--min-count", type=int, default=3)
    p.add_argument("--window-hours", type=float, default=24)
    p.add_argument("--grace-hours", type=float, default=1)
    p.add_argument("--exclude-version", default="4.0.0")
    p.add_argument("--group-by", action="store_true",
                   help="re-key by the body's customer_id (sdf.group_by: a repartition topic)")
    args = p.parse_args(argv)

    seen = {"n": 0, "start": 0.0, "cpu": 0.0}

    def started(_event: Any) -> None:
        if not seen["start"]:
            seen["start"], seen["cpu"] = time.perf_counter(), time.process_time()

    def arrived(_event: Any) -> None:
        """Count the events reaching the window stage (after group_by's repartition topic,
        if any): stop once all have."""
        seen["n"] += 1
        if seen["n"] >= args.total:
            app.stop()

    app = Application(broker_address=args.bootstrap, consumer_group=args.group,
                      auto_offset_reset="earliest", state_dir=args.state_dir, loglevel="WARNING")
    source = app.topic(args.topic, value_deserializer="json", timestamp_extractor=event_time)
    sink = app.topic(args.output, value_serializer="json")
    sdf = app.dataframe(source).update(started)
    if args.group_by:
        sdf = sdf.group_by("customer_id")
    sdf = sdf.update(arrived)
    sdf = sdf.filter(lambda e: e["type"] == "app_crash")
    sdf = sdf.apply(lambda e: {"app_version": e["attributes"].get("app_version")})
    sdf = (sdf.sliding_window(duration_ms=timedelta(hours=args.window_hours),
                              grace_ms=timedelta(hours=args.grace_hours))
           .agg(crashes=Count(), app_version=Latest("app_version"))
           .current())
    sdf = sdf.filter(lambda w: w["crashes"] >= args.min_count and w["app_version"] != args.exclude_version)
    outputs = {"n": 0}

    def count(_w: Any) -> None:
        outputs["n"] += 1

    sdf = sdf.update(count)
    sdf.to_topic(sink)
    app.run()
    seconds, cpu = time.perf_counter() - seen["start"], time.process_time() - seen["cpu"]
    print(json.dumps({"events": seen["n"], "seconds": seconds, "cpu": cpu, "outputs": outputs["n"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
