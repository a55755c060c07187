"""``ceap`` commands of the delivery layer: dispatch, profiles, deliveries."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_args

import typer

from ceap.cli.common import JsonOption, app, check_status, err, out, state, stop_on_signals
from ceap.cli.observe import MetricsAddrOption, MetricsPortOption, start_metrics
from ceap.cli.output import Column, Sheet, show
from ceap.errors import CeapError, SpecError

if TYPE_CHECKING:
    from ceap.delivery.dispatcher import Dispatcher, DispatchStats
    from ceap.delivery.held import StoreTotals
    from ceap.delivery.model import Delivery
    from ceap.store import Store


def _programs(project: Any) -> dict[str, Any]:
    from ceap.spec import load_programs

    folder = project.programs_dir()
    if not folder.is_dir():
        return {}
    try:
        return {p.name: p for p in load_programs(folder)}
    except SpecError as exc:
        for line in exc.lines():
            err.print(line, markup=False, highlight=False)
        raise typer.Exit(2) from None


def build_dispatcher(project: Any, store: Store, programs: dict[str, Any] | None = None,
                     **kw: Any) -> Dispatcher:
    """The dispatcher for this project: its channels, programs (default: the programs
    folder's, all valid or exit 2), policies and templates."""
    from ceap.delivery.dispatcher import Dispatcher
    from ceap.delivery.policies import default_policies
    from ceap.delivery.setup import build_channels
    from ceap.delivery.templates import TemplateRenderer

    try:
        channels = build_channels(project, store)
    except SpecError as exc:
        for line in exc.lines():
            err.print(line, markup=False, highlight=False)
        raise typer.Exit(2) from None
    renderer = TemplateRenderer.from_config(project.delivery, project.base_dir, tracking=project.tracking,
                                            store=store)
    return Dispatcher(store, channels, programs=_programs(project) if programs is None else programs,
                      policies=default_policies(project.delivery), renderer=renderer, **kw)


_OUTCOMES = (("claimed", "candidates claimed"), ("planned", "planned for sending"),
             ("suppressed", "suppressed by policy"), ("deferred", "deferred (quiet hours)"),
             ("expired", "expired before sending"), ("attempted", "send attempts"),
             ("sent", "sent"), ("retry", "to retry later"),
             ("fallback", "dead letter, fallback channel planned"),
             ("dead", "dead letter"), ("shadow", "shadow (recorded, not sent)"),
             ("requeued", "in flight at a crash: resent"),
             ("ambiguous", "in flight at a crash: ambiguous, held"),
             ("held_rate_limit", "due, held back: rate limit"),
             ("held_circuit_open", "due, held back: circuit open"))


def print_stats(stats: DispatchStats, as_json: bool = False, totals: StoreTotals | None = None) -> None:
    """What a dispatch did, then the store's totals (every tenant, whatever this run did):
    every outcome piped or as JSON (``{"run": ..., "store": ...}``); a person's table
    leaves out the zeros."""
    sheet = Sheet("dispatch", [Column("outcome"), Column("count", right=True)])
    for name, _ in _OUTCOMES:
        sheet.add(name, getattr(stats, name))
    labels = dict(_OUTCOMES)
    people = Sheet("dispatch", [Column("outcome"), Column("count", right=True, human=lambda n: f"{n:,}")])
    for name, value in sheet.rows:
        if value or name in ("claimed", "sent"):
            people.add(labels[name], value)
    store = Sheet("store totals", [Column("outcome"), Column("count", right=True)])
    readable = Sheet("store totals", [Column("deliveries"),
                                      Column("count", right=True, human=lambda n: f"{n:,}")])
    if totals is not None:
        for key, label in _TOTALS:
            store.add(f"store_{key}", getattr(totals, key))
            readable.add(label, getattr(totals, key))

    def for_people(console: Any) -> None:
        console.print(people.table())
        if totals is not None:
            console.print(readable.table())

    records: Any = asdict(stats) if totals is None else {"run": asdict(stats), "store": asdict(totals)}
    show([sheet, *([store] if totals is not None else [])], as_json, records=records,
         for_people=for_people)


_TOTALS = (("queued", "queued"), ("sending", "sending (in flight now)"),
           ("held", "held: ambiguous after a crash"),
           ("possible_duplicates", "possible duplicates: resent after a crash"),
           ("dead", "dead letters"))


def report_held(totals: StoreTotals) -> None:
    """Say on stderr what to do about deliveries held after a crash."""
    if totals.held:
        err.print(f"[yellow]{totals.held:,} delivery(ies) are held as ambiguous (in flight at a "
                  "crash): list them with `ceap deliveries --ambiguous`, resolve them with "
                  "`ceap deliveries resend|mark-sent|drop ID... --reason TEXT`[/yellow]")


def crash_mark(d: Delivery) -> str:
    """What a crash left of ``d``: its ambiguity and when recovery found it."""
    if d.ambiguous_at is None:
        return ""
    return f"{d.ambiguity} {d.ambiguous_at:%Y-%m-%d %H:%M:%S}"


@app.command()
def dispatch(
    follow: Annotated[bool, typer.Option("--follow", help="keep running, polling for due work")] = False,
    batch_size: Annotated[int, typer.Option(min=1, max=10_000)] = 500,
    poll: Annotated[float, typer.Option(min=0.05, help="seconds between polls with --follow")] = 1.0,
    lease: Annotated[float, typer.Option(min=1, help="seconds a claim is held")] = 30.0,
    as_json: JsonOption = False,
    metrics_port: MetricsPortOption = None,
    metrics_addr: MetricsAddrOption = "0.0.0.0",
) -> None:
    """Send due candidates: apply policies, render, deliver with retries and fallbacks."""
    from ceap.delivery.held import store_totals
    from ceap.observability.logs import progress as say

    project = state.project()
    start_metrics(metrics_port, metrics_addr)
    store = state.open_store(project)
    stop = stop_on_signals()
    try:
        dispatcher = build_dispatcher(project, store, batch_size=batch_size,
                                      lease=timedelta(seconds=lease))

        def progress(total: DispatchStats) -> None:
            if follow and total.busy:
                say(f"sent {total.sent:,}  suppressed {total.suppressed:,}  "
                    f"retrying {total.retry:,}  dead {total.dead:,}",
                    lambda text: err.print(text, highlight=False), sent=total.sent,
                    suppressed=total.suppressed, retry=total.retry, dead=total.dead)

        told: set[str] = set()

        def waiting(due: dict[str, int], seconds: float) -> None:
            for channel, n in due.items():
                if channel not in told:  # once per channel and run
                    told.add(channel)
                    rate = dispatcher.buckets[channel].rate
                    err.print(f"{channel}: {n:,} due, sent at its rate limit ({rate:g}/s, about "
                              f"{n / rate:,.0f} s); Ctrl-C stops and leaves the rest queued",
                              highlight=False)

        total = dispatcher.run(follow=follow, poll=poll, stop=stop, on_step=progress, on_wait=waiting)
        totals = store_totals(store)
    except CeapError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        store.close()
    print_stats(total, as_json, totals)
    for channel, (n, why) in dispatcher.held.items():
        err.print(f"[yellow]{channel}: {n:,} due delivery(ies) held back ({why}): still queued for "
                  "the next `ceap dispatch`[/yellow]")
    report_held(totals)
    if dispatcher.unconfigured:
        names = ", ".join(sorted(dispatcher.unconfigured))
        err.print(f"[yellow]no channel named {names} in ceap.yaml (configured: "
                  f"{', '.join(sorted(dispatcher.channels)) or 'none'}): candidates on only "
                  "such channels were suppressed as no_channel; add the channels under "
                  "`channels:` (docs/project-config.md#channels)[/yellow]", highlight=False)


@app.command()
def profiles(
    path: Annotated[Path, typer.Argument(help="CSV, JSON Lines or Parquet file with customer_id")],
) -> None:
    """Load customer profiles (e-mail, phone, push token, time zone, locale, attributes)."""
    import duckdb

    from ceap.delivery.profiles import upsert_profiles

    project = state.project()
    if not path.exists():
        err.print(f"{path}: file not found")
        raise typer.Exit(2)
    reader = {".csv": "read_csv", ".parquet": "read_parquet", ".jsonl": "read_json",
              ".json": "read_json"}.get(path.suffix.lower())
    if reader is None:
        err.print(f"{path}: expected a .csv, .jsonl or .parquet file")
        raise typer.Exit(2)
    relation = duckdb.sql(f"SELECT * FROM {reader}(?)", params=[str(path)])
    assert relation is not None  # a SELECT always gives a relation
    table = relation.to_arrow_table()
    store = state.open_store(project)
    try:
        n = upsert_profiles(store, table, state.tenant or project.tenant)
    except ValueError as exc:
        err.print(f"{path}: {exc}")
        raise typer.Exit(2) from None
    finally:
        store.close()
    out.print(f"loaded {n:,} profile(s)")
    if n < table.num_rows:
        err.print(f"{table.num_rows - n:,} row(s) of deleted customers dropped (docs/privacy.md)")


deliveries_app = typer.Typer(help="Delivery attempts; resolve those a crash left held.")
app.add_typer(deliveries_app, name="deliveries")


@deliveries_app.callback(invoke_without_command=True)
def deliveries(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="queued, sent, dead, ambiguous, ...")] = None,
    candidate: Annotated[int | None, typer.Option(help="a candidate id")] = None,
    ambiguous: Annotated[bool, typer.Option(
        "--ambiguous", help="only those in flight at a crash, whatever their status now (held, "
                            "resent: possible duplicates, resolved)")] = False,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    as_json: JsonOption = False,
) -> None:
    """Delivery attempts with their status, channel and last error."""
    from ceap.delivery.model import DeliveryStatus
    from ceap.delivery.outbox import Outbox

    if ctx.invoked_subcommand is not None:
        return
    check_status(status, get_args(DeliveryStatus))
    project = state.project()
    store = state.open_store(project)
    try:
        rows = Outbox(store, "cli").deliveries(state.tenant or project.tenant, candidate, status,
                                               limit, ambiguous=ambiguous)
    finally:
        store.close()
    show(deliveries_sheet(rows, ambiguous), as_json, records=[asdict(d) for d in rows])


