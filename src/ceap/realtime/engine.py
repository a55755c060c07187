"""One real-time program over micro-batches: state features, the shared stages
(conform, features, filters, score), selection, escalation, cancellation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ceap.experiments.bandit import SharesCache
from ceap.model import RunRecord, utcnow
from ceap.pipeline import conform
from ceap.pipeline.funnel import Funnel
from ceap.pipeline.plan import Plan
from ceap.pipeline.selection import RunInfo, select
from ceap.plugin import PluginContext
from ceap.realtime import incremental
from ceap.realtime.events import EVENT_SCHEMA
from ceap.realtime.features import FRESH, rows_for, rows_sql
from ceap.realtime.smallrows import SmallRows
from ceap.realtime.spec import EventsConfig
from ceap.realtime.timers import Timers
from ceap.registry import Registry
from ceap.runtime.batch import new_run_id
from ceap.runtime.chains import escalate
from ceap.spec.program import ProgramSpec
from ceap.sqlexpr import BATCH, run_rows
from ceap.store.base import Store
from ceap.store.schema import CANDIDATE_SCHEMA

EVENT_TS = "event_ts"
#: the partition of each fresh event (``ceap.realtime.eventtime``)
PARTITION = "__ceap_partition"
#: how a micro-batch's rows were made: the plain way, conformed in the rows' query, or
#: conformed, filtered and scored in it (``ProgramRunner._fused_rows``)
PLAIN, CONFORMED, SCORED = "plain", "conformed", "scored"


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
        for con in (self.con, self.plan.con):  # micro-batches: no thread hand-offs to wait for
            con.execute("SET threads = 1")
            # and tiny queries: DuckDB's optimizer costs more (about 1 ms a query) than it saves
            con.execute("PRAGMA disable_optimizer")
        self.funnel = Funnel(filters={f.id: 0 for f in spec.filters})
        self.run = RunRecord(new_run_id(spec.name, utcnow()), context.tenant, spec.name, "succeeded",
                             utcnow())
        self.lookup = self._load_lookup(context, registry) if self.source.fan_out else None
        self.timers = timers or Timers(store)
        self.absence = {n: f for n, f in spec.state.items() if f.kind == "absence"}
        self._checked = False
        self._rows_schema: pa.Schema | None = None  # of rows_for's rows (not fanned out)
        self._fused: str | None = None
        #: the same query over ``incremental.rows_input``'s rows (state features computed
        #: without a window), when every feature of the program is of a kind it computes
        self._fused_fast: str | None = None
        self._fast = incremental.supported(spec.state)
        #: a small micro-batch's scored rows made without the query (``smallrows``): built
        #: from the query's first result; False when the program is not one it makes
        self._small: SmallRows | bool | None = None
        self.shares = SharesCache()  # a bandit's latest variant shares

    def span(self) -> timedelta:
        spans = [f.span() for f in self.spec.state.values()]
        return max(spans, default=timedelta(0))

    def event_types(self) -> set[str]:
        types = set(self.source.on) | set(self.spec.action.cancel_on)
        for f in self.spec.state.values():
            for ref in (f.count, f.sum, f.distinct, f.last, f.time_since):
                if ref:
                    types.add(ref.split(".")[0])
            if f.sequence:
                types.update((f.sequence.first, f.sequence.then))
            if f.absence:
                types.update((f.absence.after, f.absence.missing))
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
    def process(self, combined: pa.Table, fresh: pa.Table, watermarks: dict[str, datetime]) -> int:
        """Run the program over a micro-batch. ``combined``: history and fresh events
        (``FRESH`` marks the latter; an event late for this program is not fresh);
        ``fresh``: this program's new events alone, with their ``PARTITION``;
        ``watermarks``: each partition's, after this batch. Returns new candidates."""
        timers = self._timer_rows(watermarks, fresh)
        if not fresh.num_rows and not timers.num_rows:
            # nothing new for this program: no row (its rows are fresh events, timer rows, and
            # logged events at or after a fresh event of their customer); no query to run
            self._after_rows(fresh)
            return 0
        if timers.num_rows:
            combined = pa.concat_tables([combined, timers.append_column(
                FRESH, pa.array([True] * timers.num_rows, pa.bool_()))])
        now = utcnow()
        rows, stage = self._fused_rows(combined, now)
        if rows is None:
            rows = rows_for(self.con, combined, self.spec.state, self.source.on,
                            dict(self.source.columns))
            if self.lookup is None and self._rows_schema is None:
                self._rows_schema = rows.schema
            if self.lookup is not None:
                rows = self._fan_out(rows)
        self._arm_timers(fresh)
        written = 0
        if rows.num_rows:
            written = self._select_and_write(rows, stage, now)
        self._after_rows(fresh)
        return written

    def _after_rows(self, fresh: pa.Table) -> None:
        """Once the micro-batch's rows are stored: the timers that made rows are done, and
        the ``cancel_on`` events cancel."""
        for name in self.absence:
            self.timers.done(f"{self.spec.name}#{name}")
        self._cancel(fresh)

    def _fused_rows(self, combined: pa.Table, now: datetime) -> tuple[pa.Table | None, str]:
        """The program's rows made by one query instead of several: conformed
        (``conform.conform_sql``) and, once the plan is checked, filtered and scored too
        (``Plan.scored_sql``, when its stages have SQL forms); with which of those it is.
        Once the rows' schema is known (from the first micro-batch, made the plain way),
        and without fan-out. A failing query gives way to the next plainer one, and at last
        to the plain way (rows ``None``), which reports the failure as it always has."""
        if self._rows_schema is None:
            return None, PLAIN
        columns: dict[str, str] = dict(self.source.columns)
        if self._fused is None:
            conformed = conform.conform_sql(self._rows_schema, self.spec.source)
            rows = rows_sql(self.spec.state, self.source.on, columns)
            self._fused = f"SELECT {conformed} FROM ({rows}) AS {BATCH}"
            if self._fast:
                rows = incremental.rows_sql(self.spec.state, self.source.on, columns)
                self._fused_fast = f"SELECT {conformed} FROM ({rows}) AS {BATCH}"
        table, fused = combined, self._fused
        if self._fused_fast is not None:
            ready = incremental.rows_input(combined, self.spec.state, self.source.on)
            if ready is not None:
                if not ready.num_rows:  # no event of a trigger type, no timer row: no rows
                    return ready, SCORED
                if isinstance(self._small, SmallRows):
                    made = self._small.rows(ready, now)
                    if made is not None:
                        return made, SCORED
                table, fused = ready, self._fused_fast
        scored = self.plan.scored_sql(self._rows_schema, fused) if self._checked else None
        try:
            if scored is not None:
                try:
                    out = run_rows(self.con, scored, table, self.plan.run_params(self._rows_schema, now))
                    if self._small is None and fused is self._fused_fast:
                        self._small = SmallRows.build(self.spec, self.plan, out.schema) or False
                    return out, SCORED
                except duckdb.Error:
                    pass
            return run_rows(self.con, fused, table), CONFORMED
        except duckdb.Error:
            return None, PLAIN

    def _select_and_write(self, rows: pa.Table, stage: str, now: datetime) -> int:
        if not self._checked:
            self.plan.check(self._rows_schema if stage != PLAIN else rows.schema)
            self._checked = True
        if stage == SCORED:
            outcome = self.plan.process_scored(rows, self.funnel)
        elif stage == CONFORMED:
            outcome = self.plan.process_conformed(rows, self.funnel, now)
        else:
            outcome = self.plan.process(rows, self.funnel, now)
        kept = outcome.kept
        if kept.num_rows:
            info = RunInfo(self.run.tenant_id, self.run.run_id, now, self.plan.model_id(),
                           global_control=self.plan.context.global_control,
                           weights=self.shares.get(self.store, self.run.tenant_id, self.spec, now))
            candidates = select(self.plan.con, kept, self.spec, info, self.funnel, self.plan.scorer,
                                event_time=EVENT_TS)
            candidates = escalate(candidates, self.spec.action.escalation)
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
        self.run.funnel = self.funnel.to_dict()  # the store wrote this batch's counts: keep the totals
        self.store.record_run(self.run)
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

    def _arm_timers(self, fresh: pa.Table) -> None:
        for name, feature in self.absence.items():
            if feature.absence is None:
                continue
            after = feature.absence.after
            mask = pc.and_(pc.equal(fresh.column("type"), after), pc.is_valid(fresh.column("customer_id")))
            picked = fresh.filter(mask)
            if not picked.num_rows:
                continue
            within = pa.scalar(feature.within or timedelta(0), pa.duration("us"))
            fire = pc.add(picked.column("ts"), within)  # in Arrow: no datetime arithmetic a timer
            columns = [picked.column(n).combine_chunks() for n in ("tenant_id", "customer_id", "event_id",
                                                                   "ts")] + [
                fire.combine_chunks(), picked.column(PARTITION).combine_chunks()]
            if isinstance(self.timers, Timers):  # the store's timers (one timer set per feature)
                self.timers.add_columns(f"{self.spec.name}#{name}", columns)
            else:
                self.timers.add(f"{self.spec.name}#{name}",
                                list(zip(*(c.to_pylist() for c in columns), strict=True)))

    def _timer_rows(self, watermarks: dict[str, datetime], fresh: pa.Table) -> pa.Table:
        """The rows of the timers whose fire time is strictly before their partition's
        watermark minus the program's lateness: no event that could still change them can
        come without being late."""
        lateness = self.source.lateness
        tables = [self.timers.fire(f"{self.spec.name}#{name}", name, f.absence.missing, partition,
                                   mark - lateness, fresh)
                  for name, f in self.absence.items() if f.absence is not None
                  for partition, mark in sorted(watermarks.items())]
        return pa.concat_tables(tables) if tables else EVENT_SCHEMA.empty_table()

    def cancel(self, events: pa.Table) -> None:
        """``_cancel`` for events late for this program: lateness bounds what an event can
        still compute (rows, timers), not what it cancels; a cancellation needs only the
        action still pending."""
        self._cancel(events)

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
