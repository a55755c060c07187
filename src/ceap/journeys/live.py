"""Journeys moved by the real-time worker, between ticks.

After a micro-batch's events are stored (event log, ``goal_events``), :meth:`LiveJourneys.on_events`
moves the entries of the customers in the batch that one of its events may move: the
batch's events of a type some journey waits for or exits on name the customers; their
active entries are read in one query per tenant, their events (as a tick reads them,
``seen_events``) in one query per program, and they are walked and written by the tick's
own code (:func:`ceap.journeys.engine.move`): the same conditional move on ``seq``, the same
message dedup keys, one transaction per chunk. So a worker and a ticker (or two workers)
over one entry write its move once; the other finds it moved (a conflict) and writes nothing.

:meth:`LiveJourneys.fire_deadlines` takes the wait deadlines that fell due
(:mod:`ceap.journeys.deadlines`, on the worker's wall clock) and moves their entries the
same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ceap.journeys import deadlines
from ceap.journeys.engine import TickStats, move
from ceap.journeys.state import Entry, entries_by_id, seen_events, waiting_entries
from ceap.model import utcnow
from ceap.store.base import Store

log = logging.getLogger(__name__)

#: the worker looks for due deadlines at most this often (by its clock)
FIRE_EVERY = timedelta(seconds=1)


class LiveJourneys:
    """The journey work of a real-time worker's pass over the journey programs of
    ``programs()`` (the worker's :class:`~ceap.journeys.ticker.JourneyPrograms`)."""

    def __init__(self, store: Store, programs: Callable[[], Sequence[Any]], *,
                 clock: Callable[[], datetime] = utcnow, lease: timedelta = timedelta(seconds=60),
                 fire_every: timedelta = FIRE_EVERY):
        self.store = store
        self.programs = programs
        self.clock = clock
        self.lease = lease
        self.fire_every = fire_every
        self._fired: datetime | None = None

    def specs(self) -> list[Any]:
        return [s for s in self.programs() if s.journey is not None and s.mode == "live"]

    def on_events(self, events: pa.Table, specs: Sequence[Any] | None = None) -> TickStats:
        """Move the active entries of the customers of ``events`` (``EVENT_SCHEMA``, already
        stored) whose journey reads one of the events' types."""
        stats = TickStats()
        chosen = self.specs() if specs is None else specs
        types = sorted(set().union(*(s.journey.event_types() for s in chosen))) if chosen else []
        if not types or not events.num_rows:
            return stats
        kinds = pa.array(types, pa.string())
        picked = events.filter(pc.and_(pc.is_in(events.column("type"), value_set=kinds),
                                       pc.is_valid(events.column("customer_id"))))
        if not picked.num_rows:
            return stats
        found = set(picked.column("type").to_pylist())
        concerned = [s for s in chosen if s.journey.event_types() & found]
        pairs = pa.table({"t": picked.column("tenant_id"), "c": picked.column("customer_id")}).group_by(
            ["t", "c"]).aggregate([])
        customers = list(zip(pairs.column("t").to_pylist(), pairs.column("c").to_pylist(), strict=True))
        now = self.clock()
        with self.store.tx() as tx:
            entries = waiting_entries(tx, [s.name for s in concerned], customers)
            by_program: dict[str, list[Entry]] = {}
            for e in entries:
                by_program.setdefault(e.program, []).append(e)
            seen = {s.name: seen_events(tx, s.name, s.journey.event_types(), [e.id for e in mine])
                    for s in concerned if (mine := by_program.get(s.name))}
        for spec in concerned:
            if spec.name in by_program:
                stats.add(move(self.store, spec, by_program[spec.name], seen[spec.name], now))
        return stats

    def fire_deadlines(self, force: bool = False) -> TickStats:
        """Take the wait deadlines due by the clock (at most every ``fire_every``) and move
        their entries; a deadline moved later under a new ``within`` is re-armed there."""
        stats = TickStats()
        now = self.clock()
        if not force and self._fired is not None and now - self._fired < self.fire_every:
            return stats
        self._fired = now
        specs = {s.name: s for s in self.specs()}
        claimed = deadlines.claim(self.store, sorted(specs), now, self.lease)
        if not claimed:
            return stats
        wanted = {(entry_id, seq) for _, _, _, entry_id, seq in claimed}
        with self.store.tx() as tx:
            entries = [e for e in entries_by_id(tx, [i for i, _ in wanted]) if (e.id, e.seq) in wanted]
            by_program: dict[str, list[Entry]] = {}
            for e in entries:
                by_program.setdefault(e.program, []).append(e)
            seen = {p: seen_events(tx, p, specs[p].journey.event_types(), [e.id for e in mine])
                    for p, mine in by_program.items()}
        for program, mine in by_program.items():
            stats.add(move(self.store, specs[program], mine, seen[program], now))
        live = {(e.id, e.seq) for e in entries}
        later = [(specs[e.program], e) for e in entries if _deadline(specs[e.program], e) > now]
        with self.store.tx() as tx:
            for program in sorted({p for _, p, *_ in claimed}):
                # entries moved on or ended since (the move deleted most such rows) ...
                deadlines.disarm(tx, program, [(t, c, i, s) for t, p, c, i, s in claimed
                                               if p == program and (i, s) not in live])
                # ... and those whose wait grew longer since the timer was armed: re-armed
                deadlines.arm(tx, program, [(e.tenant_id, e.customer_id, e.id, e.seq, e.step_since,
                                             _deadline(spec, e))
                                            for spec, e in later if spec.name == program])
        return stats


def _deadline(spec: Any, entry: Entry) -> datetime:
    """When the wait ``entry`` stands at times out under the journey as it is now (a step
    that is no longer a wait: at once)."""
    step = spec.journey.step(entry.step)
    if step is None or step.wait_for is None:
        return entry.step_since
    return entry.step_since + step.wait_for.within


__all__ = ["FIRE_EVERY", "LiveJourneys"]
