"""Loaded by every Python process of ``make test-clock`` (through PYTHONPATH).

``make test-clock`` runs the suite under libfaketime with
``FAKETIME_DONT_FAKE_MONOTONIC=1``: the wall clock moves, the monotonic clock
stays real (threads' timed waits use it; a faked one makes them hang).
libfaketime 0.9.10 (Debian 12) then turns the absolute monotonic deadline of
``clock_nanosleep``, which Python 3.11's ``time.sleep`` uses, into a negative
time, and every ``time.sleep`` fails with EINVAL (libfaketime issue #426,
fixed in 0.9.11). This replaces ``time.sleep`` by a wait on ``select``, which
libfaketime leaves alone, and does nothing outside libfaketime.
"""

from __future__ import annotations

import os
import select
import time


def _sleep(seconds: float) -> None:
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    deadline = time.monotonic() + seconds
    while True:
        select.select([], [], [], max(0.0, deadline - time.monotonic()))
        if time.monotonic() >= deadline:
            return


if os.environ.get("FAKETIME") and "faketime" in os.environ.get("LD_PRELOAD", ""):
    time.sleep = _sleep
