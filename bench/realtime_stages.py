"""CPU per event of each stage of the real-time worker, in ``bench/realtime.py``'s
end-to-end phase: ``process_time`` accumulated around the worker's parts (poll, parse,
dedup lookup, keyed state, event-log append, each program's rows, timers, selection and
write...), printed in µs of CPU per event after the run. Without cProfile, whose
per-call overhead inflates the Redis client's pure-Python parser about fivefold.

Usage (the arguments are ``bench/realtime.py``'s)::

    PYTHONPATH=src .venv/bin/python bench/realtime_stages.py --skip-latency --events 100000 \\
        --customers 10000 --batch 1000 --catch-up 8 [--program sequence_absence]

Stages nest (``process`` holds the `` p.*`` lines, ``run_micro_batch`` holds ``append``,
``seen``, ``keyed.*`` and ``process``); the first line is the phase's whole CPU.
"""

from __future__ import annotations

import functools
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import ceap.connectors.streams_redis as R
import ceap.realtime.engine as E
import ceap.realtime.keyed as K
import ceap.realtime.state as S
import ceap.realtime.timers as T
import ceap.realtime.worker as W

ACC: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)


def wrap(owner: Any, name: str, label: str) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            ACC[label] += time.process_time() - started
            CALLS[label] += 1

    setattr(owner, name, timed)


STAGES = [
    (R.RedisStreamsConnector, "poll", "poll"), (R.RedisStreamsConnector, "commit", "commit"),
    (W, "parse_received", "parse"), (W, "drop_deleted", "drop_deleted"), (W.Worker, "_hold", "hold"),
    (W, "record_event_outcomes", "outcomes"), (W, "run_micro_batch", "run_micro_batch"),
    (S.EventLog, "seen", "seen"), (S.EventLog, "append", "append"),
    (K.KeyedState, "history", "keyed.history"), (K.KeyedState, "add", "keyed.add"),
    (E.ProgramRunner, "process", "process"), (E.ProgramRunner, "_timer_rows", " p.timer_rows"),
    (E.ProgramRunner, "_fused_rows", " p.fused_rows"), (E, "rows_for", " p.rows_for (window query)"),
    (E.incremental, "rows_input", "  p.rows_input"), (E.ProgramRunner, "_arm_timers", " p.arm"),
    (E.ProgramRunner, "_select_and_write", " p.select_write"),
    (E.ProgramRunner, "_after_rows", " p.after_rows"),
    (T.Timers, "fire", "  timers.fire"), (T.Timers, "done", "  timers.done"),
    (T.Timers, "add", "  timers.add"),
]


def main() -> int:
    for owner, name, label in STAGES:
        wrap(owner, name, label)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import realtime

    end_to_end = realtime.end_to_end

    def reported(*args: Any, **kwargs: Any) -> Any:
        ACC.clear()
        CALLS.clear()
        out = end_to_end(*args, **kwargs)
        n = max(out["events"], 1)
        print(f"\nevents {n:,}, CPU {out['cpu']:.3f} s = {1e6 * out['cpu'] / n:.1f} µs an event",
              file=sys.stderr)
        for label in sorted(ACC, key=lambda k: -ACC[k]):
            print(f"{label:28s} {1e6 * ACC[label] / n:7.2f} µs an event  ({CALLS[label]} calls)",
                  file=sys.stderr)
        return out

    realtime.end_to_end = reported
    return int(realtime.main(sys.argv[1:]))


if __name__ == "__main__":
    raise SystemExit(main())
