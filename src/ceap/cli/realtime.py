"""``ceap`` commands of the real-time path: worker, publish."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ceap.cli.common import app, err, out, state, stop_on_signals
from ceap.cli.observe import MetricsAddrOption, MetricsPortOption, start_metrics
from ceap.errors import CeapError, SpecError


def _fail(exc: CeapError) -> None:
    lines = exc.lines() if isinstance(exc, SpecError) else [f"error: {exc}"]
    for line in lines:
        err.print(line, markup=False, highlight=False)
    raise typer.Exit(2)


@app.command()
def worker(
    stream: Annotated[str, typer.Option(help="stream name in ceap.yaml")] = "events",
    batch: Annotated[int, typer.Option(min=1, max=100_000, help="most messages per poll")] = 1000,
    catch_up: Annotated[int, typer.Option(min=1, max=100, help=(
        "while polls come back full (the stream is behind), this many make one micro-batch"))] = 8,
    wait: Annotated[float, typer.Option(min=0.001, help="most seconds to wait for a batch")] = 0.05,
    until_idle: Annotated[bool, typer.Option("--until-idle", help="stop once the stream is drained")
                          ] = False,
    journeys: Annotated[bool, typer.Option(
        "--journeys/--no-journeys", help="move journeys in each pass (the batch's events, due wait "
                                         "deadlines) and tick them every ceap.yaml "
                                         "journeys.tick_every (default 5s; 0s turns both off), one "
                                         "ticker per store at a time")] = True,
    metrics_port: MetricsPortOption = None,
    metrics_addr: MetricsAddrOption = "0.0.0.0",
) -> None:
    """Run the real-time programs over a stream: micro-batches, state, candidates; and tick
    the journeys."""
    from ceap.observability.logs import progress as say
    from ceap.realtime.setup import open_stream
    from ceap.realtime.worker import Worker, WorkerStats

    project = state.project()
    start_metrics(metrics_port, metrics_addr)
    store = state.open_store(project)
    stop = stop_on_signals()
    try:
        source = open_stream(project, stream, store)
        context = source.context
        ticker = None
        if journeys and project.journeys.tick_every.total_seconds() > 0:
            from ceap.journeys.ticker import ticker_for

            ticker = ticker_for(store, project)
        w = Worker(store, source, project.programs_dir(), context, batch=batch, wait=wait,
                   state_url=project.state, stream=stream, journeys=ticker, catch_up=catch_up)

        def progress(s: WorkerStats) -> None:
            say(f"events {s.events:,}  candidates {s.candidates:,}  duplicates {s.duplicates:,}  "
                f"late {s.late:,}  rejected {s.rejected:,}  lag {s.lag if s.lag is not None else '?'}"
                f"  programs {', '.join(s.programs) or '-'}"
                + (f"  journey ticks {s.journey_ticks:,} moved {s.journey_moved:,} messages "
                   f"{s.journey_messages:,}" if s.journey_ticks or s.journey_moved else ""),
                lambda text: err.print(text, highlight=False),
                stream=stream, events=s.events, candidates=s.candidates, duplicates=s.duplicates,
                late=s.late, rejected=s.rejected, lag=s.lag, programs=",".join(s.programs),
                journey_ticks=s.journey_ticks, journey_moved=s.journey_moved,
                journey_messages=s.journey_messages)

        stats = w.run(stop, until_idle=until_idle, on_progress=progress)
        w.close()
    except CeapError as exc:
        _fail(exc)
    finally:
        store.close()
    out.print(f"worker stopped: {stats.events:,} events, {stats.candidates:,} new candidates, "
              f"{stats.duplicates:,} duplicates, {stats.late:,} late, {stats.rejected:,} rejected"
              + (f"; {stats.journey_ticks:,} journey ticks, {stats.journey_entered:,} entered, "
                 f"{stats.journey_moved:,} moved between ticks, {stats.journey_messages:,} journey messages"
                 if stats.journey_ticks or stats.journey_moved else ""))


@app.command()
def publish(
    path: Annotated[Path, typer.Argument(help="JSON Lines file of events")],
    stream: Annotated[str, typer.Option(help="stream name in ceap.yaml")] = "events",
) -> None:
    """Validate events from a file and append them to a stream (replays, backfills).
    Exit 0; 1 when some events were rejected (the others are published); 2 when a line is
    not JSON (nothing is published)."""
    import json

    from ceap.json_input import json_lines
    from ceap.realtime.events import validate_events
    from ceap.realtime.setup import open_stream

    project = state.project()
    if not path.is_file():
        err.print(f"{path}: file not found", markup=False, highlight=False)
        raise typer.Exit(2)
    parsed, broken = json_lines(path.read_bytes())
    for number, reason in broken:
        err.print(f"{path}:{number}: {reason}", markup=False, highlight=False)
    if broken:
        err.print(f"nothing published: {len(broken):,} line(s) are not JSON", markup=False, highlight=False)
        raise typer.Exit(2)
    items = [value for _, value in parsed]
    table, rejected = validate_events(items, state.tenant or project.tenant)
    for index, reason in rejected:
        err.print(f"{path}:{parsed[index][0]}: {reason}", markup=False, highlight=False)
    refused = {index for index, _ in rejected}
    store = state.open_store(project)
    try:
        source = open_stream(project, stream, store)
        source.publish([json.dumps(item).encode() for i, item in enumerate(items) if i not in refused])
        source.close()
    except CeapError as exc:
        _fail(exc)
    finally:
        store.close()
    out.print(f"published {table.num_rows:,} event(s) to {stream}; rejected {len(rejected):,}")
    if rejected:
        raise typer.Exit(1)
