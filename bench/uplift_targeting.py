"""Targeting by uplift against targeting by propensity, on a known truth.

The simulated world (``ceap.simulate.population``) has sure things (many visits,
high baseline, little effect), persuadables (few visits, low baseline, large
effect), lost causes and sleeping dogs (harmed by a message): the customers most
likely to buy are not the ones a message moves. Everything runs on the real
platform (program, dispatch to the in-app inbox, purchases and engagement back
through ``POST /v1/events`` and the worker, attribution, the uplift report):

1. **history**: a randomised experiment (holdout 50%) over ``--customers``
   customers; from its raw rows two scorers are fitted with statsmodels
   (``ceap.simulate.targeting``): a propensity model (logistic regression of
   conversion on the features, all customers) and a T-learner (one logistic
   regression per arm; score = the difference);
2. **deciles**: each scorer scores a new cohort, holdout 50%, and the report's
   ``--by score_decile`` shows the measured uplift per decile, printed next to
   the true uplift of the customers in that decile;
3. **top-k**: each scorer (and a random one) targets its top ``--share`` of
   another cohort (``selection.top_k``; holdout 50% of the selected, so the
   effect on the targeted is measured). Printed: the measured uplift among the
   targeted with its interval; the incremental conversions among the treated
   half, as measured (uplift x treated), as caused (the simulator's
   counterfactual: each customer's same random draw without the message), and
   as expected from the world's truth.

Usage (from the repository root)::

    .venv/bin/python bench/uplift_targeting.py
    .venv/bin/python bench/uplift_targeting.py --customers 5000      # quicker
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from ceap.experiments.uplift import UpliftReport
from ceap.simulate.design import Design
from ceap.simulate.experiment import Round, Simulation
from ceap.simulate.population import Arm, World
from ceap.simulate.responses import caused
from ceap.simulate.stores import scratch_store
from ceap.simulate.targeting import history, propensity_scorer, uplift_scorer

ARM = Arm("a", "inapp", lift=1.0)
RANDOM = {"type": "expression", "name": "random", "expr": "(hash(customer_id) % 1000003) / 1000003.0"}


def experiment(world: World, design: Design, seed: int, customers: int,
               by: str | None = None) -> tuple[UpliftReport, pa.Table, dict[str, int], Round]:
    """One round on a fresh SQLite store: the report, the candidates' scores, the cohort's
    world rows, the round."""
    with tempfile.TemporaryDirectory() as folder, scratch_store(Path(folder)) as url:
        sim = Simulation(world, design, Path(folder), seed=seed, store_url=url, id_prefix=f"t{seed}-")
        try:
            done = sim.round(customers)
            sim.platform.attribute(sim.settle())
            report = sim.platform.report(sim.settle(), by=by)
            with sim.platform.store.tx() as tx:
                rows = tx.execute("SELECT customer_id, score, arm FROM candidates WHERE program = ?",
                                  (design.name,)).fetchall()
            scores = pa.table({"customer_id": [r[0] for r in rows], "score": [r[1] for r in rows],
                               "arm": [r[2] for r in rows]})
            if done.unexpected_contacts:
                raise RuntimeError(f"{done.unexpected_contacts} contacts differ from the world's")
            return report, scores, sim.rows, done
        finally:
            sim.close()


def fit(world: World, seed: int, customers: int) -> tuple[dict[str, Any], dict[str, Any]]:
    design = Design(name="offer_history", arms=(ARM,), holdout=0.5)
    with tempfile.TemporaryDirectory() as folder, scratch_store(Path(folder)) as url:
        sim = Simulation(world, design, Path(folder), seed=seed, store_url=url, id_prefix="h-")
        try:
            sim.round(customers)
            sim.platform.attribute(sim.settle())
            rows = np.array(list(sim.rows.values()))
            past = history(sim.platform.store, "default", design.name,
                           world.table(rows, list(sim.rows)))
        finally:
            sim.close()
    print(f"history: {len(past):,} customers, {int(past['converted'].sum()):,} converted; "
          f"treated {int((past['arm'] == 'treatment').sum()):,}")
    return propensity_scorer(past), uplift_scorer(past)


def deciles(scores: pa.Table) -> dict[str, int]:
    """Each customer's score decile, as the report computes it."""
    con = duckdb.connect()
    con.register("s", scores)
    rows = con.sql("SELECT customer_id, ntile(10) OVER (ORDER BY score NULLS FIRST, customer_id) "
                   "FROM s").fetchall()
    return {c: int(d) for c, d in rows}


