"""Terminal rendering of funnels, runs and candidates (rich tables)."""

from __future__ import annotations

from rich.table import Table

from ceap.model import Candidate, RunRecord
from ceap.pipeline.funnel import Funnel


def funnel_table(program: str, funnel: Funnel, model: str | None = None) -> Table:
    """A program's funnel: each stage, the rows left after it and the rows it removed."""
    title = f"{program}" + (f"  [dim](model {model})[/dim]" if model else "")
    table = Table(title=title, title_justify="left")
    table.add_column("stage")
    table.add_column("rows", justify="right")
    table.add_column("removed", justify="right")
    for stage, rows, removed in funnel.rows():
        table.add_row(stage, f"{rows:,}", f"{removed:,}" if removed else "")
    if funnel.quarantine_reasons:
        for reason, count in funnel.quarantine_reasons.most_common(3):
            table.add_row(f"  [dim]quarantine: {reason}[/dim]", "", f"[dim]{count:,}[/dim]")
    return table


def runs_table(runs: list[RunRecord]) -> Table:
    table = Table(title="runs", title_justify="left")
    for column in ("run", "program", "status", "started", "selected", "written", "error"):
        table.add_column(column)
    for run in runs:
        table.add_row(run.run_id, run.program, run.status, f"{run.started_at:%Y-%m-%d %H:%M:%S}",
                      str(run.funnel.get("selected", "")), str(run.funnel.get("written", "")),
                      (run.error or "")[:80])
    return table


def candidates_table(candidates: list[Candidate]) -> Table:
    table = Table(title=f"{len(candidates)} candidate(s)", title_justify="left")
    for column in ("id", "program", "customer", "subject", "score", "status", "channels",
                   "not before", "expires"):
        table.add_column(column)
    for c in candidates:
        table.add_row(str(c.id), c.program, c.customer_id, c.subject_id or "", f"{c.score:.3f}",
                      c.status, ",".join(c.channels), f"{c.not_before:%Y-%m-%d %H:%M}",
                      f"{c.expires_at:%Y-%m-%d %H:%M}")
    return table
