"""Uplift on a known truth: bias of the estimate and coverage of its 95% interval.

Each experiment draws ``--customers`` fresh customers from one simulated world
(``ceap.simulate.population``: 200,000 customers, seed 0) and runs the real
platform on a fresh store: the program (holdout 30%, two in-app variants, the
second with a 1.5x stronger offer), ``run_program``, a ``Dispatcher`` pass,
the customers' purchases and app-reported engagement through ``POST
/v1/events`` and the real-time worker, attribution, and ``uplift_report
--by variant``. The truth is the world's expected treated-minus-holdout
conversion rate (exact: the arms are random draws from the world).

Printed: per comparison (treatment vs holdout, and each variant vs the pooled
holdout), the bias of the absolute-uplift estimate (mean of estimate - truth,
with its standard error) and the share of 95% intervals holding the truth
(goal 93-97%), with the Wilson interval of that share; where the time of one
experiment goes (shares of the stages). With ``--pg URL`` the first
``--pg-experiments`` seeds run again on PostgreSQL (a fresh schema each), and
their numbers are compared with the SQLite ones seed by seed.

Usage (from the repository root)::

    .venv/bin/python bench/uplift_coverage.py                      # 200 experiments, SQLite
    .venv/bin/python bench/uplift_coverage.py --pg postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/uplift_coverage.py --experiments 20     # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from ceap.simulate.design import Design
from ceap.simulate.experiment import run_experiment
from ceap.simulate.measures import bias, coverage
from ceap.simulate.population import Arm, World
from ceap.simulate.stores import scratch_store

DESIGN = Design(name="offer", arms=(Arm("a", "inapp", lift=1.0), Arm("b", "inapp", lift=1.5)),
                holdout=0.3)


def one(world: World, seed: int, customers: int, postgres: str | None) -> dict[str, Any]:
    """One experiment: per comparison its truth, estimate and interval."""
    with tempfile.TemporaryDirectory() as folder, scratch_store(Path(folder), postgres) as url:
        result = run_experiment(world, DESIGN, Path(folder), seed=seed, customers=customers,
                                store_url=url, by="variant")
    truths = {"treatment vs holdout": result.truth,
              **{a.name: world.true_uplift([a]) for a in DESIGN.arms}}
    rows = {}
    for c in [*result.report.comparisons, *result.report.groups]:
        if c.label not in truths or c.absolute_ci is None or c.absolute_uplift is None:
            continue
        rows[c.label] = {"truth": truths[c.label], "estimate": c.absolute_uplift,
                         "low": c.absolute_ci[0], "high": c.absolute_ci[1],
                         "small_sample": c.small_sample, "treated": c.treated.customers,
                         "control": c.control.customers}
    return {"seed": seed, "comparisons": rows, "timings": result.timings,
            "unexpected_contacts": result.round.unexpected_contacts, "events": result.round.events,
            "attributed": result.attributed}


def summarise(results: list[dict[str, Any]], title: str) -> None:
    by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        for label, row in r["comparisons"].items():
            by_label[label].append(row)
    print(f"\n{title}: {len(results)} experiments")
    print(f"{'comparison':<22}{'truth':>9}{'mean est.':>11}{'bias':>10}{'± s.e.':>9}{'rmse':>9}"
          f"{'coverage':>10}  {'95% interval of coverage':<26}{'above/below':>12}{'width':>9}")
    for label, rows in by_label.items():
        b = bias([r["estimate"] for r in rows], [r["truth"] for r in rows])
        c = coverage([r["low"] for r in rows], [r["high"] for r in rows], [r["truth"] for r in rows])
        print(f"{label:<22}{b.truth:>+9.4f}{b.mean_estimate:>+11.4f}{b.mean:>+10.4f}"
              f"{b.standard_error:>9.4f}{b.rmse:>9.4f}{c.rate:>10.1%}  "
              f"[{c.interval[0]:.1%}, {c.interval[1]:.1%}]{'':<12}{c.above:>5}/{c.below:<6}"
              f"{c.mean_width:>9.4f}")
    small = sum(row["small_sample"] for r in results for row in r["comparisons"].values())
    unexpected = sum(r["unexpected_contacts"] for r in results)
    print(f"comparisons marked 'sample too small': {small}; treated customers contacted other than "
          f"the world says: {unexpected}")
    totals: dict[str, float] = defaultdict(float)
    for r in results:
        for stage, seconds in r["timings"].items():
            totals[stage] += seconds
    whole = sum(totals.values())
    print("where the time goes: " + ", ".join(f"{stage} {s / whole:.0%}" for stage, s in totals.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", type=int, default=200)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--pg", help="PostgreSQL server URL: rerun the first seeds there")
    parser.add_argument("--pg-experiments", type=int, default=30)
    parser.add_argument("--json", type=Path, help="write every experiment's numbers here")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}; python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs", flush=True)
    world = World(seed=0)
    print(f"world: {world.size:,} customers; truth (treated - holdout): "
          f"{world.true_uplift(DESIGN.arms):+.4f}, baseline rate {world.p0.mean():.4f}", flush=True)
    seeds = range(args.first_seed, args.first_seed + args.experiments)
    start = time.perf_counter()
    sqlite = []
    for i, seed in enumerate(seeds):
        sqlite.append(one(world, seed, args.customers, None))
        if (i + 1) % 20 == 0:
            print(f"  {i + 1} experiments, {time.perf_counter() - start:.0f} s", flush=True)
    summarise(sqlite, "SQLite")
    out: dict[str, Any] = {"sqlite": sqlite}
    if args.pg:
        pg = [one(world, seed, args.customers, args.pg) for seed in seeds[:args.pg_experiments]]
        summarise(pg, "PostgreSQL")
        same = sum(p["comparisons"] == s["comparisons"] for p, s in zip(pg, sqlite, strict=False))
        print(f"PostgreSQL and SQLite gave identical numbers (truth, estimate, interval, sizes) "
              f"for {same} of {len(pg)} seeds")
        out["postgres"] = pg
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    print(f"load average after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
