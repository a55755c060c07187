"""Run the demo: generate data, train the churn model, run the batch programs, the
proofs of concept, the real-time stream, the delivery, and a measured experiment.

Data and model are reused when a manifest says they were made for the same
size, seed and day, so a second ``ceap demo`` goes straight to the runs (and,
inside the programs' dedup windows, writes no duplicate candidates).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from ceap.demo.data import CHURN_HISTORY, generate
from ceap.demo.models import train_churn_model
from ceap.demo.more_data import generate_more
from ceap.errors import SpecError
from ceap.plugin import PluginContext
from ceap.registry import default_registry
from ceap.report import funnel_table
from ceap.runtime import RunResult, run_programs
from ceap.spec import load_program
from ceap.spec.program import ProgramSpec
from ceap.store import open_store

#: the demo's programs, run in this order from ``<project>/programs``
PROGRAMS = ("churn_prevention", "win_back", "product_recommendations", "review_request",
            "late_order_credit", "appointment_reminder", "appointment_reminder_high_risk",
            "kyc_reminder", "cross_sell", "community_engagement", "user_generated_content")
MANIFEST = "demo.json"
#: bump when the generator or the model training changes what they produce
VERSION = 2
CHURN_MODEL = Path("models") / "churn.txt"


def prepare(project_dir: Path, customers: int = 20_000, seed: int = 7,
            now: datetime | None = None, console: Console | None = None) -> dict[str, Any]:
    """Make ``data/`` and ``models/churn.txt`` unless the manifest says they are current.

    Returns the manifest (with the churn model's metrics)."""
    console = console or Console()
    project_dir = Path(project_dir)
    data_dir = project_dir / "data"
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    wanted = {"version": VERSION, "customers": customers, "seed": seed, "today": today.isoformat()}
    manifest_path = data_dir / MANIFEST
    manifest = _read_json(manifest_path)
    files = [data_dir / name for name in manifest.get("files", [])] + [project_dir / CHURN_MODEL]
    if {k: manifest.get(k) for k in wanted} == wanted and all(f.is_file() for f in files):
        console.print(f"[dim]demo data for {customers:,} customers (seed {seed}) is up to date "
                      f"in {data_dir}[/dim]")
        return manifest
    with console.status(f"generating demo data for {customers:,} customers (seed {seed})..."):
        paths = generate(data_dir, customers=customers, seed=seed, today=today)
        paths.update(generate_more(data_dir, customers=customers, seed=seed, today=today))
    console.print(f"generated {', '.join(p.name for p in paths.values())} in {data_dir}")
    with console.status("training the churn model (LightGBM)..."):
        metrics = train_churn_model(data_dir / CHURN_HISTORY, project_dir / CHURN_MODEL, seed=seed)
    auc = metrics["auc"]
    console.print(f"trained {CHURN_MODEL}: {metrics['trees']} trees, "
                  f"ROC AUC {'n/a' if auc is None else f'{auc:.3f}'} on {metrics['test_rows']:,} "
                  "held-out customers")
    metrics["model"] = str(CHURN_MODEL)
    manifest = {**wanted, "files": [p.name for p in paths.values()], "churn_model": metrics}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def load_demo_programs(project_dir: Path) -> list[ProgramSpec]:
    """The demo's programs from ``<project>/programs``."""
    directory = Path(project_dir) / "programs"
    missing = [name for name in PROGRAMS if not (directory / f"{name}.yaml").is_file()]
    if missing:
        raise SpecError(str(directory), [("", f"demo program {name}.yaml is missing")
                                         for name in missing])
    return [load_program(directory / f"{name}.yaml") for name in PROGRAMS]


def run_demo(project_dir: Path, store_url: str, customers: int = 20_000, seed: int = 7,
             console: Console | None = None, *, now: datetime | None = None,
             pocs: bool = True, dispatch: bool = True, simulate: bool = True) -> list[RunResult]:
    """Generate the demo data and model (if needed), run the demo programs and print
    their funnels; then (``pocs``) the three ML proofs of concept, (``dispatch``)
    deliver every due candidate through a local SMTP server and the in-app inbox, and
    (``simulate``) measure an A/B test on simulated customers: their engagement and
    purchases come back through the API and the worker, and the uplift report is printed."""
    console = console or Console()
    project_dir = Path(project_dir)
    specs = load_demo_programs(project_dir)
    prepare(project_dir, customers=customers, seed=seed, now=now, console=console)
    context = PluginContext(base_dir=project_dir)
    store = open_store(store_url, context=context)
    try:
        status = console.status("")
        status.start()

        def on_start(spec: ProgramSpec) -> None:
            status.update(f"running {spec.name}...")

        try:
            results = run_programs(specs, store, context, now=now, on_start=on_start)
        finally:
            status.stop()
    finally:
        store.close()
    for spec, result in zip(specs, results, strict=True):
        model = _model_id(spec, context)
        console.print()
        console.print(funnel_table(spec.name, result.funnel, model))
        console.print(_summary(result, model))
    if pocs:
        from ceap.poc import run_all

        results += run_all(project_dir, store_url, console, seed=seed, now=now)
    if dispatch:
        from ceap.demo.delivery import dispatch_demo

        ran = {r.program for r in results if r.ok}
        programs = [*specs, *(load_program(project_dir / "programs" / f"{name}.yaml")
                              for name in sorted(ran - set(PROGRAMS)))]
        store = open_store(store_url, context=context)
        try:
            from ceap.demo.realtime import run_realtime_demo

            live = run_realtime_demo(project_dir, store, console, seed=seed, now=now, customers=customers)
            programs += [load_program(project_dir / "programs" / f"{n}.yaml") for n in live.programs]
            _journeys(programs, store, console, now)
            dispatch_demo(project_dir, store, programs, customers, seed, console)
        finally:
            store.close()
    if simulate:
        from ceap.demo.simulated import run_simulated_demo

        store = open_store(store_url, context=context)
        try:
            run_simulated_demo(project_dir, store, console, seed=seed, now=now,
                               customers=min(customers, 3_000))
        finally:
            store.close()
    return results


def _journeys(programs: list[ProgramSpec], store: Any, console: Console, now: datetime | None) -> None:
    """One journey tick over the demo's journey programs (the first step of each entry)."""
    from ceap.journeys.engine import tick

    journeys = [p for p in programs if p.journey is not None]
    if not journeys:
        return
    stats = tick(store, journeys, now=now)
    console.print()
    console.print(f"[bold]journeys[/bold] ({', '.join(p.name for p in journeys)}): {stats.entered:,} "
                  f"customers entered, {stats.messages:,} messages written for the dispatcher, "
                  f"{stats.refused:,} refused by the re-entry rule; `ceap journey cart_journey --plot` "
                  "draws the steps")


def _model_id(spec: ProgramSpec, context: PluginContext) -> str:
    if spec.scorer is None:
        return "none"
    try:
        return str(default_registry().create("scorer", spec.scorer, context).model_id())
    except Exception:  # a missing model file is reported by the run itself
        return spec.scorer.type


def _summary(result: RunResult, model: str) -> str:
    if not result.ok:
        return f"[red]{result.program} failed:[/red] {result.error or result.run.error}"
    f = result.funnel
    written = result.written.inserted if result.written else f.written
    present = result.written.duplicates if result.written else f.already_present
    again = f", {present:,} already present" if present else ""
    return (f"[bold]{result.program}[/bold]: {written:,} new candidates written{again}; "
            f"{f.held_out:,} held out as control; model {model}")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
