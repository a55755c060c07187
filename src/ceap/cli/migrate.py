"""``ceap migrate``: bring the store's schema to the newest revision, print its SQL, or say
where it stands (``ceap.store.migrations``)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from ceap.cli.common import app, err, mask, out, state

migrate_app = typer.Typer(help="Schema migrations of the store: upgrade, print the SQL, status.",
                          no_args_is_help=False)
app.add_typer(migrate_app, name="migrate")


def _sql_store(project: Any) -> Any:
    """The store, opened without upgrading it; its SQL part when candidates live elsewhere."""
    from ceap.store import open_store

    url = project.store_url(state.store)
    try:
        store = open_store(url, migrate=False, context=project.context(state.tenant),
                           candidates=project.candidate_store)
    except Exception as exc:
        err.print(f"[red]error:[/red] cannot open store {mask(url)}: {exc}")
        raise typer.Exit(1) from None
    return getattr(store, "sql", store)


def _name(revision: str | None) -> str:
    return revision or "none (made before versioned migrations, or empty)"


@migrate_app.callback(invoke_without_command=True)
def migrate(
    ctx: typer.Context,
    sql: Annotated[bool, typer.Option(
        "--sql", help="print the SQL that builds a new database instead (no connection)")] = False,
) -> None:
    """Upgrade the store's schema to the newest revision (stores also do it when they open)."""
    if ctx.invoked_subcommand is not None:
        return
    from ceap.store.migrations import offline_sql, upgrade

    project = state.project()
    if sql:
        scheme = project.store_url(state.store).split(":", 1)[0].split("+", 1)[0]
        dialect = {"sqlite": "sqlite", "postgresql": "postgresql", "postgres": "postgresql"}.get(scheme)
        if dialect is None:
            err.print(f"--sql: a {scheme!r} store has no SQL schema", highlight=False)
            raise typer.Exit(2)
        offline_sql(dialect, sys.stdout)
        return
    store = _sql_store(project)
    try:
        before = upgrade(store)
    except TypeError as exc:
        err.print(f"error: {exc}", highlight=False)
        raise typer.Exit(2) from None
    finally:
        store.close()
    if before.pending:
        out.print(f"upgraded to {before.head} from {_name(before.current)}: "
                  f"applied {', '.join(before.pending)}", highlight=False)
    else:
        out.print(f"already at {before.head}, the newest revision", highlight=False)


@migrate_app.command("status")
def migrate_status() -> None:
    """Where the store's schema stands; exit 1 when revisions are pending."""
    from ceap.store.migrations import status

    store = _sql_store(state.project())
    try:
        found = status(store)
    except TypeError as exc:
        err.print(f"error: {exc}", highlight=False)
        raise typer.Exit(2) from None
    finally:
        store.close()
    if found.up_to_date:
        out.print(f"at {found.current}: up to date", highlight=False)
        return
    out.print(f"at {_name(found.current)}: behind, {len(found.pending)} revision(s) to apply "
              f"({', '.join(found.pending)}); run `ceap migrate`", highlight=False)
    raise typer.Exit(1)
