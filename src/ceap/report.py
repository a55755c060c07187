"""Funnels, runs and candidates as sheets (``ceap.cli.output``: a table at a terminal,
tab-separated lines otherwise)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from ceap.cli.output import Column, Sheet
from ceap.model import Candidate, RunRecord
from ceap.pipeline.funnel import Funnel


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and value else ""


def funnel_sheet(program: str, funnel: Funnel, model: str | None = None) -> Sheet:
    """A program's funnel: each stage, the rows left after it and the rows it removed;
    then the most common quarantine reasons (stage ``quarantine: <reason>``)."""
    title = f"{program}" + (f"  [dim](model {model})[/dim]" if model else "")
    sheet = Sheet(title, [Column("program", in_table=False), Column("stage"),
                          Column("rows", "rows left", right=True,
                                 human=lambda v: "" if v is None else f"{v:,}"),
                          Column("removed", right=True, human=_count)])
    for stage, rows, removed in funnel.rows():
        sheet.add(program, stage, rows, removed)
    for reason, count in funnel.quarantine_reasons.most_common(3):
        sheet.add(program, f"quarantine: {reason}", None, count)
    return sheet


def funnel_table(program: str, funnel: Funnel, model: str | None = None) -> Table:
    """The funnel as a rich table (the demo prints it)."""
    return funnel_sheet(program, funnel, model).table()


def runs_sheet(runs: list[RunRecord]) -> Sheet:
    sheet = Sheet("runs", [Column("run_id", "run"), Column("program"), Column("status"),
                           Column("started_at", "started"), Column("selected", right=True),
                           Column("written", right=True),
                           Column("error", human=lambda e: (e or "").splitlines()[0][:80] if e else "")])
    for run in runs:
        sheet.add(run.run_id, run.program, run.status, run.started_at, run.funnel.get("selected"),
                  run.funnel.get("written"), run.error)
    return sheet


def candidates_sheet(candidates: list[Candidate]) -> Sheet:
    minutes = lambda t: f"{t:%Y-%m-%d %H:%M}"  # noqa: E731
    sheet = Sheet(f"{len(candidates)} candidate(s)", [
        Column("id", right=True), Column("program"), Column("customer_id", "customer"),
        Column("subject_id", "subject"), Column("score", right=True, human=lambda s: f"{s:.3f}"),
        Column("status"), Column("status_reason", "why"), Column("channels"),
        Column("not_before", "not before", human=minutes), Column("expires_at", "expires", human=minutes)])
    for c in candidates:
        sheet.add(c.id, c.program, c.customer_id, c.subject_id, c.score, c.status, c.status_reason,
                  c.channels, c.not_before, c.expires_at)
    return sheet
