"""``ceap customer export|delete|consent``: a customer's data, its deletion and their
consent history, without SQL (see docs/privacy.md)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from ceap.cli.common import JsonOption, app, err, out, state
from ceap.cli.output import Column, Sheet, json_default, show, write

customer_app = typer.Typer(help="A customer's data: export, delete, consent history.", no_args_is_help=True)
app.add_typer(customer_app, name="customer")

CustomerId = Annotated[str, typer.Argument(help="the customer's id")]


def _project() -> tuple[Any, str]:
    project = state.project()
    return project, state.tenant or project.tenant


@customer_app.command("export")
def export(
    customer: CustomerId,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write the JSON here "
                                                                       "(default: standard output)")] = None,
) -> None:
    """Everything the store holds about a customer, as one JSON document (table -> rows)."""
    from ceap.audit import cli_actor, cli_source
    from ceap.privacy import export_customer

    project, tenant = _project()
    store = state.open_store(project)
    try:
        data = export_customer(store, tenant, customer, actor=cli_actor(), source=cli_source())
    finally:
        store.close()
    text = json.dumps(data, default=json_default, ensure_ascii=False, indent=1)
    if output is None:
        write(text)
    else:
        output.write_text(text + "\n", encoding="utf-8")
    rows = sum(len(r) for r in data["tables"].values())
    err.print(f"exported {rows:,} row(s) of customer {customer}" + (f" to {output}" if output else ""),
              markup=False, highlight=False)


@customer_app.command("delete")
def delete(
    customer: CustomerId,
    yes: Annotated[bool, typer.Option("--yes", help="do it (without it nothing is deleted)")] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="why (kept in the audit log)")] = None,
    as_json: JsonOption = False,
) -> None:
    """Delete everything about a customer at once, keeping only a hashed tombstone."""
    from ceap.audit import cli_actor, cli_source
    from ceap.privacy import delete_customer
    from ceap.privacy.redis_state import erase_redis_state

    if not yes:
        err.print(f"customer delete: this deletes every row about {customer} for good; "
                  "add --yes to do it", markup=False, highlight=False)
        raise typer.Exit(2)
    project, tenant = _project()
    store = state.open_store(project)
    try:
        report = delete_customer(store, tenant, customer, actor=cli_actor(), source=cli_source(),
                                 reason=reason)
    finally:
        store.close()
    if project.state:  # real-time state shared in Redis
        report.deleted["redis_state"] = erase_redis_state(project.state, tenant, customer)
    sheet = Sheet(f"customer deleted (tombstone {report.customer_hash[:12]}...)",
                  [Column("table"), Column("action"), Column("rows", right=True)])
    for table, n in sorted(report.deleted.items()):
        sheet.add(table, "deleted", n)
    for table, n in sorted(report.redacted.items()):
        sheet.add(table, "redacted", n)
    show(sheet, as_json, records={**asdict(report), "rows": report.rows})
    err.print(f"deleted {report.rows:,} row(s); tombstone sha256 {report.customer_hash}",
              markup=False, highlight=False)


@customer_app.command("consent")
def consent(
    customer: CustomerId,
    history: Annotated[bool, typer.Option("--history", help="every change, oldest first, instead "
                                                            "of the consent now")] = False,
    as_json: JsonOption = False,
) -> None:
    """A customer's consent per channel and topic now, or (--history) every change of it."""
    from ceap.delivery.consent_store import consent_history, list_consent

    project, tenant = _project()
    store = state.open_store(project)
    rows: list[Any] = []
    try:
        if history:
            changes = consent_history(store, tenant, customer)
            sheet = Sheet(f"{len(changes)} consent change(s) of {customer}", [
                Column("at"), Column("channel"), Column("topic"), Column("old_granted", "old"),
                Column("new_granted", "new"), Column("source"), Column("actor")])
            for c in changes:
                sheet.add(c.at, c.channel, c.topic, c.old_granted, c.new_granted, c.source, c.actor)
            show(sheet, as_json, records=[asdict(c) for c in changes])
        else:
            rows = list_consent(store, tenant, customer)
            sheet = Sheet(f"consent of {customer}", [Column("channel"), Column("topic"), Column("granted"),
                                                     Column("source"), Column("updated_at", "updated")])
            for r in rows:
                sheet.add(r.channel, r.topic, r.granted, r.source, r.updated_at)
            show(sheet, as_json, records=[asdict(r) for r in rows])
    finally:
        store.close()
    if not as_json and not history and not rows:
        err.print(f"no consent recorded for {customer}", markup=False, highlight=False)


@customer_app.command("consent-import")
def consent_import(
    path: Annotated[Path, typer.Argument(help="CSV or JSON Lines file: customer_id, channel, granted"
                                              "[, topic, source]")],
    source: Annotated[str, typer.Option(help="the source recorded for rows without a source "
                                             "column")] = "import",
) -> None:
    """Record consent from a file (a sign-up export, an opt-in list), all rows or none."""
    import csv

    from ceap.audit import cli_actor, cli_source
    from ceap.delivery.consent_import import import_consent, parse_rows
    from ceap.json_input import json_lines

    if not path.is_file() or path.suffix.lower() not in (".csv", ".jsonl"):
        err.print(f"{path}: {'expected a .csv or .jsonl file' if path.is_file() else 'file not found'}",
                  markup=False, highlight=False)
        raise typer.Exit(2)
    problems: list[str] = []
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as f:
            records: list[dict[str, Any]] = list(csv.DictReader(f))
    else:
        parsed, broken = json_lines(path.read_bytes())
        problems += [f"line {n}: {reason}" for n, reason in broken]
        records = [v for _, v in parsed if isinstance(v, dict)]
        problems += [f"line {n}: not a JSON object" for n, v in parsed if not isinstance(v, dict)]
    rows, bad = parse_rows(records, source) if not problems else ([], [])
    problems += bad
    if problems:
        for line in problems[:20]:
            err.print(f"{path}: {line}", markup=False, highlight=False)
        err.print(f"{path}: {len(problems):,} problem(s); nothing was recorded", markup=False,
                  highlight=False)
        raise typer.Exit(2)
    project, tenant = _project()
    store = state.open_store(project)
    try:
        recorded, skipped = import_consent(store, tenant, rows, actor=cli_actor(), origin=cli_source())
    finally:
        store.close()
    out.print(f"recorded {recorded:,} consent row(s)", markup=False, highlight=False)
    unknown = sorted({r.channel for r in rows} - set(project.channels) - {"inapp"})
    if unknown:  # consent is looked up by channel name: "SMS" never matches a channel "sms"
        err.print(f"warning: no channel named {', '.join(unknown)} in ceap.yaml; the consent "
                  "policy looks consent up by channel name", markup=False, highlight=False)
    if skipped:
        err.print(f"{skipped:,} row(s) of deleted customers skipped (docs/privacy.md)", markup=False,
                  highlight=False)
