"""One micro-batch through every live real-time program: deduplicate, drop what is
late for every program, take the history the programs' features need (from the
worker's keyed state in memory, ``ceap.realtime.keyed``, or else from the event log),
run each program over it (with its own lateness), then log the events and add them
to the keyed state."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ceap.realtime.engine import PARTITION, ProgramRunner
from ceap.realtime.events import EVENT_SCHEMA
from ceap.realtime.eventtime import late_mask
from ceap.realtime.features import FRESH
from ceap.realtime.keyed import KeyedState

#: the lateness when no program is live (events are still logged and deduplicated)
DEFAULT_LATENESS = timedelta(hours=1)


@dataclass
class Batch:
    """Valid events of one poll, each with its partition and that partition's watermark
    before the poll (``bound``); ``watermarks``: every partition's, after the poll."""

    events: pa.Table
    partition: pa.Array
    bound: pa.Array
    watermarks: dict[str, datetime] = field(default_factory=dict)


def run_micro_batch(runners: list[ProgramRunner], log: Any, batch: Batch,
                    keyed: KeyedState | None = None) -> dict[str, Any]:
    """Deduplicate, drop the events late for every program, log the rest, and run every
    program over them; each program takes the events not late for its own lateness.
    With ``keyed``, the customers' history comes from it, not from the log."""
    events = batch.events.append_column(PARTITION, batch.partition).append_column("__bound", batch.bound)
    stats = {"events": events.num_rows, "duplicates": 0, "late": 0, "candidates": 0}
    lateness = {id(r): r.source.lateness for r in runners}
    if events.num_rows:
        tenants, ids = events.column("tenant_id"), events.column("event_id")
        seen = log.seen(tenants.to_pylist(), ids.to_pylist())
        keep = _first_unseen(tenants, ids, seen)
        if keyed is not None and seen:
            _repair(keyed, events, seen, batch.watermarks)
        stats["duplicates"] = events.num_rows - int(np.count_nonzero(keep))
        if stats["duplicates"]:
            events = events.filter(pa.array(keep))
        _cancel_late(runners, lateness, events)
        most = max(lateness.values(), default=DEFAULT_LATENESS)
        too_late = late_mask(events.column("ts"), events.column("__bound").combine_chunks(), most)
        stats["late"] = int(pc.sum(too_late).as_py() or 0)
        if stats["late"]:
            events = events.filter(pc.invert(too_late))
    if not runners:
        _log(log, keyed, events, batch.watermarks)
        return stats
    # A program's rows are its fresh trigger events (and timer rows), and the logged trigger
    # events of the same customers that a fresh event precedes in event time (its features may
    # have changed); its features read events of the types it names. So the history of the
    # other types, and of customers with no such event in the batch, changes no row.
    types = set().union(*(r.event_types() for r in runners))
    relevant = _of_types(events, types)
    pairs = _customers(relevant)
    span = max((r.span() for r in runners), default=timedelta(0))
    oldest = pc.min(relevant.column("ts")).as_py() if relevant.num_rows else None
    if keyed is not None:
        history = keyed.history(pairs.column("customer_id").combine_chunks(),
                                pairs.column("tenant_id").combine_chunks())
        if oldest is not None and history.num_rows:  # as from the log: what a window can reach
            history = history.filter(pc.greater_equal(history.column("ts"),
                                                      pa.scalar(oldest - span, pa.timestamp("us"))))
    else:
        customers = {(t, c) for t, c in zip(pairs.column("tenant_id").to_pylist(),
                                            pairs.column("customer_id").to_pylist(), strict=True)}
        history = log.history(customers, oldest - span, types=types) if customers and oldest else None
    fresh = relevant.select(EVENT_SCHEMA.names)
    old = EVENT_SCHEMA.empty_table()
    if history is not None and history.num_rows:
        old = history.filter(pc.invert(pc.is_in(history.column("event_id"),
                                                value_set=events.column("event_id").combine_chunks())))
    combined = pa.concat_tables([old, fresh])
    n_old = old.num_rows
    for runner in runners:
        late = late_mask(relevant.column("ts"), relevant.column("__bound").combine_chunks(),
                         lateness[id(runner)]).to_numpy(zero_copy_only=False)
        marks = np.concatenate([np.zeros(n_old, dtype=bool), ~late])
        mine = relevant.filter(pa.array(~late)) if late.any() else relevant
        stats["candidates"] += runner.process(combined.append_column(FRESH, pa.array(marks)),
                                              mine.drop_columns(["__bound"]), batch.watermarks)
    # logged last: an event is a duplicate only once its effects are stored, so a worker
    # killed mid-batch leaves the whole batch to be processed again, not skipped as seen
    _log(log, keyed, events, batch.watermarks)
    return stats


