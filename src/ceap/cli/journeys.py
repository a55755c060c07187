"""``ceap journey PROGRAM`` (a journey's graph, where customers stand, one customer's walk)
and ``ceap journeys tick`` (enter and advance; docs/journeys.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ceap.cli.common import JsonOption, app, err, fail_spec, load_specs, state, stop_on_signals
from ceap.cli.output import Column, Sheet, print_json, show, write
from ceap.errors import CeapError, SpecError

journeys_app = typer.Typer(help="Journeys: enter and advance customers (`ceap journeys tick`).",
                           no_args_is_help=True)
app.add_typer(journeys_app, name="journeys")


def _journey_spec(program: str, project: Any) -> Any:
    [spec] = load_specs([program], project, False)
    if spec.journey is None:
        err.print(f"{program}: the program has no journey")
        raise typer.Exit(2)
    return spec


@app.command()
def journey(
    program: Annotated[str, typer.Argument(help="program name or file")],
    customer: Annotated[str | None, typer.Option(help="show this customer's entries, step by step")] = None,
    plot: Annotated[bool, typer.Option("--plot", help="print the journey's graph")] = False,
    fmt: Annotated[str | None, typer.Option(
        "--format", help="graph format: mermaid (default), dot, text, svg or png (needs --output)")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="write the graph to this file (its suffix gives the format when "
                               "--format is not given: .png, .svg, .dot, .mmd, .txt)")] = None,
    as_json: JsonOption = False,
) -> None:
    """A journey: its graph (--plot), a customer's place (--customer), or how many are where."""
    project = state.project()
    spec = _journey_spec(program, project)
    if plot:
        _plot(spec, fmt, output)
        return
    from ceap.journeys.state import customer_entries, step_counts

    store = state.open_store(project)
    try:
        with store.tx() as tx:
            if customer is None:
                counts = step_counts(tx, state.tenant or project.tenant, spec.name)
            else:
                entries = customer_entries(tx, state.tenant or project.tenant, customer, spec.name)
    finally:
        store.close()
    if customer is None:
        sheet = Sheet(f"{spec.name}: entries by step", [Column("status"), Column("step"),
                                                        Column("entries", right=True)])
        for row in counts:
            sheet.add(*row)
        show(sheet, as_json)
        return
    if as_json:
        print_json([e.plain() for e in entries])
        return
    if not entries:
        err.print(f"{customer} has not entered {spec.name}")
        return
    sheets = []
    for e in entries:
        sheet = Sheet(f"entry {e.id}: {e.status} at {e.step}" + (f" ({e.reason})" if e.reason else "")
                      + f", version {e.version}", [Column("entry", right=True), Column("seq", right=True),
                                                   Column("step"), Column("what"), Column("message"),
                                                   Column("at")])
        for move in e.log:
            sheet.add(e.id, move["seq"], move["step"], move["what"], move["candidate_id"], move["at"])
        sheets.append(sheet)
    show(sheets)


def _plot(spec: Any, fmt: str | None, output: Path | None) -> None:
    """Print the graph, or write it to ``output`` (``--format png`` only there)."""
    from ceap.journeys.plot import FORMATS, SUFFIXES, render

    if fmt is None:
        fmt = SUFFIXES.get(output.suffix.lower(), "mermaid") if output is not None else "mermaid"
    if fmt not in FORMATS:
        err.print(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}", markup=False)
        raise typer.Exit(2)
    if fmt == "png" and output is None:
        err.print("--format png writes an image: give --output FILE (for example journey.png)", markup=False)
        raise typer.Exit(2)
    try:
        if fmt == "png":
            from ceap.journeys.picture import png

            data = png(spec.journey, spec.action, spec.name)
        else:
            graph = render(spec.journey, fmt, spec.action, spec.name).rstrip("\n") + "\n"
    except CeapError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    if output is None:
        write(graph)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "png":
        output.write_bytes(data)
    else:
        output.write_text(graph)
    err.print(f"journey graph written to {output}", markup=False, highlight=False)


@journeys_app.command("tick")
def tick_command(
    follow: Annotated[bool, typer.Option("--follow", help="keep ticking every --poll seconds")] = False,
    poll: Annotated[float, typer.Option(min=0.1, help="seconds between ticks with --follow")] = 5.0,
    as_json: JsonOption = False,
) -> None:
    """Enter the customers journey programs selected and move every entry along its steps
    (unless another ticker, a worker or a scheduler, is ticking this store: then nothing)."""
    from ceap.journeys.engine import TickStats
    from ceap.journeys.ticker import JourneyTicker
    from ceap.spec import load_programs

    project = state.project()
    folder = project.programs_dir()
    try:
        specs = [s for s in load_programs(folder) if s.journey is not None] if folder.is_dir() else []
    except SpecError as exc:
        fail_spec([exc])
    store = state.open_store(project)
    stop = stop_on_signals()
    total = TickStats()
    ticker = JourneyTicker(store, lambda: specs, lease=project.journeys.lease)
    was: str | None = None
    try:
        while True:
            done = ticker.run()
            if done is not None:
                total.add(done)
            elif ticker.holder_seen is not None and ticker.holder_seen != was:
                err.print(f"another ticker ({ticker.holder_seen}) is ticking this store: not ticking now",
                          markup=False, highlight=False)
            was = ticker.holder_seen
            if not follow or stop.wait(poll):
                break
    except CeapError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        store.close()
    counts = {name: getattr(total, name) for name in total.__dataclass_fields__}
    if as_json:
        print_json(counts)
        return
    sheet = Sheet("journeys tick", [Column("outcome"), Column("count", right=True)])
    for name, n in counts.items():
        sheet.add(name, n)
    show(sheet)
