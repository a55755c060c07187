"""``ceap`` commands of the batch path: validate, run, candidates, runs, quarantine, sweep,
plugins, train, demo."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ceap.cli.common import (
    JsonOption,
    app,
    check_status,
    echo,
    err,
    fail_spec,
    load_specs,
    out,
    parse_now,
    program_paths,
    short_command,
    state,
)
from ceap.cli.output import Column, Sheet, show
from ceap.errors import CeapError, SpecError
from ceap.model import CandidateQuery

if TYPE_CHECKING:
    from rich.progress import Progress

    from ceap.runtime.batch import RunResult


@app.command()
def validate(
    paths: Annotated[list[str], typer.Argument(help="program files, folders or program names")],
    sources: Annotated[
        bool, typer.Option("--sources", help="also check columns against the sources")
    ] = False,
) -> None:
    """Check program specs. Exit 0 when all are valid; 2 with `file: field: message` lines."""
    with short_command():
        _validate(paths, sources)


def _validate(paths: list[str], sources: bool) -> None:
    from ceap.cli.validating import validate_files

    project = state.project()
    files = program_paths(paths, project)
    if not files:
        echo("no program files found", error=True)
        raise typer.Exit(2)
    errors = validate_files(files, project, state.tenant, sources)
    if errors:
        fail_spec(errors)


def _progress_factory(progress: Progress) -> Any:
    from ceap.runtime.batch import Progress as ProgressFn
    from ceap.spec import ProgramSpec

    def start(spec: ProgramSpec) -> ProgressFn:
        task = progress.add_task(spec.name, total=None)

        def update(done: int, expected: int | None) -> None:
            progress.update(task, completed=done, total=expected)

        return update

    return start


def print_results(results: list[RunResult], as_json: bool = False) -> None:
    """Each program's funnel (failed and skipped programs are reported on standard error)."""
    from ceap.report import funnel_sheet

    if not as_json:
        for r in results:
            if r.run.status == "failed":
                err.print(f"[red]✗ {r.program} failed:[/red] {r.error or r.run.error}", highlight=False)
            elif r.run.status == "skipped":
                why = r.run.funnel.get("skipped", "program is paused")
                err.print(f"[yellow]- {r.program} skipped:[/yellow] {why}", highlight=False)
    show([funnel_sheet(r.program, r.funnel, r.funnel.model) for r in results if r.run.status == "succeeded"],
         as_json, records=[{"program": r.program, "run_id": r.run.run_id, "status": r.run.status,
                            "funnel": r.funnel.to_dict(), "error": r.error} for r in results])


