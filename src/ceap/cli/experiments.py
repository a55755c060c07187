"""``ceap report uplift``, ``ceap report bandit`` and ``ceap experiments update``.

The printing lives here, in its own functions; the numbers come from
``ceap.experiments`` (see docs/experiments.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from ceap.cli.common import app, err, load_specs, out, program_paths, state
from ceap.cli.report import report_app
from ceap.errors import CeapError, SpecError
from ceap.model import utcnow

if TYPE_CHECKING:
    from ceap.experiments.bandit import ArmState
    from ceap.experiments.stats import Comparison
    from ceap.experiments.uplift import UpliftReport
    from ceap.spec import ProgramSpec, ProjectConfig

#: ``ceap.experiments.uplift.BY_CHOICES``, repeated here for the help text without
#: importing the statistics at start-up (tests/test_cli_imports.py checks they agree)
UPLIFT_BY = ("variant", "score_decile", "channel")

experiments_app = typer.Typer(help="Experiments: bandit updates and online learning from outcomes.",
                              no_args_is_help=True)
app.add_typer(experiments_app, name="experiments")


def _iso(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _pct(value: float | None, sign: bool = False) -> str:
    return "-" if value is None else (f"{value:+.2%}" if sign else f"{value:.2%}")


def _ci(value: tuple[float, float] | None, sign: bool = True) -> str:
    return "-" if value is None else f"[{_pct(value[0], sign)}, {_pct(value[1], sign)}]"


def _money(value: float | None, sign: bool = False) -> str:
    return "-" if value is None else (f"{value:+,.2f}" if sign else f"{value:,.2f}")


def _p(value: float | None) -> str:
    return "-" if value is None else ("<0.0001" if value < 1e-4 else f"{value:.4f}")


def _spec(project: ProjectConfig, name: str) -> ProgramSpec | None:
    """The program's spec when its file is there (a removed program is still reportable)."""
    from ceap.spec import load_program

    [path] = program_paths([name], project)
    if not Path(path).exists():
        return None
    try:
        return load_program(path)
    except SpecError as exc:
        for line in exc.lines():
            err.print(line, markup=False, highlight=False)
        raise typer.Exit(2) from None


def _since(value: str | None, now: datetime) -> datetime | None:
    from ceap.durations import parse_duration

    try:
        return now - parse_duration(value) if value else None
    except ValueError as exc:
        err.print(f"--since: {exc}", highlight=False)
        raise typer.Exit(2) from None


def arms_table(report: UpliftReport) -> Table:
    table = Table(title=f"{report.program}: arms", title_justify="left")
    table.add_column("arm", no_wrap=True, overflow="fold")  # fold, never cut (docs/cli.md#output)
    for column in ("customers", "converted", "rate", "95% interval", "value", "value/customer",
                   "unsubscribed", "complained"):
        table.add_column(column, justify="right", overflow="fold")
    for name, a in report.arms.items():
        table.add_row(name, f"{a.customers:,}", f"{a.converted:,}", _pct(a.rate),
                      _ci(a.rate_ci, sign=False), _money(a.value), _money(a.value_per_customer),
                      f"{a.unsubscribed:,}", f"{a.complained:,}")
    return table


def _with_ci(value: str, ci: str) -> str:
    return value if ci == "-" else f"{value} {ci}"


