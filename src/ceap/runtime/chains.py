"""Escalation chains of batch programs, and their cancellation by events.

A program with ``action.escalation`` gets, for each selected candidate, one more
candidate per step: the same customer, subject, payload and holdout membership, on
the step's channels, ``after`` later (``not_before`` and ``expires_at`` both move),
with the dedup key of the first suffixed ``:e1``, ``:e2``... So a re-run inside the
dedup window adds no second chain, and each step is delivered (or not) on its own.

A program with ``action.cancel_on`` stops its pending steps when one of those events
arrives for the customer: the worker calls :func:`cancel_pending` for every live
batch program with ``cancel_on`` over each micro-batch of events (real-time programs
do the same in :mod:`ceap.realtime.engine`). Only candidates created before the
event are cancelled, and only while they are still ``pending`` (or ``shadow``):
what was sent stays sent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC

import pyarrow as pa
import pyarrow.compute as pc

from ceap.model import utcnow
from ceap.realtime.spec import EscalationStep
from ceap.store.base import Store


def escalate(candidates: pa.Table, steps: Sequence[EscalationStep]) -> pa.Table:
    """``candidates`` followed by one copy per step, moved ``after`` later, on the
    step's channels, with the dedup key suffixed ``:e<step number>``."""
    if not steps or not candidates.num_rows:
        return candidates
    n = candidates.num_rows
    tables = [candidates]
    for i, step in enumerate(steps, start=1):
        later = candidates.set_column(candidates.schema.get_field_index("channels"), "channels",
                                      pa.array([json.dumps(step.channels)] * n, pa.string()))
        for name in ("not_before", "expires_at"):
            idx = later.schema.get_field_index(name)
            later = later.set_column(idx, name, pc.add(later.column(name),
                                                       pa.scalar(step.after, pa.duration("us"))))
        idx = later.schema.get_field_index("dedup_key")
        later = later.set_column(idx, "dedup_key", pc.binary_join_element_wise(
            later.column("dedup_key"), pa.scalar(f"e{i}"), ":"))
        tables.append(later)
    return pa.concat_tables(tables)


def cancel_pending(store: Store, program: str, kinds: Sequence[str], events: pa.Table) -> int:
    """Cancel ``program``'s pending candidates of every customer with an event of one of
    ``kinds`` in ``events`` (the event schema), created before that event. Returns how many
    events matched (the number of rows changed is the store's business)."""
    if not kinds or not events.num_rows:
        return 0
    picked = events.filter(pc.is_in(events.column("type"), pa.array(list(kinds), pa.string())))
    matched = 0
    if not picked.num_rows:
        return matched
    with store.tx() as tx:
        for tenant, customer, etype, eid, ts in zip(
                *(picked.column(n).to_pylist() for n in ("tenant_id", "customer_id", "type", "event_id",
                                                         "ts")), strict=True):
            if customer is None:
                continue
            matched += 1
            tx.execute("UPDATE candidates SET status = 'cancelled', status_reason = ?, updated_at = ? "
                       "WHERE tenant_id = ? AND program = ? AND customer_id = ? "
                       "AND status IN ('pending', 'shadow') AND created_at <= ?",
                       (f"cancelled by {etype} event {eid}", tx.ts(utcnow()), tenant, program,
                        customer, tx.ts(ts.replace(tzinfo=UTC))))
    return matched
