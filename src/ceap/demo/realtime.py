"""The demo's real-time half: replay a generated event stream through the worker.

:func:`run_realtime_demo` writes the day's stream (``ceap.demo.events``) into
``<project>/data/realtime/``, replays it with the same ``Worker`` a live broker
feeds (``ReplayConnector``) over every real-time program in
``<project>/programs``, and prints each program's funnel: who was filtered out
and why, who scored below the threshold, who was selected.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from ceap.demo.events import EVENTS, REALTIME_DIR, generate_events
from ceap.model import DEFAULT_TENANT
from ceap.pipeline.funnel import Funnel
from ceap.plugin import PluginContext
from ceap.realtime.replay import ReplayConnector
from ceap.realtime.worker import Worker, WorkerStats
from ceap.report import funnel_table
from ceap.store.base import Store

#: the seven real-time use cases, in the order the demo shows them
REALTIME_PROGRAMS = ("predictive_issue_resolution", "content_recommendations", "suspicious_activity",
                     "account_takeover", "restock_alert", "policy_violation_notice", "abandoned_cart")


def run_realtime_demo(project_dir: Path, store: Store, console: Console, seed: int = 7,
                      now: datetime | None = None, *, customers: int = 20_000,
                      batch: int = 500) -> WorkerStats:
    """Generate the event stream for ``now``'s day, replay it over the project's
    real-time programs until it is drained, and print one funnel table per program.

    Returns the worker's statistics (events, duplicates, late, candidates)."""
    project_dir = Path(project_dir)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    path = project_dir / REALTIME_DIR / EVENTS
    made = generate_events(path, seed=seed, now=now, customers=customers)
    console.print(f"generated {made['events']:,} events ({made['duplicates']} client retries, "
                  f"{made['late']} late) and the restock lookups in {path.parent}")
    context = PluginContext(base_dir=project_dir, tenant=DEFAULT_TENANT, store=store)
    source = ReplayConnector.from_dict({"type": "replay", "path": str(REALTIME_DIR / EVENTS)}, context)
    worker = Worker(store, source, project_dir / "programs", context, batch=batch,
                    clock=lambda: now)
    try:
        with console.status("replaying the event stream through the real-time worker..."):
            stats = worker.run(until_idle=True)
        runners = sorted(worker.live(), key=lambda r: (_order(r.spec.name), r.spec.name))
        for runner in runners:
            # the runner's own funnel: it is the run's, with the last micro-batch's writes counted
            funnel = Funnel.from_dict(runner.funnel.to_dict())
            console.print()
            console.print(funnel_table(f"{runner.spec.name} (real-time)", funnel, runner.plan.model_id()))
            console.print(_summary(store, runner.spec.name, runner.run.run_id, funnel))
    finally:
        worker.close()
    console.print()
    console.print(f"[bold]real-time[/bold]: {stats.events:,} events replayed through "
                  f"{len(runners)} programs: {stats.duplicates:,} duplicates and {stats.late:,} late "
                  f"dropped, {stats.rejected:,} rejected; {stats.candidates:,} new candidates")
    return stats


def _order(name: str) -> int:
    return REALTIME_PROGRAMS.index(name) if name in REALTIME_PROGRAMS else len(REALTIME_PROGRAMS)


def _summary(store: Store, program: str, run_id: str, funnel: Funnel) -> str:
    with store.tx() as tx:
        rows = tx.execute("SELECT status, count(*) FROM candidates WHERE tenant_id = ? AND program = ? "
                          "AND run_id = ? GROUP BY status", (DEFAULT_TENANT, program, run_id)).fetchall()
    statuses = Counter({status: int(n) for status, n in rows})
    detail = ", ".join(f"{n:,} {status}" for status, n in sorted(statuses.items())) or "none"
    again = f", {funnel.already_present:,} already present" if funnel.already_present else ""
    return f"[bold]{program}[/bold]: {funnel.written:,} new candidates written{again} ({detail})"
