"""Run the three proofs of concept: prepare (cached), print figures, run the programs."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from types import ModuleType

from rich.console import Console

from ceap.errors import CeapError
from ceap.model import CandidateQuery, RunRecord, utcnow
from ceap.pipeline.funnel import Funnel
from ceap.plugin import PluginContext
from ceap.poc import churn, fraud, recs
from ceap.report import funnel_table
from ceap.runtime import RunResult, run_programs
from ceap.spec import load_program
from ceap.store import open_store

POCS: tuple[ModuleType, ...] = (churn, recs, fraud)
#: the programs, in the order of POCS
PROGRAMS = tuple(m.NAME for m in POCS)  # same as ceap.poc.PROGRAMS


def run_all(project_dir: Path, store_url: str, console: Console | None = None, seed: int = 7, *,
            now: datetime | None = None, fraud_users: int = 20_000) -> list[RunResult]:
    """Prepare the three proofs of concept (cached per seed), print each one's figures beside
    its baseline, and run their programs from ``<project>/programs`` into the store.

    A proof of concept that cannot be prepared (an optional package missing, say) comes back
    as a failed result with the reason, and the others still run."""
    console = console or Console()
    root = Path(project_dir)
    context = PluginContext(base_dir=root)
    results: dict[str, RunResult] = {}
    ready = []
    for module in POCS:
        try:
            with console.status(f"preparing the {module.NAME} proof of concept..."):
                extra = {"users": fraud_users} if module is fraud else {}
                manifest = module.prepare(root, seed, **extra)
                spec = load_program(root / "programs" / f"{module.NAME}.yaml")
        except CeapError as exc:
            results[module.NAME] = _failed(module.NAME, context.tenant, str(exc), now)
            console.print(f"[red]{module.NAME}: {exc}[/red]")
            continue
        console.print()
        module.report(manifest["metrics"], console)
        ready.append(spec)
    store = open_store(store_url, context=context)
    try:
        with console.status("running the proof-of-concept programs..."):
            for result in run_programs(ready, store, context, now=now):
                results[result.program] = result
        for spec in ready:
            result = results[spec.name]
            console.print()
            console.print(funnel_table(spec.name, result.funnel, result.funnel.model or None))
            console.print(_summary(result, store, context.tenant))
    finally:
        store.close()
    return [results[name] for name in PROGRAMS if name in results]


def _failed(program: str, tenant: str, error: str, now: datetime | None) -> RunResult:
    run = RunRecord("", tenant, program, "failed", now or utcnow(), error=error)
    return RunResult(program, run, Funnel(), error=error)


def _summary(result: RunResult, store: object, tenant: str) -> str:
    if not result.ok:
        return f"[red]{result.program} failed:[/red] {result.error or result.run.error}"
    written = result.written.inserted if result.written else result.funnel.written
    line = (f"[bold]{result.program}[/bold]: {written:,} new candidates written, "
            f"{result.funnel.held_out:,} held out as control")
    found = store.candidates(CandidateQuery(tenant_id=tenant, program=result.program,  # type: ignore[attr-defined]
                                            include_expired=True, limit=1000))
    mine = [c for c in found if c.run_id == result.run.run_id]
    if not mine:
        return line
    best = max(mine, key=lambda c: c.score)
    if best.reasons:
        why = ", ".join(f"{k} {v:+.2f}" for k, v in best.reasons.items())
        line += f"\n  top: {best.customer_id} (score {best.score:.3f}) because {why}"
    items = best.payload.get("items") if isinstance(best.payload, dict) else None
    if items:
        names = "; ".join(str(i.get("name") or i.get("item")) for i in items[:3])
        line += f"\n  top: {best.customer_id} gets {len(items)} items: {names}; ..."
    return line
