"""Who ticks the journeys, and never two at once on one store.

``ceap journeys tick``, ``ceap worker`` (each poll loop, at most every
``journeys.tick_every`` by its clock) and ``ceap scheduler`` (each of its ticks, before
dispatching) all tick through a :class:`JourneyTicker`. A tick first takes the store-wide
lease ``journeys:tick`` (the scheduler's lease table, :class:`ScheduleBook`), renews it
before each program and, from a heartbeat thread, every ``lease / 3`` while the tick runs,
and gives it up at the end (also when the tick fails); a ticker that finds the lease held
by another (and not lapsed) does nothing this time. So of several workers, schedulers and a
``ceap journeys tick --follow`` on one store, one ticks at a time, and a ticker killed
mid-tick holds the others back for at most ``lease`` (default 6 s).
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ceap.errors import CeapError
from ceap.journeys.engine import TickStats, tick
from ceap.model import utcnow
from ceap.runtime.schedule_book import ScheduleBook
from ceap.store.base import Store

log = logging.getLogger(__name__)

#: the lease of the store's journey tick (one store-wide: a tick covers every tenant)
LEASE = "journeys:tick"
#: the time a lease given up is made to end at
RELEASED = datetime(2000, 1, 1, tzinfo=UTC)
#: ``journeys.lease``'s default: short, since a running tick renews it every third of it
DEFAULT_LEASE = timedelta(seconds=6)


class JourneyPrograms:
    """The journey programs of a folder, read again when a file changes. A file that does
    not load is logged (once per change) and its last good version kept."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._files: dict[Path, tuple[float, Any]] = {}

    def __call__(self) -> list[Any]:
        from ceap.spec import load_program

        paths = sorted([*self.folder.glob("*.yaml"), *self.folder.glob("*.yml")]) \
            if self.folder.is_dir() else []
        for gone in set(self._files) - set(paths):
            del self._files[gone]
        for path in paths:
            mtime = path.stat().st_mtime
            known = self._files.get(path)
            if known is not None and known[0] == mtime:
                continue
            try:
                self._files[path] = (mtime, load_program(path))
            except CeapError as exc:
                log.error("journeys: program %s not loaded: %s", path, exc)
                self._files[path] = (mtime, known[1] if known is not None else None)
        return [spec for _, spec in self._files.values()
                if spec is not None and spec.journey is not None]


class JourneyTicker:
    """Ticks the journeys of ``programs()`` under the store's lease.

    ``every`` spaces the ticks of :meth:`maybe_tick` (``0``: never); :meth:`run` ticks
    now. Both return the tick's counts, or None when no tick ran (not due, no journey
    program, or another ticker holds the lease: :attr:`holder_seen` names it). While a tick
    runs, a heartbeat thread renews the lease every ``beat_every`` (default ``lease / 3``,
    in real seconds; the lease's times come from ``clock``)."""

    def __init__(self, store: Store, programs: Callable[[], Sequence[Any]], *,
                 every: timedelta = timedelta(seconds=5), lease: timedelta = DEFAULT_LEASE,
                 clock: Callable[[], datetime] = utcnow, holder: str | None = None,
                 beat_every: float | None = None):
        self.store = store
        self.programs = programs
        self.every = every
        self.lease = lease
        self.clock = clock
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(32):08x}"
        self.book = ScheduleBook(store, "")  # leases are store-wide: the tenant is not read
        self.beat_every = lease.total_seconds() / 3 if beat_every is None else beat_every
        self.last: datetime | None = None  # when this ticker last tried
        self.holder_seen: str | None = None
        self.beats = 0  # renewals by the heartbeat, over this ticker's life
        self._lost = threading.Event()  # the lease went to another during this tick

    def due(self, now: datetime) -> bool:
        return self.every > timedelta(0) and (self.last is None or now - self.last >= self.every)

    def maybe_tick(self, specs: Sequence[Any] | None = None) -> TickStats | None:
        """Tick when ``every`` has passed since the last try (by the clock), else None."""
        return self.run(specs) if self.due(self.clock()) else None

    def run(self, specs: Sequence[Any] | None = None) -> TickStats | None:
        """One tick of ``specs`` (default: ``programs()``) if the lease is free, lapsed or ours."""
        now = self.clock()
        self.last = now
        chosen = [s for s in (self.programs() if specs is None else specs) if s.journey is not None]
        if not chosen:  # nothing to tick: the store is not touched
            self.holder_seen = None
            return None
        if self.book.acquire(LEASE, self.holder, now, self.lease) is None:
            current = self.book.lease(LEASE)
            self.holder_seen = current.holder if current is not None else None
            return None
        self.holder_seen = self.holder
        self._lost.clear()
        done = threading.Event()
        beat = threading.Thread(target=self._beat, args=(done,), name="ceap-journeys-lease", daemon=True)
        beat.start()
        try:
            return tick(self.store, chosen, now=now, keep=self._keep)
        finally:
            done.set()
            beat.join()
            self.release()

    def heartbeat(self) -> bool:
        """Renew the lease once (as of the clock); False, and the tick stops before its next
        program, when another ticker has it (this one stalled past ``lease``)."""
        if self._lost.is_set():
            return False
        if self.book.acquire(LEASE, self.holder, self.clock(), self.lease) is None:
            self._lost.set()
            return False
        self.beats += 1
        return True

    def release(self) -> None:
        """Give the lease up, so another ticker may tick at once (a clean stop)."""
        try:
            # lapsed since long ago, not "as of this clock": a tick run with a clock in the
            # future (``ceap scheduler --once --now``) must not hold the others back
            self.book.release(LEASE, self.holder, RELEASED)
        except Exception:  # it lapses by itself
            log.exception("could not give the journey lease up")

    def _beat(self, done: threading.Event) -> None:
        while not done.wait(self.beat_every):
            try:
                if not self.heartbeat():
                    log.warning("journeys: the lease went to another ticker during this tick")
                    return
            except Exception:  # the store unreachable: the lease may lapse; keep trying
                log.exception("could not renew the journey lease")

    def _keep(self) -> bool:
        return not self._lost.is_set() and self.heartbeat()


def ticker_for(store: Store, project: Any, clock: Callable[[], datetime] = utcnow,
               every: timedelta | None = None) -> JourneyTicker:
    """The ticker ``ceap.yaml``'s ``journeys:`` describes, over the project's programs folder."""
    config = project.journeys
    return JourneyTicker(store, JourneyPrograms(project.programs_dir()),
                         every=config.tick_every if every is None else every, lease=config.lease,
                         clock=clock)


__all__ = ["DEFAULT_LEASE", "LEASE", "JourneyPrograms", "JourneyTicker", "ticker_for"]
