"""``ceap report ...``: reports over what the platform decided and delivered.

``ceap report shadow`` puts shadow decisions (programs in shadow mode, channels
configured ``shadow: true``) next to live ones; see ``ceap.delivery.shadow_report``.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from ceap.cli.common import JsonOption, app, err, state
from ceap.cli.output import Column, Sheet, show
from ceap.model import utcnow

if TYPE_CHECKING:
    from ceap.delivery.shadow_report import Overlap, ShadowComparison


report_app = typer.Typer(help="Reports over what the platform decided and delivered.",
                         no_args_is_help=True)
app.add_typer(report_app, name="report")


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S} UTC" if value else "-"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {name}" for name, n in counts.items()) or "0"


def _overlap(label: str, o: Overlap | None) -> str | None:
    if o is None:
        return None
    j = f" (Jaccard {o.jaccard:.2f})" if o.jaccard is not None else ""
    return f"{label}: {o.shadow_only:,} shadow only, {o.both:,} both, {o.live_only:,} live only{j}"


def comparison_table(c: ShadowComparison) -> Table:
    from ceap.delivery.shadow_report import Outcomes

    sides: list[Outcomes] = [c.shadow, *([c.live] if c.live else [])]
    title = f"shadow {c.shadow.program}" + (f" vs live {c.live.program}" if c.live else "")
    table = Table(title=title, title_justify="left")
    table.add_column("")
    table.add_column(f"shadow: {c.shadow.program}", justify="right")
    if c.live:
        table.add_column(f"live: {c.live.program}", justify="right")
    table.add_row("decisions (deliveries)", *(f"{o.decisions:,}" for o in sides))
    table.add_row("candidates", *(f"{o.candidates:,}" for o in sides))
    table.add_row("customers", *(f"{o.customers:,}" for o in sides))
    table.add_row("would send (shadow)", *(f"{o.would_send:,}" for o in sides))
    table.add_row("sent or delivered", *(f"{o.sent:,}" for o in sides))
    statuses = sorted({s for o in sides for s in o.statuses})
    for status in statuses:
        table.add_row(f"  status {status}", *(f"{o.statuses.get(status, 0):,}" for o in sides))
    for channel in sorted({ch for o in sides for ch in o.channels}):
        table.add_row(f"  channel {channel}", *(_counts(o.channels.get(channel, {})) for o in sides))
    for policy in sorted({p for o in sides for p in o.policies}):
        table.add_row(f"  suppressed by {policy}", *(f"{o.policies.get(policy, 0):,}" for o in sides))
    return table


def samples_table(c: ShadowComparison) -> Table:
    table = Table(title=f"what {c.shadow.program} would have sent (first {len(c.samples)})",
                  title_justify="left")
    for column in ("delivery", "candidate", "customer", "channel", "would have sent"):
        table.add_column(column)
    for w in c.samples:
        table.add_row(str(w.delivery_id), str(w.candidate_id), w.customer_id, w.channel, w.detail or "")
    return table


def _figures(c: ShadowComparison) -> list[tuple[str, list[object]]]:
    """``(metric, [shadow value, live value])`` for every figure of a comparison."""
    from ceap.delivery.shadow_report import Outcomes

    sides: list[Outcomes] = [c.shadow, *([c.live] if c.live else [])]
    out: list[tuple[str, list[object]]] = [
        (m, [getattr(o, m) for o in sides])
        for m in ("decisions", "candidates", "customers", "would_send", "sent")]
    out += [(f"status {s}", [o.statuses.get(s, 0) for o in sides])
            for s in sorted({s for o in sides for s in o.statuses})]
    out += [(f"channel {ch} {s}", [o.channels.get(ch, {}).get(s, 0) for o in sides])
            for ch in sorted({ch for o in sides for ch in o.channels})
            for s in sorted({s for o in sides for s in o.channels.get(ch, {})})]
    out += [(f"suppressed by {p}", [o.policies.get(p, 0) for o in sides])
            for p in sorted({p for o in sides for p in o.policies})]
    out += [("since", [c.since]), ("until", [c.until])]
    for name, overlap in (("decided", c.decided), ("messaged", c.messaged)):
        if overlap is not None:
            out += [(f"{name} {part}", [getattr(overlap, part)])
                    for part in ("shadow_only", "both", "live_only", "jaccard")]
    return out


def comparison_sheets(found: list[ShadowComparison]) -> list[Sheet]:
    """Every comparison as rows of ``metric, shadow, live`` (statuses, channels and policies
    flattened into metric names), then every sample: for tab-separated output."""
    numbers = Sheet("comparisons", [Column("shadow_program"), Column("live_program"), Column("metric"),
                                    Column("shadow"), Column("live")])
    samples = Sheet("samples", [Column("shadow_program"), Column("delivery_id"), Column("candidate_id"),
                                Column("customer_id"), Column("channel"), Column("would_send")])
    for c in found:
        live = c.live.program if c.live else None
        for metric, values in _figures(c):
            numbers.add(c.shadow.program, live, metric, *values, *[None] * (2 - len(values)))
        for w in c.samples:
            samples.add(c.shadow.program, w.delivery_id, w.candidate_id, w.customer_id, w.channel, w.detail)
    return [numbers, *([samples] if samples.rows else [])]


def _for_people(found: list[ShadowComparison], since: str | None, console: Console) -> None:
    if not found:
        console.print("no shadow decisions" + (f" in the last {since}" if since else ""))
        return
    for c in found:
        if c.empty:
            err.print(f"[yellow]{c.shadow.program} has no shadow decisions"
                      f"{' in the last ' + since if since else ''}[/yellow]")
        console.print(comparison_table(c))
        console.print(f"window: {_when(c.since)} to {_when(c.until)}", highlight=False)
        for line in (_overlap("customers decided on", c.decided),
                     _overlap("customers messaged (would send vs sent)", c.messaged)):
            if line:
                console.print(line, highlight=False)
        if c.samples:
            console.print(samples_table(c))


@report_app.command("shadow")
def shadow(
    shadow_program: Annotated[str | None, typer.Option(
        "--shadow", "--program", help="the program whose shadow decisions to report "
                                      "(default: every program with shadow decisions)")] = None,
    live: Annotated[str | None, typer.Option(
        help="its live counterpart, compared over the same window")] = None,
    since: Annotated[str | None, typer.Option(
        help="only decisions of the last 30m, 1d, 7d, ... (default: from the shadow program's "
             "first decision to its last)")] = None,
    samples: Annotated[int, typer.Option(min=0, help="would-be messages to list")] = 10,
    as_json: JsonOption = False,
) -> None:
    """Compare shadow decisions with live ones: what would have been sent, and to whom."""
    from ceap.delivery.shadow_report import compare_shadow, shadow_report
    from ceap.durations import parse_duration

    if live and not shadow_program:
        err.print("--live needs --shadow (the program to compare it with)", highlight=False)
        raise typer.Exit(2)
    try:
        window = parse_duration(since) if since else None
    except ValueError as exc:
        err.print(f"--since: {exc}", highlight=False)
        raise typer.Exit(2) from None
    until = utcnow() if window is not None else None
    start = until - window if until is not None and window is not None else None
    project = state.project()
    tenant = state.tenant or project.tenant
    store = state.open_store(project)
    try:
        if shadow_program:
            found = [compare_shadow(store, tenant, shadow_program, live, since=start, until=until,
                                    samples=samples)]
        else:
            found = shadow_report(store, tenant, since=start, until=until, samples=samples)
    finally:
        store.close()
    if not found and not as_json:
        err.print("no shadow decisions" + (f" in the last {since}" if since else ""))
    show(comparison_sheets(found), as_json, records=[asdict(c) for c in found],
         for_people=lambda console: _for_people(found, since, console))
