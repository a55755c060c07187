"""``ceap apikey create|list|revoke`` and ``ceap audit``: API keys and the audit log
without SQL (see docs/operations-admin.md)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated

import typer

from ceap.cli.common import JsonOption, app, err, out, state
from ceap.cli.output import Column, Sheet, show

apikey_app = typer.Typer(help="API keys of the HTTP API: create, list, revoke.", no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")


def _tenant() -> tuple[object, str]:
    project = state.project()
    return project, state.tenant or project.tenant


def _until(expires: str | None) -> datetime | None:
    """``--expires``: a duration from now (``90d``) or an ISO 8601 time."""
    if expires is None:
        return None
    from ceap.durations import parse_duration
    from ceap.model import utcnow
    from ceap.store.schema import from_iso

    try:
        return utcnow() + parse_duration(expires)
    except ValueError:
        pass
    try:
        when = from_iso(expires.replace("Z", "+00:00"))
    except ValueError:
        err.print(f"--expires {expires!r}: expected a duration (90d, 12h) or an ISO 8601 time "
                  "(2027-01-31T00:00:00Z)", markup=False, highlight=False)
        raise typer.Exit(2) from None
    assert when is not None
    return when


@apikey_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="what the key is for")],
    scope: Annotated[list[str] | None, typer.Option(
        "--scope", help="read, ingest or admin; repeat or comma-separate (default: read,ingest)")] = None,
    expires: Annotated[str | None, typer.Option(
        "--expires", help="when it stops working: a duration from now (90d) or an ISO 8601 time")] = None,
) -> None:
    """Create an API key for the tenant; it is printed once and stored hashed."""
    from ceap.api.auth import DEFAULT_SCOPES, ApiKeyError, create_key
    from ceap.audit import cli_actor, cli_source

    project, tenant = _tenant()
    until = _until(expires)
    store = state.open_store(project)  # type: ignore[arg-type]
    try:
        key = create_key(store, tenant, name, scopes=scope or DEFAULT_SCOPES, expires_at=until,
                         actor=cli_actor(), source=cli_source())
    except ApiKeyError as exc:
        err.print(f"apikey create: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    finally:
        store.close()
    out.print(key, markup=False, highlight=False)
    err.print("store it now: only its hash is kept")


@apikey_app.command("list")
def list_(as_json: JsonOption = False) -> None:
    """The tenant's keys (never the keys themselves): id, name, scopes, status."""
    from ceap.api.auth import list_keys
    from ceap.model import utcnow

    project, tenant = _tenant()
    store = state.open_store(project)  # type: ignore[arg-type]
    try:
        keys = list_keys(store, tenant)
    finally:
        store.close()
    now = utcnow()
    sheet = Sheet(f"{len(keys)} API key(s)", [
        Column("id"), Column("name"), Column("scopes"), Column("status"), Column("created_at", "created"),
        Column("expires_at", "expires"), Column("revoked_at", "revoked")])
    for k in keys:
        sheet.add(k.id, k.name, list(k.scopes), k.status(now), k.created_at, k.expires_at, k.revoked_at)
    show(sheet, as_json, records=[{**asdict(k), "scopes": list(k.scopes), "status": k.status(now)}
                                  for k in keys])


@apikey_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="the key's id from `ceap apikey list` (6+ hex digits)")],
    reason: Annotated[str | None, typer.Option("--reason", help="why (kept in the audit log)")] = None,
) -> None:
    """Revoke a key: every server process refuses it from the next request on."""
    from ceap.api.auth import ApiKeyError, revoke_key
    from ceap.audit import cli_actor, cli_source

    project, tenant = _tenant()
    store = state.open_store(project)  # type: ignore[arg-type]
    try:
        key = revoke_key(store, tenant, key_id, actor=cli_actor(), source=cli_source(), reason=reason)
    except ApiKeyError as exc:
        err.print(f"apikey revoke: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    finally:
        store.close()
    was = " (it was already revoked)" if key.revoked_at else ""
    out.print(f"revoked {key.id} ({key.name}){was}", markup=False, highlight=False)


@app.command()
def audit(
    action: Annotated[str | None, typer.Option(help="an action or its prefix: consent, apikey, "
                                                    "delivery, customer, consent.revoke...")] = None,
    target: Annotated[str | None, typer.Option(
        help="e.g. delivery:42, customer:C042, apikey:3f2a...")] = None,
    actor: Annotated[str | None, typer.Option(help="e.g. cli:alice, apikey:3f2a...")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 100,
    as_json: JsonOption = False,
) -> None:
    """The audit log, newest first: who did what to what, when and from where."""
    from ceap.audit import query

    project, tenant = _tenant()
    store = state.open_store(project)  # type: ignore[arg-type]
    try:
        entries = query(store, tenant, action=action, target=target, actor=actor, limit=limit)
    finally:
        store.close()
    sheet = Sheet(f"{len(entries)} audit entr{'y' if len(entries) == 1 else 'ies'}", [
        Column("at"), Column("actor"), Column("action"), Column("target"), Column("detail"),
        Column("source"), Column("id", right=True, in_table=False)])
    for e in entries:
        sheet.add(e.at, e.actor, e.action, e.target, e.detail, e.source, e.id)
    show(sheet, as_json, records=[asdict(e) for e in entries])
