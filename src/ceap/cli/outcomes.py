"""``ceap outcomes ...``: goal events from files, attribution, the outbound stream."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from ceap.cli.common import app, err, out, state, stop_on_signals
from ceap.errors import CeapError, SpecError

outcomes_app = typer.Typer(help="Goal events, attribution and the outbound stream of outcomes.",
                           no_args_is_help=True)
app.add_typer(outcomes_app, name="outcomes")


def _specs(project: Any) -> list[Any]:
    from ceap.spec import load_programs

    folder = project.programs_dir()
    if not folder.is_dir():
        return []
    try:
        return load_programs(folder)
    except SpecError as exc:
        for line in exc.lines():
            err.print(line, markup=False, highlight=False)
        raise typer.Exit(2) from None


@outcomes_app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="CSV, Parquet or JSON Lines file of goal events")],
    type_: Annotated[str | None, typer.Option("--type", help="event type of every row (else a 'type' "
                                                               "column)")] = None,
    value: Annotated[str | None, typer.Option(help="column holding the value (default: 'value' if "
                                                   "present)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the counts as JSON")] = False,
) -> None:
    """Load goal events (conversions a warehouse holds) into goal_events; replays add nothing."""
    from ceap.outcomes.goals import import_goal_file

    project = state.project()
    if not path.is_file():
        err.print(f"{path}: file not found")
        raise typer.Exit(2)
    store = state.open_store(project)
    try:
        result = import_goal_file(store, path, state.tenant or project.tenant, event_type=type_, value=value)
    except ValueError as exc:
        err.print(str(exc), markup=False, highlight=False)
        raise typer.Exit(2) from None
    finally:
        store.close()
    for line, reason in result.rejected[:50]:
        err.print(f"{path}: row {line}: {reason}", markup=False, highlight=False)
    counts = {"read": result.read, "inserted": result.inserted, "already_present": result.duplicates,
              "rejected": len(result.rejected), "deleted_customers": result.erased}
    if as_json:
        out.print_json(json.dumps(counts))
    else:
        out.print(f"read {result.read:,}: {result.inserted:,} new goal event(s), {result.duplicates:,} "
                  f"already present, {len(result.rejected):,} rejected"
                  + (f", {result.erased:,} of deleted customers dropped" if result.erased else ""),
                  highlight=False)
    if result.rejected:
        raise typer.Exit(1)


@outcomes_app.command()
def attribute(
    as_json: Annotated[bool, typer.Option("--json", help="print the counts as JSON")] = False,
) -> None:
    """Attribute goal events to candidates (last touch within each program's goal window)."""
    from ceap.outcomes.attribution import attribute as run_attribution

    project = state.project()
    specs = _specs(project)
    store = state.open_store(project)
    try:
        result = run_attribution(store, specs)
    finally:
        store.close()
    if as_json:
        out.print_json(json.dumps({"conversions": result.programs, "inserted": result.inserted,
                                   "candidates": result.candidates, "goal_events": result.goal_events}))
        return
    if not any(getattr(s, "goal", None) for s in specs):
        err.print("no program declares a goal: nothing to attribute")
        return
    for program, n in sorted(result.programs.items()):
        out.print(f"{program}: {n:,} conversion(s)", highlight=False)
    out.print(f"{result.inserted:,} new conversion(s) from {result.goal_events:,} goal event(s) and "
              f"{result.candidates:,} candidate(s)", highlight=False)


@outcomes_app.command()
def export(
    follow: Annotated[bool, typer.Option("--follow", help="keep exporting, every --every seconds")] = False,
    every: Annotated[float, typer.Option(min=1.0, help="seconds between passes with --follow")] = 30.0,
    as_json: Annotated[bool, typer.Option("--json", help="print the counts as JSON")] = False,
) -> None:
    """Send what happened (sent, suppressed, engaged, converted) to ceap.yaml's exports."""

    from ceap.model import utcnow
    from ceap.outcomes.exports import run_exports

    project = state.project()
    if not project.exports:
        err.print("no exports in ceap.yaml (see docs/outcomes.md)")
        raise typer.Exit(2)
    store = state.open_store(project)
    stop = stop_on_signals() if follow else threading.Event()

    def opener(name: str) -> Any:
        from ceap.realtime.setup import open_stream

        return open_stream(project, name, store)

    totals: dict[str, dict[str, int]] = {}
    try:
        while True:
            counts = run_exports(store, list(project.exports), state.tenant or project.tenant, utcnow(),
                                 project.base_dir, opener)
            for name, kinds in counts.items():
                for kind, n in kinds.items():
                    totals.setdefault(name, {}).setdefault(kind, 0)
                    totals[name][kind] += n
            if not follow or stop.wait(every):
                break
    except CeapError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    finally:
        store.close()
    if as_json:
        out.print_json(json.dumps(totals))
        return
    for name, kinds in totals.items():
        out.print(f"{name}: " + ", ".join(f"{n:,} {kind}" for kind, n in kinds.items()), highlight=False)