def comparisons_table(title: str, rows: list[Comparison]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("", no_wrap=True, overflow="fold")
    for column in ("treated", "control", "uplift [95%]", "p", "relative [95%]",
                   "value/customer [95%]", "detectable", "sample"):
        table.add_column(column, justify="right", overflow="fold")
    for c in rows:
        value = "-" if c.value_ci is None else \
            f"[{_money(c.value_ci[0], True)}, {_money(c.value_ci[1], True)}]"
        table.add_row(c.label, f"{_pct(c.treated.rate)} of {c.treated.customers:,}",
                      f"{_pct(c.control.rate)} of {c.control.customers:,}",
                      _with_ci(_pct(c.absolute_uplift, True), _ci(c.absolute_ci)), _p(c.p_value),
                      _with_ci(_pct(c.relative_uplift, True), _ci(c.relative_ci)),
                      _with_ci(_money(c.value_difference, True), value), _pct(c.mde, True),
                      "too small" if c.small_sample else "ok")
    return table


def print_uplift(report: UpliftReport) -> None:
    window = f"since {report.since:%Y-%m-%d %H:%M} UTC" if report.since else "all candidates"
    out.print(f"{report.program} ({window}; {report.candidates:,} candidates; unit: customer)",
              highlight=False)
    out.print(arms_table(report))
    treated = report.arms.get("treatment")
    if treated is not None and treated.customers:
        n = treated.customers
        out.print(f"engagement of treated customers: opened {treated.opened:,} of {n:,} "
                  f"({_pct(treated.opened / n)}), clicked {treated.clicked:,} ({_pct(treated.clicked / n)})",
                  highlight=False)
    if report.comparisons:
        out.print(comparisons_table(f"{report.program}: uplift", report.comparisons))
    if report.by and report.groups:
        out.print(comparisons_table(
            f"{report.program}: uplift by {report.by.replace('_', ' ')} "
            f"(control: {report.control_for_groups})", report.groups))
    for g in report.guardrails:
        status = "[red]above the limit[/red]" if g.exceeded else "ok"
        out.print(f"guardrail {g.name}: {_pct(g.treated_rate)} of treated customers "
                  f"({g.treated:,} of {g.customers:,}), limit {_pct(g.limit)}: {status}")
    for c in [*report.comparisons, *report.groups]:
        for note in c.notes:
            out.print(f"[dim]{c.label}: {note}[/dim]", highlight=False)
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    out.print("[dim]methods: rates Wilson; uplift Newcombe interval, score test (p); relative "
              "uplift score interval for the ratio; value Welch t (docs/experiments.md)[/dim]")


@report_app.command("uplift")
def uplift(
    program: Annotated[str, typer.Argument(help="the program to report on")],
    by: Annotated[str | None, typer.Option(
        help=f"break the uplift down by {', '.join(UPLIFT_BY)}")] = None,
    since: Annotated[str | None, typer.Option(
        help="only candidates created in the last 30d, 12w, ... (default: all)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    plot: Annotated[Path | None, typer.Option(
        help="write the figure to this file (.png, .svg, or .json for the Vega-Lite spec)")] = None,
) -> None:
    """Measured uplift of a program: its treated customers against its control groups."""
    from ceap.experiments.charts import uplift_figure
    from ceap.experiments.loop import attribute
    from ceap.experiments.uplift import BY_CHOICES, uplift_report

    if by is not None and by not in BY_CHOICES:
        err.print(f"--by: expected one of {', '.join(BY_CHOICES)}, got {by!r}", highlight=False)
        raise typer.Exit(2)
    now = utcnow()
    start = _since(since, now)
    project = state.project()
    spec = _spec(project, program)
    program = spec.name if spec is not None else program  # a file path names its program
    tenant = state.tenant or project.tenant
    store = state.open_store(project)
    try:
        if spec is not None:
            attribute(store, [spec], now)  # the report is as current as the outcomes
        report = uplift_report(
            store, tenant, program, now, since=start, by=by,
            guardrails=spec.experiment.guardrails if spec else None,
            bandit=bool(spec and spec.experiment.bandit),
            has_goal=None if spec is None else spec.goal is not None)
        if spec is None and not report.candidates and not (
                start is not None and uplift_report(store, tenant, program, now).candidates):
            [path] = program_paths([program], project)
            err.print(f"unknown program {program!r}: no program file ({path}) and no candidates "
                      "in the store", highlight=False)
            raise typer.Exit(2)
    except CeapError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    finally:
        store.close()
    if plot is not None:
        _plot(uplift_figure(program, report.arms, report.groups, report.by, report.comparisons),
              plot)
    if as_json:
        out.print_json(json.dumps(report.to_dict(), default=_iso))
    else:
        print_uplift(report)


def _plot(spec: dict[str, Any], path: Path) -> None:
    from ceap.experiments.plots import write_plot

    try:
        written = write_plot(spec, path)
    except CeapError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    err.print(f"figure written to {written}", highlight=False)


def bandit_table(program: str, history: list[ArmState]) -> Table:
    table = Table(title=f"{program}: bandit shares over time", title_justify="left")
    for column in ("updated at", "variant", "share", "trials", "conversions", "rate", "posterior"):
        table.add_column(column, justify="left" if column in ("updated at", "variant") else "right",
                         overflow="fold")
    for s in history:
        rate = s.successes / s.trials if s.trials else None
        table.add_row(f"{s.at:%Y-%m-%d %H:%M:%S}", s.variant, _pct(s.share), f"{s.trials:,}",
                      f"{s.successes:,}", _pct(rate), f"Beta({s.alpha:g}, {s.beta:g})")
    return table


@report_app.command("bandit")
def bandit(
    program: Annotated[str, typer.Argument(help="a program with experiment.bandit")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    plot: Annotated[Path | None, typer.Option(
        help="write the shares over time to this file (.png, .svg or .json)")] = None,
) -> None:
    """A bandit's variant shares over time, with the trials and conversions behind them."""
    from ceap.experiments.bandit import bandit_history
    from ceap.experiments.charts import bandit_shares

    project = state.project()
    store = state.open_store(project)
    try:
        history = bandit_history(store, state.tenant or project.tenant, program)
    finally:
        store.close()
    spec = None if history else _spec(project, program)
    if not history and spec is None:
        [path] = program_paths([program], project)
        err.print(f"unknown program {program!r}: no program file ({path}) and no bandit updates "
                  "in the store", highlight=False)
        raise typer.Exit(2)
    if plot is not None:
        _plot(bandit_shares(program, [(s.at, s.variant, s.share) for s in history]), plot)
    if as_json:
        out.print_json(json.dumps([asdict(s) for s in history], default=_iso))
        return
    if not history:
        out.print(f"no bandit updates for {program} (`ceap run` and `ceap experiments update` "
                  "make them once outcomes are recorded)" if spec is not None and spec.experiment.bandit
                  else f"{program} has no experiment.bandit, so no bandit updates", highlight=False)
        return
    out.print(bandit_table(program, history))


@experiments_app.command("update")
def update(
    programs: Annotated[list[str] | None, typer.Argument(help="program names or files")] = None,
    all_: Annotated[bool, typer.Option("--all", help="every program in the programs folder")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Attribute outcomes, update bandit shares and teach online models, now."""
    from ceap.experiments.loop import attribute, close_loop

    project = state.project()
    specs = load_specs(programs or [], project, all_)
    store = state.open_store(project)
    now = utcnow()
    results = []
    try:
        attribute(store, specs, now)
        for spec in specs:
            results.append(close_loop(spec, store, project.context(state.tenant), now,
                                      attributed=True))
    except CeapError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    finally:
        store.close()
    if as_json:
        out.print_json(json.dumps([{k: v for k, v in asdict(r).items() if k != "attributed"}
                                   for r in results], default=_iso))
        return
    for r in results:
        parts = []
        if r.bandit:
            parts.append("shares " + ", ".join(f"{s.variant} {s.share:.1%}" for s in r.bandit))
        if r.learned is not None:
            parts.append(f"learned {r.learned.rows:,} outcomes"
                         + (f" ({r.learned.model_before} -> {r.learned.model_after})"
                            if r.learned.rows else ""))
        out.print(f"{r.program}: " + ("; ".join(parts) or r.note or "nothing to update"),
                  highlight=False)
