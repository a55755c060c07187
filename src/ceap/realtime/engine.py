"""One real-time program over micro-batches: state features, the shared stages
(conform, features, filters, score), selection, escalation, cancellation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ceap.model import RunRecord, utcnow
from ceap.pipeline.funnel import Funnel
from ceap.pipeline.plan import Plan
from ceap.pipeline.selection import RunInfo, select
from ceap.plugin import PluginContext
from ceap.realtime.features import FRESH, rows_for
from ceap.realtime.spec import EventsConfig
from ceap.realtime.state import EventLog, Timers
from ceap.registry import Registry
from ceap.runtime.batch import new_run_id
from ceap.spec.program import ProgramSpec
from ceap.sqlexpr import BATCH
from ceap.store.base import Store
from ceap.store.schema import CANDIDATE_SCHEMA

EVENT_TS = "event_ts"


class ProgramRunner:
    """Keeps a program's plan, its lookup (fan-out) and its running funnel."""

    def __init__(self, spec: ProgramSpec, context: PluginContext, store: Store,
                 registry: Registry | None = None, timers: Any = None):
        self.spec = spec
        self.store = store
        self.source: EventsConfig = spec.source  # type: ignore[assignment]
        self.plan = Plan(spec, context, registry)
        self.plan.keep_also = [EVENT_TS, "event_id"]  # each candidate dates from its event
        self.con = duckdb.connect(config={"enable_external_access": False})
        self.con.execute("SET TimeZone = 'UTC'")
        self.funnel = Funnel(filters={f.id: 0 for f in spec.filters})
        self.run = RunRecord(new_run_id(spec.name, utcnow()), context.tenant, spec.name, "succeeded",
                             utcnow())
        self.lookup = self._load_lookup(context, registry) if self.source.fan_out else None
        self.timers = timers or Timers(store)
        self.absence = {n: f for n, f in spec.state.items() if f.kind == "absence"}
        self._checked = False

    def span(self) -> timedelta:
        spans = [f.span() for f in self.spec.state.values()]
        return max(spans, default=timedelta(0))

    def event_types(self) -> set[str]:
        types = set(self.source.on) | set(self.spec.action.cancel_on)
        for f in self.spec.state.values():
            for ref in (f.count, f.sum, f.distinct, f.last, f.time_since):
                if ref:
                    types.add(ref.split(".")[0])
            types.update((f.sequence or {}).values())
            types.update((f.absence or {}).values())
        return types

    def _load_lookup(self, context: PluginContext, registry: Registry | None) -> pa.Table:
        from ceap.registry import default_registry

        fan = self.source.fan_out
        assert fan is not None
        reg = registry or default_registry()
        cls = reg.get("connector", fan.lookup.get("type", ""))
        table = pa.Table.from_batches(list(cls.from_dict(fan.lookup, context).read()))
        return table.rename_columns([f"lookup_{c}" if c != fan.key else c for c in table.column_names])

    # -- one micro-batch -----------------------------------------------------
    def process(self, combined: pa.Table, fresh: pa.Table, watermark: datetime) -> int:
        """Run the program over a micro-batch. ``combined``: history and fresh events
        (``FRESH`` marks the latter); ``fresh``: the new events alone. Returns new candidates."""
        timers = self._timer_rows(watermark)
        if timers.num_rows:
            combined = pa.concat_tables([combined, timers.append_column(
                FRESH, pa.array([True] * timers.num_rows, pa.bool_()))])
        rows = rows_for(self.con, combined, self.spec.state, self.source.on,
                        dict(self.source.columns))
        if self.lookup is not None:
            rows = self._fan_out(rows)
        self._arm_timers(fresh)
        written = 0
        if rows.num_rows:
            written = self._select_and_write(rows)
        self._cancel(fresh)
        return written

    def _select_and_write(self, rows: pa.Table) -> int:
        if not self._checked:
            self.plan.check(rows.schema)
            self._checked = True
        now = utcnow()
        outcome = self.plan.process(rows, self.funnel, now)
        kept = outcome.kept
        if kept.num_rows:
            candidates = select(self.plan.con, kept, self.spec,
                                RunInfo(self.run.tenant_id, self.run.run_id, now, self.plan.model_id()),
                                self.funnel, self.plan.scorer, event_time=EVENT_TS)
            candidates = self._escalate(candidates)
        else:
            candidates = CANDIDATE_SCHEMA.empty_table()
        self.run.funnel = self.funnel.to_dict()
        self.run.finished_at = now
        quarantine = None
        if outcome.quarantine.num_rows:
            from ceap.runtime.batch import _quarantine_table

            quarantine = _quarantine_table([outcome.quarantine], self.run)
        result = self.store.write_run(self.run, candidates, quarantine)
        self.funnel.written += result.inserted
        self.funnel.already_present += result.duplicates
        return result.inserted

    def _fan_out(self, rows: pa.Table) -> pa.Table:
        fan = self.source.fan_out
        assert fan is not None and self.lookup is not None
        self.con.register("lookup", self.lookup)
        self.con.register(BATCH, rows)
        try:
            return self.con.sql(
                f"SELECT b.* EXCLUDE (customer_id), l.* EXCLUDE (\"{fan.key}\"), "
                f"CAST(l.lookup_customer_id AS VARCHAR) AS customer_id FROM {BATCH} b "
                f"JOIN lookup l ON CAST(l.\"{fan.key}\" AS VARCHAR) = b.attributes->>'{fan.attribute}'"
            ).to_arrow_table()
        finally:
            self.con.unregister("lookup")
            self.con.unregister(BATCH)

    def _escalate(self, candidates: pa.Table) -> pa.Table:
        steps = self.spec.action.escalation
        if not steps or not candidates.num_rows:
            return candidates
        tables = [candidates]
        import json

        for i, step in enumerate(steps, start=1):
            n = candidates.num_rows
            later = candidates.set_column(
                candidates.schema.get_field_index("channels"), "channels",
                pa.array([json.dumps(step.channels)] * n, pa.string()))
            for name in ("not_before", "expires_at"):
                idx = later.schema.get_field_index(name)
                later = later.set_column(idx, name, pc.add(later.column(name),
                                                           pa.scalar(step.after, pa.duration("us"))))
            idx = later.schema.get_field_index("dedup_key")
            later = later.set_column(idx, "dedup_key",
                                     pc.binary_join_element_wise(later.column("dedup_key"),
                                                                 pa.scalar(f"e{i}"), ":"))
            tables.append(later)
        return pa.concat_tables(tables)

    def _arm_timers(self, fresh: pa.Table) -> None:
        for feature in self.absence.values():
            after = (feature.absence or {})["after"]
            mask = pc.and_(pc.equal(fresh.column("type"), after), pc.is_valid(fresh.column("customer_id")))
            picked = fresh.filter(mask)
            if not picked.num_rows:
                continue
            within = feature.within or timedelta(0)
            rows = [(t, c, e, ts, ts + within) for t, c, e, ts in zip(
                picked.column("tenant_id").to_pylist(), picked.column("customer_id").to_pylist(),
                picked.column("event_id").to_pylist(), picked.column("ts").to_pylist(), strict=True)]
            self.timers.add(self.spec.name, rows)

    def _timer_rows(self, watermark: datetime) -> pa.Table:
        tables = [self.timers.fire(self.spec.name, name, (f.absence or {})["missing"], watermark)
                  for name, f in self.absence.items()]
        from ceap.realtime.events import EVENT_SCHEMA

        return pa.concat_tables(tables) if tables else EVENT_SCHEMA.empty_table()

    def _cancel(self, fresh: pa.Table) -> None:
        """Events named in ``action.cancel_on`` cancel this customer's pending actions of
        the program that date from before them."""
        kinds = self.spec.action.cancel_on
        if not kinds or not fresh.num_rows:
            return
        picked = fresh.filter(pc.is_in(fresh.column("type"), pa.array(kinds)))
        if not picked.num_rows:
            return
        with self.store.tx() as tx:
            for tenant, customer, etype, eid, ts in zip(
                    *(picked.column(n).to_pylist() for n in
                      ("tenant_id", "customer_id", "type", "event_id", "ts")), strict=True):
                if customer is None:
                    continue
                tx.execute("UPDATE candidates SET status = 'cancelled', status_reason = ?, "
                           "updated_at = ? WHERE tenant_id = ? AND program = ? AND customer_id = ? "
                           "AND status IN ('pending', 'shadow') AND created_at <= ?",
                           (f"cancelled by {etype} event {eid}", tx.ts(utcnow()), tenant,
                            self.spec.name, customer, tx.ts(ts.replace(tzinfo=UTC))))

    def close(self) -> None:
        self.plan.close()
        self.con.close()


