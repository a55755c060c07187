"""Simulated experiments on the real platform, with a known true uplift.

A :class:`Simulation` is one program on one store. Each :meth:`Simulation.round`
draws a fresh cohort of customers from the world (new ids), runs the program
over it, dispatches, lets the customers respond (see ``ceap.simulate.responses``)
and sends what they did back through the API: purchases and app-reported
engagement as events (``POST /v1/events``, consumed by the real-time worker),
e-mail opens, clicks and unsubscribes by following the e-mail's own links.
Rounds are ``spacing`` apart, so each round's outcomes are final before the next
run (which, with a bandit, learns from them).

:func:`run_experiment` is one round followed by attribution and the uplift report,
with the truth to compare it with.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ceap.experiments.bandit import latest_shares
from ceap.experiments.uplift import UpliftReport
from ceap.runtime import RunResult
from ceap.simulate.design import Design
from ceap.simulate.platform import Platform
from ceap.simulate.population import World
from ceap.simulate.responses import Contacts, Outcomes, draw_outcomes, engagement_events
from ceap.store.base import Store
from ceap.testing import FakeClock

#: a fixed start for simulations that are not given one (a Monday, 10:00 UTC)
START = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
SEND_AFTER = timedelta(minutes=1)
SIGNING_ENV = "CEAP_SIGNING_SECRET"


@dataclass
class Round:
    """One run of the program over one cohort, and what followed."""

    number: int
    at: datetime
    run: RunResult
    contacts: Contacts
    outcomes: Outcomes
    #: the shares the run assigned with (None: the variants' weights)
    shares: dict[str, float] | None
    events: int
    #: treated customers whose contact differs from what the world says their channel
    #: reaches (0 when the platform delivered exactly to the reachable ones)
    unexpected_contacts: int
    followed: dict[str, int] = field(default_factory=dict)
    #: the events sent to ``POST /v1/events`` (purchases, app-reported engagement)
    sent: list[dict[str, Any]] = field(default_factory=list)

    def treated_by_variant(self, design: Design) -> dict[str, int]:
        counts = {a.name: 0 for a in design.arms}
        for arm, variant in zip(self.contacts.arm, self.contacts.variant, strict=True):
            if arm == "treatment":
                counts[design.arm(variant).name] += 1
        return counts


class Simulation:
    """One program of ``design`` over the world, on a store; see the module doc."""

    def __init__(self, world: World, design: Design, project_dir: Path, *, seed: int,
                 store_url: str | None = None, store: Store | None = None,
                 start: datetime = START, spacing: timedelta | None = None,
                 id_prefix: str = "s", event_prefix: str = "", global_control: float = 0.0,
                 delivery: dict[str, Any] | None = None):
        self.world = world
        self.design = design
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.start = start
        self.spacing = spacing or design.within + timedelta(days=4)
        self.prefix = id_prefix
        #: event ids are ``<id_prefix><event_prefix><round>:...``: a new event prefix makes
        #: new events for the same customers (a repeated demo)
        self.event_prefix = event_prefix
        self.clock = FakeClock(start)
        if any(a.channel == "email" for a in design.arms):
            os.environ.setdefault(SIGNING_ENV, secrets.token_urlsafe(32))  # local runs only
        self.platform = Platform(project_dir, design, self.clock, store_url=store_url, store=store,
                                 global_control=global_control, delivery=delivery)
        self.rounds: list[Round] = []
        self.rows: dict[str, int] = {}

    def cohort(self, customers: int, number: int) -> pa.Table:
        """``customers`` fresh customers drawn from the world, with their profiles' e-mail."""
        rows = self.world.sample(customers, int(self.rng.integers(2**63)))
        ids = [f"{self.prefix}{number:03d}-{i:06d}" for i in range(customers)]
        self.rows.update(zip(ids, rows.tolist(), strict=True))
        table = self.world.table(rows, ids)
        emails = [f"{c.lower()}@sim.example" if ok else None
                  for c, ok in zip(ids, self.world.email[rows], strict=True)]
        return table.append_column("email", pa.array(emails, pa.string()))

    def round(self, customers: int) -> Round:
        """Run, dispatch and respond for a fresh cohort (see the module doc)."""
        number = len(self.rounds)
        at = self.start + number * self.spacing
        platform = self.platform
        cohort = self.cohort(customers, number)
        run = platform.run(cohort, at)  # with a bandit: attributes and updates the shares first
        shares = latest_shares(platform.store, platform.context.tenant, self.design.name)
        platform.dispatch(at + SEND_AFTER)
        contacts = platform.contacts(run.run.run_id)
        prefix = f"{self.prefix}{self.event_prefix}{number:03d}"
        outcomes = draw_outcomes(self.world, self.rows, self.design, contacts, self.rng, prefix)
        followed: dict[str, int] = {}
        reported = [e for e in outcomes.engagements if e.channel != "email"]
        if platform.mailbox is not None:
            followed = platform.follow([e for e in outcomes.engagements if e.channel == "email"])
        events = [*outcomes.goal_events, *engagement_events(reported, prefix)]
        accepted = platform.ingest(events, at + self.spacing - timedelta(hours=1))
        done = Round(number, at, run, contacts, outcomes, shares if self.design.bandit else None,
                     accepted, self._unexpected(contacts), followed, events)
        self.rounds.append(done)
        return done

    def _unexpected(self, contacts: Contacts) -> int:
        wrong = 0
        for customer, arm, variant, sent in zip(contacts.customer_id, contacts.arm, contacts.variant,
                                                contacts.sent_at, strict=True):
            if arm != "treatment":
                wrong += sent is not None
                continue
            channel = self.design.arm(variant).channel
            reachable = bool(self.world.reachable(channel, np.array([self.rows[customer]]))[0])
            wrong += reachable != (sent is not None)
        return wrong

    def replay(self, done: Round) -> int:
        """Send a round's events again (a client retrying, a stream redelivering)."""
        return self.platform.ingest(done.sent, self.settle())

    def settle(self) -> datetime:
        """The time when every round's outcomes are in: after the last round's spacing."""
        return self.start + len(self.rounds) * self.spacing

    def close(self) -> None:
        self.platform.close()


@dataclass
class ExperimentResult:
    """One simulated experiment: the truth, the report, and how the run went."""

    seed: int
    truth: float
    report: UpliftReport
    round: Round
    attributed: int
    timings: dict[str, float]

    @property
    def estimate(self) -> float | None:
        return self.report.comparisons[0].absolute_uplift if self.report.comparisons else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return self.report.comparisons[0].absolute_ci if self.report.comparisons else None

    @property
    def covered(self) -> bool | None:
        ci = self.interval
        return None if ci is None else ci[0] <= self.truth <= ci[1]


def run_experiment(world: World, design: Design, project_dir: Path, *, seed: int, customers: int,
                   store_url: str | None = None, store: Store | None = None,
                   start: datetime = START, by: str | None = None) -> ExperimentResult:
    """One round of ``design`` over ``customers`` fresh customers, attributed and reported
    once every outcome is in. ``truth`` is the world's treated-minus-holdout uplift."""
    sim = Simulation(world, design, project_dir, seed=seed, store_url=store_url, store=store,
                     start=start, id_prefix=f"x{seed}-")
    try:
        done = sim.round(customers)
        settled = sim.settle()
        attributed = sim.platform.attribute(settled)
        report = sim.platform.report(settled, by=by)
        return ExperimentResult(seed, world.true_uplift(design.arms), report, done, attributed.inserted,
                                dict(sim.platform.timings))
    finally:
        sim.close()


__all__ = ["START", "ExperimentResult", "Round", "Simulation", "run_experiment"]
