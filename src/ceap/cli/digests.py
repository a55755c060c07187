"""``ceap digests``: the digests of the store, open (items held) or sent (docs/digests.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from ceap.cli.common import JsonOption, app, state
from ceap.cli.output import Column, Sheet, show


@app.command("digests")
def digests(
    customer: Annotated[str | None, typer.Option(help="one customer's digests")] = None,
    key: Annotated[str | None, typer.Option(help="one digest key")] = None,
    status: Annotated[str | None, typer.Option(help="open (items still held) or sent")] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many digests")] = 100,
    as_json: JsonOption = False,
) -> None:
    """Digests, latest due first: customer, key, window, when due, items held, and the
    digest message (a candidate: `ceap candidates`, `ceap deliveries --candidate ID`)."""
    from ceap.delivery.digest_store import list_digests

    if status not in (None, "open", "sent"):
        raise typer.BadParameter("expected open or sent", param_hint="--status")
    project = state.project()
    store = state.open_store(project)
    try:
        rows = list_digests(store, state.tenant or project.tenant, customer, key, status, limit)
    finally:
        store.close()
    sheet = Sheet("digests", [Column("customer_id", "customer"), Column("key"), Column("program"),
                              Column("window_start", "window from"), Column("due_at", "due"),
                              Column("items", right=True), Column("status"),
                              Column("message_id", "message", right=True)])
    for r in rows:
        sheet.add(r.customer_id, r.key, r.program, r.window_start, r.due_at, r.items,
                  "open" if r.message_id is None else "sent", r.message_id)
    show(sheet, as_json)
