"""Bandit regret on a known truth: Thompson sampling against uniform A/B and the oracle.

Three in-app variants of one offer with known conversion rates (lifts 0.5, 1.0
and 1.5 in ``ceap.simulate.population``). Each policy runs the real platform on
its own store for ``--rounds`` batch runs over fresh cohorts of ``--customers``
(the same cohorts for every policy of a seed); each run is dispatched and its
outcomes (purchases, app-reported engagement) come back through ``POST
/v1/events`` and the worker before the next run, which attributes them first:

- **thompson**: the program's ``experiment.bandit`` (min_share 0.05): each run
  updates the shares from the final outcomes, then assigns with them;
- **uniform**: the same variants with equal fixed weights (A/B/n);
- **oracle**: only the best variant.

Regret of a round: the conversions expected from giving every treated customer the
best variant minus those expected from the variants they got
(``sum over variants of treated * (best rate - rate)``, rates from the world); its
sum over rounds is the cumulative regret (the oracle's is 0). Also printed: the
conversions actually attributed to treated customers per policy (the oracle's minus
a policy's is its realised regret). Goal: Thompson's cumulative regret at most half
of uniform's. ``--plot`` writes the figure (PNG via Vega-Lite and vl-convert).

Usage (from the repository root)::

    .venv/bin/python bench/bandit_regret.py --plot docs/img/bandit_regret.png
    .venv/bin/python bench/bandit_regret.py --seeds 2 --rounds 6      # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ceap.experiments.plots import write_plot
from ceap.simulate.charts import regret_chart
from ceap.simulate.design import Design
from ceap.simulate.experiment import Simulation
from ceap.simulate.measures import pseudo_regret
from ceap.simulate.population import Arm, World
from ceap.simulate.stores import scratch_store

ARMS = (Arm("a", "inapp", lift=0.5), Arm("b", "inapp", lift=1.0), Arm("c", "inapp", lift=1.5))
POLICIES: dict[str, Design] = {
    "thompson": Design(name="promo", arms=ARMS, holdout=0.1, bandit={"min_share": 0.05}),
    "uniform": Design(name="promo", arms=ARMS, holdout=0.1),
    "oracle": Design(name="promo", arms=(ARMS[2],), holdout=0.1),
}


def run_policy(world: World, design: Design, seed: int, rounds: int, customers: int,
               postgres: str | None) -> dict[str, Any]:
    """The policy's rounds: treated per variant, the shares used, regret, conversions."""
    rates = world.arm_rates(ARMS)
    with tempfile.TemporaryDirectory() as folder, scratch_store(Path(folder), postgres) as url:
        sim = Simulation(world, design, Path(folder), seed=seed, store_url=url, id_prefix=f"r{seed}-")
        try:
            done = [sim.round(customers) for _ in range(rounds)]
            sim.platform.attribute(sim.settle())
            with sim.platform.store.tx() as tx:
                by_run = dict(tx.execute(
                    "SELECT c.run_id, count(*) FROM conversions v JOIN candidates c ON c.id = "
                    "v.candidate_id WHERE c.arm = 'treatment' GROUP BY c.run_id").fetchall())
            out = []
            for r in done:
                treated = r.treated_by_variant(design)
                out.append({"treated": treated, "shares": r.shares,
                            "regret": pseudo_regret(treated, rates),
                            "converted": int(by_run.get(r.run.run.run_id, 0)),
                            "unexpected_contacts": r.unexpected_contacts})
            return {"rounds": out, "timings": dict(sim.platform.timings)}
        finally:
            sim.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--customers", type=int, default=1000, help="per round")
    parser.add_argument("--pg", help="PostgreSQL server URL (default: SQLite)")
    parser.add_argument("--plot", type=Path, help="write the figure (.png, .svg or .json)")
    parser.add_argument("--json", type=Path, help="write every round's numbers here")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}; python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs", flush=True)
    world = World(seed=0)
    rates = world.arm_rates(ARMS)
    print("variant conversion rates (treated, expected): " +
          ", ".join(f"{k} {v:.4f}" for k, v in rates.items()), flush=True)
    start = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {p: [] for p in POLICIES}
    for seed in range(args.seeds):
        for policy, design in POLICIES.items():
            results[policy].append(run_policy(world, design, seed, args.rounds, args.customers, args.pg))
        print(f"  seed {seed} done, {time.perf_counter() - start:.0f} s", flush=True)
    cumulative = {p: np.array([np.cumsum([r["regret"] for r in run["rounds"]]) for run in runs])
                  for p, runs in results.items()}
    converted = {p: [sum(r["converted"] for r in run["rounds"]) for run in runs]
                 for p, runs in results.items()}
    print(f"\ncumulative regret over {args.rounds} rounds of {args.customers:,} customers "
          f"(expected conversions lost; per seed, then mean):")
    for policy, values in cumulative.items():
        finals = values[:, -1]
        print(f"  {policy:<9} " + " ".join(f"{v:7.1f}" for v in finals) + f"   mean {finals.mean():7.1f}")
    thompson, uniform = cumulative["thompson"][:, -1], cumulative["uniform"][:, -1]
    print(f"thompson / uniform: per seed {', '.join(f'{r:.2f}' for r in thompson / uniform)}; "
          f"mean of the regrets {thompson.mean() / uniform.mean():.2f} (goal <= 0.5)")
    best = max(rates, key=rates.__getitem__)
    shares = [statistics.mean((run["rounds"][i]["shares"] or {}).get(best, 1 / len(ARMS))
                              for run in results["thompson"]) for i in range(args.rounds)]
    print(f"thompson's share of the best variant ({best}) by round, mean over seeds: "
          + " ".join(f"{s:.2f}" for s in shares))
    print("conversions attributed to treated customers (realised), per seed: "
          + "; ".join(f"{p} {converted[p]}" for p in POLICIES))
    for policy in ("thompson", "uniform"):
        lost = [o - c for o, c in zip(converted["oracle"], converted[policy], strict=True)]
        print(f"  realised regret of {policy} (oracle's conversions minus its own): {lost}, "
              f"mean {statistics.mean(lost):.1f}")
    unexpected = sum(r["unexpected_contacts"] for runs in results.values() for run in runs
                     for r in run["rounds"])
    print(f"treated customers contacted other than the world says: {unexpected}")
    if args.plot:
        rows = []
        for policy, values in cumulative.items():
            for i in range(args.rounds):
                column = values[:, i]
                rows.append({"round": i + 1, "policy": policy, "regret": float(column.mean()),
                             "low": float(column.min()), "high": float(column.max())})
        chart = regret_chart(rows, f"Cumulative regret, {args.seeds} seeds (band: min to max), "
                                   f"{args.customers:,} customers a round")
        print(f"wrote {write_plot(chart, args.plot)}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    print(f"load average after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