def _cancel_late(runners: list[ProgramRunner], lateness: dict[int, timedelta],
                 events: pa.Table) -> None:
    """The ``cancel_on`` events late for a program still cancel its pending actions (those
    not late do when it runs: ``ProgramRunner.process``)."""
    for runner in runners:
        kinds = runner.spec.action.cancel_on
        if not kinds:
            continue
        late = late_mask(events.column("ts"), events.column("__bound").combine_chunks(),
                         lateness[id(runner)])
        picked = events.filter(pc.and_(late, pc.is_in(events.column("type"),
                                                       pa.array(list(kinds), pa.string()))))
        if picked.num_rows:
            runner.cancel(picked.select(EVENT_SCHEMA.names))


def _log(log: Any, keyed: KeyedState | None, events: pa.Table, watermarks: dict[str, datetime]) -> None:
    """Append the events to the log (with their partitions), then to the keyed state."""
    log.append(events.select(EVENT_SCHEMA.names), events.column(PARTITION).combine_chunks())
    if keyed is not None:
        keyed.add(events, events.column(PARTITION).combine_chunks(), watermarks)


def _repair(keyed: KeyedState, events: pa.Table, seen: set[tuple[str, str]],
            watermarks: dict[str, datetime]) -> None:
    """Events already logged (by a worker that had the partition before this one, after this
    one restored it) but not in the keyed state: added to it, so it matches the log."""
    keys = pc.binary_join_element_wise(events.column("tenant_id"), events.column("event_id"), "\x00")
    stored = pc.is_in(keys, value_set=pa.array([f"{t}\x00{e}" for t, e in seen], pa.string()))
    again = events.filter(stored)
    if not again.num_rows:
        return
    parts = again.column(PARTITION).combine_chunks()
    missing = np.zeros(again.num_rows, dtype=bool)
    for name in pc.unique(parts).to_pylist():
        mine = pc.equal(parts, name).to_numpy(zero_copy_only=False)
        known = pc.is_in(again.column("event_id"), value_set=keyed.event_ids(name).combine_chunks())
        missing |= mine & ~known.to_numpy(zero_copy_only=False)
    if missing.any():
        picked = again.filter(pa.array(missing))
        ids = pc.unique(picked.column("event_id")).to_pylist()
        if len(ids) < picked.num_rows:  # a duplicate within the batch too: once
            _, first = np.unique(picked.column("event_id").to_numpy(zero_copy_only=False), return_index=True)
            picked = picked.take(pa.array(np.sort(first)))
        keyed.add(picked, picked.column(PARTITION).combine_chunks(), watermarks)


def _first_unseen(tenants: pa.ChunkedArray, ids: pa.ChunkedArray,
                  seen: set[tuple[str, str]]) -> np.ndarray:
    """Per event: not in the log yet, and the first of its ``(tenant, id)`` in the batch."""
    single = pc.count_distinct(tenants).as_py() == 1
    keys = ids if single else pc.binary_join_element_wise(tenants, ids, "\x00")
    codes = pc.dictionary_encode(keys.combine_chunks()).indices.to_numpy(zero_copy_only=False)
    _, first = np.unique(codes, return_index=True)
    keep = np.zeros(len(codes), dtype=bool)
    keep[first] = True
    if seen:
        known = [e if single else f"{t}\x00{e}" for t, e in seen]
        keep &= ~pc.is_in(keys, value_set=pa.array(known, pa.string())).to_numpy(zero_copy_only=False)
    return keep


def _of_types(events: pa.Table, types: set[str]) -> pa.Table:
    """The events of these types."""
    if not events.num_rows:
        return events
    mask = pc.is_in(events.column("type"), value_set=pa.array(sorted(types), pa.string()))
    return events if pc.all(mask).as_py() else events.filter(mask)


def _customers(events: pa.Table) -> pa.Table:
    """The distinct ``(tenant_id, customer_id)`` pairs of the events that name a customer."""
    named = events.select(["tenant_id", "customer_id"])
    if named.num_rows:
        named = named.filter(pc.and_(pc.is_valid(named.column("customer_id")),
                                     pc.not_equal(named.column("customer_id"), "")))
    tenants = named.column("tenant_id")
    if named.num_rows and pc.count_distinct(tenants).as_py() == 1 and not tenants.null_count:
        # one tenant (nearly every poll): its distinct customers, in order of first
        # appearance as Acero's grouping gives them, at a twentieth of its fixed cost
        customers = pc.unique(named.column("customer_id"))
        return pa.table({"tenant_id": pa.array([tenants[0].as_py()] * len(customers), pa.string()),
                         "customer_id": customers})
    return named.group_by(["tenant_id", "customer_id"], use_threads=False).aggregate([])