def deliveries_sheet(rows: list[Delivery], ambiguous: bool = False) -> Sheet:
    crash = [Column("after_a_crash", "after a crash")] if ambiguous else []
    sheet = Sheet(f"{len(rows)} delivery(ies)", [
        Column("id", right=True), Column("candidate_id", "candidate", right=True), Column("program"),
        Column("customer_id", "customer"), Column("channel"), Column("status"),
        Column("attempts", right=True), Column("policy_or_error", "policy / error"), *crash])
    for d in rows:
        sheet.add(d.id, d.candidate_id, d.program, d.customer_id, d.channel, d.status, d.attempts,
                  d.policy or d.last_error, *([crash_mark(d)] if ambiguous else []))
    return sheet


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="no API keys: every request is "
                                          "the default tenant (local use only)")] = False,
    workers: Annotated[int, typer.Option(min=1, max=64, help="server processes sharing the "
                                         "port and the store (docs/serving.md); with more than "
                                         "one, set PROMETHEUS_MULTIPROC_DIR for /metrics")] = 1,
) -> None:
    """Serve the HTTP API (candidates for client apps, the in-app inbox, callbacks, /metrics)
    and the dashboard at /ui."""
    from ceap.api.server import ServeSettings, run
    from ceap.observability.exposition import clear_multiprocess_dir, multiprocess_dir

    try:
        clear_multiprocess_dir()
    except ValueError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    if workers > 1 and multiprocess_dir() is None:
        err.print("[yellow]--workers without PROMETHEUS_MULTIPROC_DIR: each scrape of /metrics "
                  "sees one process only (docs/operations.md)[/yellow]")
    state.open_store(state.project()).close()  # migrated once; a bad ceap.yaml or store fails here
    settings = ServeSettings(str(state.project_dir) if state.project_dir else None, state.store,
                             state.tenant, auth=not no_auth)
    try:
        run(settings, host=host, port=port, workers=workers, migrate=False)
    except CeapError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        raise typer.Exit(2) from None



@app.command()
def preview(
    program: Annotated[str, typer.Argument(help="program name")],
    customer: Annotated[str, typer.Option(help="customer id")],
) -> None:
    """Render what a customer would get from a program, on each of its channels."""
    from ceap.delivery.templates import preview as render_preview

    project = state.project()
    store = state.open_store(project)
    try:
        rendered = render_preview(project.base_dir, program, customer, store, project.delivery,
                                  tenant=state.tenant or project.tenant)
    except CeapError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        raise typer.Exit(2) from None
    finally:
        store.close()
    for channel, r in rendered.items():
        out.rule(f"{channel}")
        out.print(f"[bold]{r.title}[/bold]" if r.title else "", highlight=False)
        out.print(r.body, markup=False, highlight=False)
        for name, value in r.headers.items():
            out.print(f"[dim]{name}: {value}[/dim]", highlight=False)
