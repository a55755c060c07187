"""One batch run of a program: read, process in batches, select, write atomically.

Nothing is written until the whole source has been read and selected; then
the candidates, quarantined rows and the run's funnel go to the store in one
transaction. A run that fails is recorded as failed, with no candidates.

Two engines run the same plan: ``local`` (this process; scored rows go to a
DuckDB database that spills to disk, see ``ceap.runtime.spill``) and ``spark``
(``ceap.runtime.spark_engine``: the plan per partition through ``mapInArrow``,
the selection as Spark operations). Both hand the same top rows to the same
candidate-row code, so their candidates are identical.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import pyarrow as pa

from ceap.errors import CeapError, RunError
from ceap.experiments.loop import close_loop
from ceap.model import RunRecord, WriteResult, utcnow
from ceap.observability.metrics import record_run
from ceap.observability.tracing import span
from ceap.pipeline.funnel import Funnel
from ceap.pipeline.plan import Plan
from ceap.pipeline.selection import RunInfo, best_rows, candidate_rows
from ceap.plugin import PluginContext
from ceap.privacy.tombstone import drop_deleted
from ceap.registry import Registry
from ceap.runtime.chains import escalate
from ceap.runtime.cursor import HighWater, decode
from ceap.runtime.spill import LocalSettings, SpilledRows
from ceap.spec.program import ProgramSpec
from ceap.store.base import Store
from ceap.store.schema import QUARANTINE_SCHEMA, empty_candidates

log = logging.getLogger(__name__)

#: called with (rows read so far, rows expected or None)
Progress = Callable[[int, int | None], None]
Engine = Literal["local", "spark"]


@dataclass(frozen=True)
class EngineSettings:
    """Which engine runs batch programs, and its settings (``ceap.yaml``: ``engine``,
    ``batch``, ``spark``)."""

    engine: Engine = "local"
    local: LocalSettings = field(default_factory=LocalSettings)
    #: Spark: ``master`` (``local[2]``, ``spark://...``, ``yarn``) or ``remote``
    #: (``sc://host:15002``, Spark Connect), and extra ``conf``
    spark: dict[str, Any] | None = None


@dataclass
class RunResult:
    program: str
    run: RunRecord
    funnel: Funnel
    written: WriteResult | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.run.status != "failed"


def new_run_id(program: str, now: datetime) -> str:
    return f"{program}-{now.astimezone(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def run_program(spec: ProgramSpec, store: Store, context: PluginContext, *,
                now: datetime | None = None, progress: Progress | None = None,
                registry: Registry | None = None,
                engine: EngineSettings | None = None) -> RunResult:
    """Run ``spec`` once over its whole source. Raises CeapError on failure
    (after recording the failed run)."""
    now = now or utcnow()
    engine = engine or EngineSettings()
    run = RunRecord(new_run_id(spec.name, now), context.tenant, spec.name, "succeeded", now)
    started = time.perf_counter()
    with span("ceap.run", **{"ceap.program": spec.name, "ceap.run_id": run.run_id,
                             "ceap.engine": engine.engine}) as current:
        try:
            result = _run(spec, store, context, run, now, progress, registry, engine)
        except CeapError as exc:
            _observe(run, time.perf_counter() - started, current)
            log.warning("run %s of %s failed: %s", run.run_id, spec.name, type(exc).__name__,
                        extra={"program": spec.name, "run_id": run.run_id, "status": "failed"})
            raise
        _observe(run, time.perf_counter() - started, current)
        log.info("run %s of %s %s", run.run_id, spec.name, run.status,
                 extra={"program": spec.name, "run_id": run.run_id, "status": run.status,
                        "written": result.funnel.written})
        return result


def _observe(run: RunRecord, seconds: float, current: object) -> None:
    record_run(run.program, run.status, seconds, run.funnel, run.started_at.timestamp())
    if current is not None:
        set_attribute = getattr(current, "set_attribute", None)
        if set_attribute is not None:
            set_attribute("ceap.status", run.status)
            for stage in ("read", "selected", "written"):
                set_attribute(f"ceap.rows.{stage}", int(run.funnel.get(stage) or 0))


def _run(spec: ProgramSpec, store: Store, context: PluginContext, run: RunRecord, now: datetime,
         progress: Progress | None, registry: Registry | None, engine: EngineSettings) -> RunResult:
    funnel = Funnel(filters={f.id: 0 for f in spec.filters})
    if getattr(spec.source, "type", None) == "events":
        run.status, run.finished_at = "skipped", utcnow()
        run.funnel = {"skipped": "real-time program: `ceap worker` runs it over its event stream"}
        store.record_run(run)
        return RunResult(spec.name, run, funnel)
    if spec.mode == "paused":
        run.status, run.finished_at = "skipped", utcnow()
        run.funnel = {"skipped": "program is paused"}
        store.record_run(run)
        return RunResult(spec.name, run, funnel)
    plan: Plan | None = None
    try:
        with span("ceap.run.plan"):
            loop = close_loop(spec, store, context, now, registry)  # bandit shares, online learning
            plan = Plan(spec, context, registry)
        cursor = spec.source.cursor
        high = HighWater(cursor, store.last_cursor(context.tenant, spec.name)) if cursor else None
        if high is not None:
            plan.connector.after = decode(high.previous, high.column)
        plan.check()
        funnel.model = plan.model_id()
        info = RunInfo(context.tenant, run.run_id, now, plan.model_id(),
                       global_control=context.global_control, weights=loop.weights)
        with span("ceap.run.process"):  # read, features, filters, scoring, selection
            if engine.engine == "spark":
                from ceap.runtime.spark_engine import select_with_spark

                top, best, bad = select_with_spark(plan, funnel, now, engine.spark or {}, high)
                _check_bad_share(spec, funnel)
            else:
                top, best, bad = _select_local(plan, funnel, now, progress, engine.local, high)
        with span("ceap.run.candidates"):
            candidates = (candidate_rows(plan.con, top, best, spec, info, funnel, plan.scorer)
                          if top is not None else empty_candidates())
            candidates = escalate(candidates, spec.action.escalation)  # later steps of each chain
        quarantine = _quarantine_table(bad, run) if bad else None
        funnel.cursor = high.mark() if high is not None else None
        run.finished_at = utcnow()
        run.funnel = funnel.to_dict()
        candidates, erased = drop_deleted(store, candidates)  # customers deleted (docs/privacy.md)
        if erased:
            log.info("%s: %d candidate row(s) of deleted customers not written", spec.name, erased)
        with span("ceap.run.write"):
            written = store.write_run(run, candidates, quarantine)
        funnel.written, funnel.already_present = written.inserted, written.duplicates
        run.funnel = funnel.to_dict()
        return RunResult(spec.name, run, funnel, written)
    except Exception as exc:
        run.status, run.finished_at = "failed", utcnow()
        run.error = str(exc) if isinstance(exc, CeapError) else f"{type(exc).__name__}: {exc}"
        funnel.cursor = None  # a failed run leaves no mark
        run.funnel = funnel.to_dict()
        try:
            store.record_run(run)
        except Exception:  # the store itself may be what failed
            log.exception("could not record failed run %s", run.run_id)
        if isinstance(exc, CeapError):
            exc.run = run
            raise
        failure = RunError(f"program {spec.name!r}: {run.error}")
        failure.run = run
        raise failure from exc
    finally:
        if plan is not None:
            plan.close()


def _select_local(plan: Plan, funnel: Funnel, now: datetime, progress: Progress | None,
                  settings: LocalSettings, high: HighWater | None
                  ) -> tuple[pa.Table | None, int, list[pa.Table]]:
    """Read and process the source batch by batch in this process; the scored rows go to
    a DuckDB table that spills to disk; the best rows come back. Returns the top rows,
    the count of best rows before top-k, and the quarantined rows."""
    spilled = SpilledRows(settings)
    try:
        bad: list[pa.Table] = []
        expected = plan.connector.estimated_rows()
        for batch in plan.connector.batches():
            if high is not None:
                high.see(batch)
            outcome = plan.process(batch, funnel, now)
            spilled.append(outcome.kept)
            if outcome.quarantine.num_rows:
                bad.append(outcome.quarantine)
            if progress:
                progress(funnel.read, expected)
        _check_bad_share(plan.spec, funnel)
        if not spilled.created:  # the source yielded no batch at all
            return None, 0, bad
        top, best, total = best_rows(spilled.con, spilled.name, plan.spec)
        funnel.duplicate_customer += total - best
        return top, best, bad
    finally:
        spilled.close()


def _check_bad_share(spec: ProgramSpec, funnel: Funnel) -> None:
    limit = spec.source.max_bad_share
    if funnel.read and funnel.quarantined / funnel.read > limit:
        top = ", ".join(f"{reason} ({n})" for reason, n in funnel.quarantine_reasons.most_common(3))
        raise RunError(f"program {spec.name!r}: {funnel.quarantined} of {funnel.read} rows are bad "
                       f"({funnel.quarantined / funnel.read:.1%}, more than source.max_bad_share "
                       f"{limit:.1%}): {top}; nothing was written")


def _quarantine_table(bad: list[pa.Table], run: RunRecord) -> pa.Table:
    rows = pa.concat_tables(bad)
    n = rows.num_rows
    return pa.table({
        "tenant_id": pa.array([run.tenant_id] * n, pa.string()),
        "run_id": pa.array([run.run_id] * n, pa.string()),
        "program": pa.array([run.program] * n, pa.string()),
        "row": rows.column("row").cast(pa.string()),
        "reason": rows.column("reason").cast(pa.string()),
    }, schema=QUARANTINE_SCHEMA)


def run_programs(specs: Iterable[ProgramSpec], store: Store, context: PluginContext, *,
                 now: datetime | None = None,
                 on_start: Callable[[ProgramSpec], Progress | None] | None = None,
                 registry: Registry | None = None,
                 engine: EngineSettings | None = None) -> list[RunResult]:
    """Run several programs; one that fails is reported and the others still run."""
    results = []
    for spec in specs:
        progress = on_start(spec) if on_start else None
        try:
            results.append(run_program(spec, store, context, now=now, progress=progress,
                                       registry=registry, engine=engine))
        except CeapError as exc:
            run = exc.run or RunRecord("", context.tenant, spec.name, "failed", now or utcnow(),
                                       error=str(exc))
            results.append(RunResult(spec.name, run, Funnel.from_dict(run.funnel), error=str(exc)))
    return results