@app.command()
def run(
    programs: Annotated[list[str] | None, typer.Argument(help="program names or files")] = None,
    all_: Annotated[bool, typer.Option("--all", help="every program in the programs folder")] = False,
    as_json: JsonOption = False,
    engine: Annotated[str | None, typer.Option(
        help="local (this process, spills to disk) or spark (default: ceap.yaml's engine)")] = None,
    now: Annotated[str | None, typer.Option(
        "--now", help="run as if it were this time (ISO 8601 with a time zone, e.g. "
                      "2026-03-29T01:00:00Z): run_ts, run_date and the candidates' times "
                      "are computed from it, for reproducible runs")] = None,
) -> None:
    """Run programs once over their sources; print each funnel. One failing
    program does not stop the others; the exit code is 1 if any failed."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from ceap.runtime.batch import run_programs

    at = parse_now(now)
    project = state.project()
    try:
        settings = project.engine_settings(engine)
    except SpecError as exc:
        fail_spec([exc])
    specs = load_specs(programs or [], project, all_)
    store = state.open_store(project)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.completed:,} rows"), TimeElapsedColumn())
    try:
        with Progress(*columns, console=err, transient=True) as progress:
            results = run_programs(specs, store, project.context(state.tenant), now=at,
                                   on_start=_progress_factory(progress), engine=settings)
    finally:
        store.close()
    print_results(results, as_json)
    if any(not r.ok for r in results):
        raise typer.Exit(1)


@app.command()
def candidates(
    customer: Annotated[str | None, typer.Option(help="customer id")] = None,
    program: Annotated[str | None, typer.Option(help="program name")] = None,
    channel: Annotated[str | None, typer.Option(help="channel name")] = None,
    status: Annotated[str | None, typer.Option(help="pending, held_out, shadow, ...")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 20,
    include_expired: Annotated[bool, typer.Option("--include-expired")] = False,
    as_json: JsonOption = False,
) -> None:
    """Query the candidate store."""
    from typing import get_args

    from ceap.model import CandidateStatus
    from ceap.report import candidates_sheet

    check_status(status, get_args(CandidateStatus))

    project = state.project()
    store = state.open_store(project)
    try:
        found = store.candidates(CandidateQuery(
            tenant_id=state.tenant or project.tenant, customer_id=customer, program=program,
            channel=channel, status=status, include_expired=include_expired, limit=limit))
    finally:
        store.close()
    show(candidates_sheet(found), as_json, records=[asdict(c) for c in found])


@app.command()
def runs(
    program: Annotated[str | None, typer.Option(help="program name")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 20,
    as_json: JsonOption = False,
    plot: Annotated[Path | None, typer.Option(
        help="write the funnel of the newest run listed to this file (.png, .svg, or .json for the "
             "Vega-Lite spec the dashboard shows)")] = None,
) -> None:
    """Recent runs with their status and counts."""
    from ceap.report import runs_sheet

    project = state.project()
    store = state.open_store(project)
    try:
        found = store.runs(state.tenant or project.tenant, program, limit)
    finally:
        store.close()
    if plot is not None and found:
        from ceap.charts import plot_funnel

        try:
            err.print(f"figure written to {plot_funnel(found[0], plot)}", highlight=False)
        except CeapError as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(2) from None
    show(runs_sheet(found), as_json, records=[asdict(r) for r in found])


@app.command()
def quarantine(
    run_id: Annotated[str, typer.Argument(help="a run id (see `ceap runs`)")],
    as_json: JsonOption = False,
) -> None:
    """Rows a run set aside, with the reason for each."""
    project = state.project()
    store = state.open_store(project)
    try:
        rows = store.quarantined(state.tenant or project.tenant, run_id)
    finally:
        store.close()
    sheet = Sheet(f"quarantine of {run_id}", [Column("reason"), Column("row")])
    for row in rows:
        sheet.add(row["reason"], row["row"])
    show(sheet, as_json, records=[{"reason": r["reason"], "row": _json_or_text(r["row"])} for r in rows])
    err.print(f"{len(rows)} quarantined row(s)")


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


@app.command()
def sweep() -> None:
    """Delete expired candidates (all tenants, or --tenant's); held-out ones are kept, and
    so are all until the longest goal window after their expiry has passed."""
    from ceap.outcomes.sweep import sweep_outcomes

    project = state.project()
    store = state.open_store(project)
    try:
        removed, links = sweep_outcomes(store, project, state.tenant)
    except SpecError as exc:
        fail_spec([exc])
    finally:
        store.close()
    extra = f", {links} expired tracked link(s)" if links else ""
    out.print(f"removed {removed} expired candidate(s){extra}")


@app.command()
def plugins(as_json: JsonOption = False) -> None:
    """The installed plugins of each kind (built-in and third-party alike)."""
    from ceap.registry import default_registry

    sheet = Sheet("plugins", [Column("kind"), Column("type"), Column("implementation"), Column("package")])
    registry = default_registry()
    for info in registry.info():
        sheet.add(info.kind, info.name, info.target, info.distribution)
    show(sheet, as_json)
    for why in registry.broken.values():
        err.print(f"[red]broken:[/red] {why}", highlight=False)
    if registry.broken:
        raise typer.Exit(1)


@app.command()
def train(
    name: Annotated[str, typer.Argument(help="model name: writes models/NAME/<next version>/")],
    features: Annotated[str, typer.Option(help="feature columns, comma-separated, in input order")],
    label: Annotated[str, typer.Option(help="the label column (true/false or 0/1)")],
    source: Annotated[str | None, typer.Option(
        help="a data file or glob (.csv, .jsonl, .parquet), or a YAML file with a source block")] = None,
    source_spec: Annotated[str | None, typer.Option(
        "--source-spec", help="a YAML file with a source block (any connector, e.g. sql)")] = None,
    time_column: Annotated[str | None, typer.Option(
        help="split by time: train on the earliest rows, test on the latest")] = None,
    kind: Annotated[str, typer.Option(
        help="lightgbm, xgboost, sklearn, onnx-from-lightgbm or river")] = "lightgbm",
    trees: Annotated[int, typer.Option(min=1, help="boosting rounds")] = 100,
    test_share: Annotated[float, typer.Option(help="share of rows held out for the metrics")] = 0.2,
    seed: Annotated[int, typer.Option(help="seed of the random split and the trainer")] = 7,
    registry: Annotated[str, typer.Option(help="model registry folder, relative to the project")
                        ] = "models",
    as_json: JsonOption = False,
) -> None:
    """Train a model from a table and write it as a versioned artefact with its metadata."""
    from ceap.ml.data import TrainError
    from ceap.ml.train import TrainOptions, TrainParams, train_from_source

    project = state.project()
    if (source is None) == (source_spec is None):
        err.print("error: give exactly one of --source and --source-spec")
        raise typer.Exit(2)
    options = TrainOptions(name=name, features=[f.strip() for f in features.split(",") if f.strip()],
                           label=label, time_column=time_column, kind=kind, test_share=test_share,
                           params=TrainParams(trees=trees, seed=seed))
    try:
        artefact = train_from_source(str(source or source_spec), options,
                                     project.context(state.tenant), registry,
                                     say=lambda line: err.print(line, highlight=False, markup=False),
                                     spec_file=source_spec is not None)
    except (TrainError, CeapError, ValueError) as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        raise typer.Exit(2) from None
    meta = artefact.meta
    sheet = Sheet(f"{meta.ref}: held-out metrics", [
        Column("model", in_table=False), Column("metric"),
        Column("value", right=True, human=lambda v: f"{v:,}" if isinstance(v, int) else f"{v:.4f}")])
    for key, value in meta.metrics.items():
        sheet.add(meta.ref, key, int(value) if key == "rows" else value)
    show(sheet, as_json, records={"model": meta.ref, "folder": str(artefact.folder),
                                  "metrics": dict(meta.metrics)})
    err.print(f"model {meta.ref} written to {artefact.folder}", highlight=False)


@app.command()
def demo(
    customers: Annotated[int, typer.Option(min=100, help="customers to generate")] = 20_000,
    seed: Annotated[int, typer.Option(help="random seed of the generated data")] = 7,
    pocs: Annotated[bool, typer.Option(help="also run the ML proofs of concept")] = True,
    dispatch: Annotated[bool, typer.Option(help="also deliver: local SMTP server and in-app")] = True,
    simulate: Annotated[bool, typer.Option(
        help="also measure an A/B test on simulated customers (uplift report)")] = True,
) -> None:
    """Generate seeded demo data and run the demo programs on the embedded store."""
    from ceap.demo.runner import run_demo

    project = state.project()
    url = state.store or os.environ.get("CEAP_STORE") or \
        f"sqlite:///{project.base_dir / '.ceap' / 'demo.db'}"
    try:
        results = run_demo(project.base_dir, url, customers=customers, seed=seed, console=out,
                           pocs=pocs, dispatch=dispatch, simulate=simulate)
    except CeapError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    if any(not r.ok for r in results):
        raise typer.Exit(1)
