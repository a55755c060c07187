"""The demo's measured experiment: an A/B test with a holdout, on simulated customers.

``discount_offer`` offers a discount to customers drawn from the simulator's world
(``ceap.simulate``), whose response is known: variant ``email_10`` by e-mail,
variant ``inapp_15`` in the app with a stronger offer, 20% held out. The program
runs on the demo's store, the e-mails go to a local SMTP server and the in-app
messages to the inbox; then the customers respond through the real paths: e-mail
readers load the open pixel, follow the tracked link and unsubscribe with one click
(the API's tracking and unsubscribe endpoints), the app reports in-app reads and
clicks, and purchases arrive as events (``POST /v1/events``, the real-time worker).
Attribution and the uplift report follow, printed with the true uplift beside it.

The experiment runs eleven days before the demo's day, so every outcome is in; a
second demo on the same day finds its candidates already present and reports them
again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from ceap.experiments.uplift import UpliftReport
from ceap.simulate.design import Design
from ceap.simulate.experiment import Simulation
from ceap.simulate.population import Arm, World
from ceap.store.base import Store

PROGRAM = "discount_offer"
FOLDER = Path("data") / "simulated"
DESIGN = Design(name=PROGRAM, arms=(Arm("email_10", "email", lift=1.0), Arm("inapp_15", "inapp", lift=1.5)),
                holdout=0.2, template=PROGRAM)


@dataclass
class SimulatedDemo:
    report: UpliftReport
    truth: dict[str, float]
    new_candidates: int


def _pct(value: float | None, sign: bool = False) -> str:
    return "-" if value is None else (f"{value:+.2%}" if sign else f"{value:.2%}")


def _interval(ci: tuple[float, float] | None) -> str:
    return "-" if ci is None else f"[{ci[0]:+.2%}, {ci[1]:+.2%}]"


def uplift_table(report: UpliftReport, truth: dict[str, float]) -> Table:
    """The holdout, then each comparison (all treated, each variant) against it, with the
    true uplift beside the measured one (fits in 80 columns)."""
    table = Table(title=f"{report.program}: uplift against the holdout (n: customers)",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True)
    for column in ("group", "n", "bought", "rate", "uplift", "95% interval", "p", "truth"):
        table.add_column(column, justify="left" if column == "group" else "right", no_wrap=True)
    control = report.arms.get("holdout")
    if control is not None:
        table.add_row("holdout", f"{control.customers:,}", f"{control.converted:,}",
                      _pct(control.rate), "", "", "", "")
    for c in [*report.comparisons, *report.groups]:
        label = "all treated" if c.label == "treatment vs holdout" else c.label
        p = "-" if c.p_value is None else ("<0.0001" if c.p_value < 1e-4 else f"{c.p_value:.4f}")
        true = truth.get(c.label)
        table.add_row(label, f"{c.treated.customers:,}", f"{c.treated.converted:,}",
                      _pct(c.treated.rate), _pct(c.absolute_uplift, sign=True), _interval(c.absolute_ci),
                      p, "-" if true is None else f"{true:+.2%}")
    return table


def experiment_start(now: datetime) -> datetime:
    """10:00 UTC, twelve days before ``now``'s day: the same all day long."""
    day = now.astimezone(UTC).replace(hour=10, minute=0, second=0, microsecond=0)
    return day - timedelta(days=12)


def run_simulated_demo(project_dir: Path, store: Store, console: Console, *, seed: int = 7,
                       now: datetime | None = None, customers: int = 3_000) -> SimulatedDemo:
    """Run ``discount_offer`` over ``customers`` simulated customers, let them respond,
    attribute, and print the uplift report (see the module doc)."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    start = experiment_start(now)
    world = World(size=100_000, seed=seed)
    sim = Simulation(world, DESIGN, Path(project_dir) / FOLDER, seed=seed, store=store, start=start,
                     id_prefix="S", event_prefix=f"{start:%Y%m%d}")
    try:
        with console.status(f"simulated experiment {PROGRAM}: run, dispatch, customers respond..."):
            done = sim.round(customers)
            attributed = sim.platform.attribute(sim.settle()).inserted
            report = sim.platform.report(sim.settle(), by="variant", since=start)
        mailbox = sim.platform.mailbox
        sent_mail = len(mailbox) if mailbox is not None else 0
    finally:
        sim.close()
    truth = {"treatment vs holdout": world.true_uplift(DESIGN.arms),
             **{a.name: world.true_uplift([a]) for a in DESIGN.arms}}
    written = done.run.written.inserted if done.run.written else 0
    console.print()
    console.print(f"[bold]{PROGRAM}[/bold]: A/B test on simulated customers, known response "
                  f"(run {start:%Y-%m-%d})")
    console.print(f"  {written:,} new candidates, {DESIGN.holdout:.0%} held out; variants "
                  + ", ".join(f"{a.name} ({a.channel})" for a in DESIGN.arms))
    if written:
        inapp = sum(ch == "inapp" and sent is not None
                    for ch, sent in zip(done.contacts.channel, done.contacts.sent_at, strict=True))
        counts = {k.split()[0]: n for k, n in done.followed.items()}
        follows = ", ".join(f"{counts[k]:,} {k}s" for k in ("open", "click", "unsubscribe")
                            if k in counts) or "nothing"
        console.print(f"  sent {sent_mail:,} e-mails (local SMTP server) and {inapp:,} in-app messages")
        console.print(f"  e-mail tracking endpoints: {follows}")
        console.print(f"  {done.events:,} events (purchases, in-app reads, clicks) via POST /v1/events "
                      "+ worker")
        console.print(f"  {attributed:,} conversions attributed")
    console.print(uplift_table(report, truth))
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    console.print(f"[dim]full report: ceap --store <demo store> report uplift {PROGRAM} --by variant[/dim]")
    return SimulatedDemo(report, truth, written)


__all__ = ["DESIGN", "PROGRAM", "SimulatedDemo", "experiment_start", "run_simulated_demo"]
