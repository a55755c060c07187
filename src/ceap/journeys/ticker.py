"""Who ticks the journeys, and never two at once on one store.

``ceap journeys tick``, ``ceap worker`` (each poll loop, at most every
``journeys.tick_every`` by its clock) and ``ceap scheduler`` (each of its ticks, before
dispatching) all tick through a :class:`JourneyTicker`. A tick first takes the store-wide
lease ``journeys:tick`` (the scheduler's lease table, :class:`ScheduleBook`), renews it
before each program and gives it up at the end; a ticker that finds the lease held by
another (and not lapsed) does nothing this time. So of several workers, schedulers and a
``ceap journeys tick --follow`` on one store, one ticks at a time.
"""

from __future__ import annotations

import logging
import os
import random
import socket
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
    program, or another ticker holds the lease: :attr:`holder_seen` names it)."""

    def __init__(self, store: Store, programs: Callable[[], Sequence[Any]], *,
                 every: timedelta = timedelta(seconds=5), lease: timedelta = timedelta(seconds=60),
                 clock: Callable[[], datetime] = utcnow, holder: str | None = None):
        self.store = store
        self.programs = programs
        self.every = every
        self.lease = lease
        self.clock = clock
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(32):08x}"
        self.book = ScheduleBook(store, "")  # leases are store-wide: the tenant is not read
        self.last: datetime | None = None  # when this ticker last tried
        self.holder_seen: str | None = None

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
        try:
            return tick(self.store, chosen, now=now, keep=self._keep)
        finally:
            try:
                # lapsed since long ago, not "as of this clock": a tick run with a clock in
                # the future (``ceap scheduler --once --now``) must not hold the others back
                self.book.release(LEASE, self.holder, RELEASED)
            except Exception:  # it lapses by itself
                log.exception("could not give the journey lease up")

    def _keep(self) -> bool:
        return self.book.acquire(LEASE, self.holder, self.clock(), self.lease) is not None


def ticker_for(store: Store, project: Any, clock: Callable[[], datetime] = utcnow,
               every: timedelta | None = None) -> JourneyTicker:
    """The ticker ``ceap.yaml``'s ``journeys:`` describes, over the project's programs folder."""
    config = project.journeys
    return JourneyTicker(store, JourneyPrograms(project.programs_dir()),
                         every=config.tick_every if every is None else every, lease=config.lease,
                         clock=clock)


__all__ = ["LEASE", "JourneyPrograms", "JourneyTicker", "ticker_for"]
