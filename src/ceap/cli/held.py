"""``ceap deliveries resend|mark-sent|drop``: resolve deliveries a crash left
held (status ``ambiguous``) and dead letters without SQL. See ``ceap.delivery.held``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from ceap.cli.common import err, out, state
from ceap.cli.delivery import deliveries_app
from ceap.model import utcnow

if TYPE_CHECKING:
    from ceap.delivery.held import Action


Ids = Annotated[list[int] | None, typer.Argument(help="delivery ids (see `ceap deliveries --status "
                                                      "ambiguous`)", show_default=False)]
Reason = Annotated[str, typer.Option("--reason", help="why (kept in the delivery's events and the "
                                                     "audit log)")]
AllHeld = Annotated[bool, typer.Option("--all-ambiguous", help="every held delivery of the tenant "
                                                               "(narrowed by --channel, --program)")]
AllDead = Annotated[bool, typer.Option("--all-dead", help="every dead delivery of the tenant "
                                                          "(narrowed by --channel, --program)")]
ChannelOpt = Annotated[str | None, typer.Option("--channel", help="only this channel")]
ProgramOpt = Annotated[str | None, typer.Option("--program", help="only this program")]

_DONE = {"resend": "requeued for sending", "mark-sent": "recorded as sent", "drop": "dropped (cancelled)"}


def _resolve(action: Action, ids: list[int] | None, reason: str, all_held: bool,
             channel: str | None, program: str | None, all_dead: bool = False) -> None:
    from ceap.audit import cli_actor, cli_source
    from ceap.delivery.held import ResolveError, resolve

    if bool(ids) + all_held + all_dead != 1:
        err.print(f"deliveries {action}: give delivery ids, --all-ambiguous or --all-dead (one of them)",
                  highlight=False)
        raise typer.Exit(2)
    project = state.project()
    store = state.open_store(project)
    try:
        done = resolve(store, state.tenant or project.tenant, action, reason, utcnow(),
                       ids=ids or (), channel=channel, program=program,
                       status="dead" if all_dead else "ambiguous", actor=cli_actor(), source=cli_source())
    except ResolveError as exc:
        err.print(f"deliveries {action}: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    finally:
        store.close()
    shown = ", ".join(str(d.id) for d in done[:20]) + (", ..." if len(done) > 20 else "")
    kind = "dead" if all_dead else "held"
    out.print(f"{len(done):,} {kind} delivery(ies) {_DONE[action]}" + (f": {shown}" if done else ""),
              highlight=False)


@deliveries_app.command("resend")
def resend(ids: Ids = None, *, reason: Reason, all_ambiguous: AllHeld = False, all_dead: AllDead = False,
           channel: ChannelOpt = None, program: ProgramOpt = None) -> None:
    """Send held or dead deliveries again (same idempotency key) at the next `ceap dispatch`."""
    _resolve("resend", ids, reason, all_ambiguous, channel, program, all_dead)


@deliveries_app.command("mark-sent")
def mark_sent(ids: Ids = None, *, reason: Reason, all_ambiguous: AllHeld = False, all_dead: AllDead = False,
              channel: ChannelOpt = None, program: ProgramOpt = None) -> None:
    """Record held or dead deliveries as sent (the provider has them); nothing is sent."""
    _resolve("mark-sent", ids, reason, all_ambiguous, channel, program, all_dead)


@deliveries_app.command("drop")
def drop(ids: Ids = None, *, reason: Reason, all_ambiguous: AllHeld = False, all_dead: AllDead = False,
         channel: ChannelOpt = None, program: ProgramOpt = None) -> None:
    """End held or dead deliveries without sending them (status cancelled)."""
    _resolve("drop", ids, reason, all_ambiguous, channel, program, all_dead)