def run_micro_batch(runners: list[ProgramRunner], log: EventLog, events: pa.Table,
                    watermark: datetime, too_old: datetime) -> dict[str, Any]:
    """Deduplicate, drop late events (older than ``too_old``), log the rest, and run
    every program over them; timers fire up to ``watermark``."""
    stats = {"events": events.num_rows, "duplicates": 0, "late": 0, "candidates": 0}
    if events.num_rows:
        seen = log.seen(events.column("tenant_id").to_pylist(), events.column("event_id").to_pylist())
        keys = list(zip(events.column("tenant_id").to_pylist(), events.column("event_id").to_pylist(),
                        strict=True))
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        keep = [k not in seen and first[k] == i for i, k in enumerate(keys)]
        stats["duplicates"] = keep.count(False)
        events = events.filter(pa.array(keep))
        too_late = pc.less(events.column("ts"), pa.scalar(too_old, pa.timestamp("us")))
        stats["late"] = int(pc.sum(too_late).as_py() or 0)
        events = events.filter(pc.invert(too_late))
        log.append(events)
    customers = {(t, c) for t, c in zip(events.column("tenant_id").to_pylist(),
                                        events.column("customer_id").to_pylist(), strict=True) if c}
    span = max((r.span() for r in runners), default=timedelta(0))
    oldest = pc.min(events.column("ts")).as_py() if events.num_rows else watermark
    history = log.history(customers, oldest - span) if customers else None
    for runner in runners:
        combined = events.append_column(FRESH, pa.array([True] * events.num_rows, pa.bool_()))
        if history is not None and history.num_rows:
            fresh_ids = set(events.column("event_id").to_pylist())
            old = history.filter(pc.invert(pc.is_in(history.column("event_id"),
                                                    pa.array(list(fresh_ids), pa.string()))))
            combined = pa.concat_tables([old.append_column(FRESH, pa.array([False] * old.num_rows,
                                                                           pa.bool_())),
                                         combined])
        stats["candidates"] += runner.process(combined, events, watermark)
    return stats