def print_deciles(name: str, world: World, report: UpliftReport, scores: pa.Table,
                  rows: dict[str, int]) -> None:
    decile = deciles(scores)
    effect = world.effect(ARM)
    truth = {d: float(np.mean([effect[rows[c]] for c, k in decile.items() if k == d])) for d in range(1, 11)}
    print(f"\n{name}: uplift by score decile (decile 10 scores highest), control = holdout")
    print(f"{'decile':<10}{'treated rate':>14}{'control rate':>14}{'uplift':>9}  {'95% interval':<20}"
          f"{'true uplift':>12}")
    for g in report.groups:
        d = int(g.label.split()[-1])
        ci = g.absolute_ci or (float("nan"), float("nan"))
        print(f"{g.label:<10}{g.treated.rate or 0:>14.2%}{g.control.rate or 0:>14.2%}"
              f"{g.absolute_uplift or 0:>+9.2%}  [{ci[0]:+.2%}, {ci[1]:+.2%}]{'':<3}{truth[d]:>+12.2%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--share", type=float, default=0.2, help="share of a cohort targeted (top-k)")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}; python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs", flush=True)
    world = World(seed=0)
    propensity, uplift = fit(world, seed=100, customers=args.customers)
    scorers = {"propensity": propensity, "uplift (T-learner)": uplift}
    for name, scorer in scorers.items():
        design = Design(name="offer", arms=(ARM,), holdout=0.5, scorer=scorer)
        report, scores, rows, _ = experiment(world, design, seed=200, customers=args.customers,
                                             by="score_decile")
        print_deciles(name, world, report, scores, rows)
    k = int(args.customers * args.share)
    print(f"\ntop-k targeting: the top {k:,} of {args.customers:,} customers by each score; half of "
          "them held out to measure. Incremental conversions among the treated half: measured "
          "(uplift x treated), caused (the simulator's counterfactual: the same draw without the "
          "message) and expected (the world's truth)")
    print(f"{'scorer':<20}{'treated':>8}{'uplift':>9}  {'95% interval':<20}{'measured':>9}"
          f"  {'95% interval':<13}{'caused':>7}{'expected':>9}")
    effect = world.effect(ARM)
    for name, scorer in {"random": RANDOM, **scorers}.items():
        design = Design(name="offer", arms=(ARM,), holdout=0.5, scorer=scorer, top_k=k)
        report, _, rows, done = experiment(world, design, seed=300, customers=args.customers)
        c = report.comparisons[0]
        ci = c.absolute_ci or (float("nan"), float("nan"))
        mask = np.array([a == "treatment" for a in done.contacts.arm])
        treated = int(mask.sum())
        expected = float(sum(effect[rows[cid]] for cid, t in zip(done.contacts.customer_id, mask,
                                                                   strict=True) if t))
        print(f"{name:<20}{treated:>8,}{c.absolute_uplift or 0:>+9.2%}  [{ci[0]:+.2%}, {ci[1]:+.2%}]"
              f"{'':<2}{(c.absolute_uplift or 0) * treated:>9.0f}  [{ci[0] * treated:.0f}, "
              f"{ci[1] * treated:.0f}]{'':<5}{int(caused(done.outcomes)[mask].sum()):>7}{expected:>9.0f}")
    print(f"load average after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
