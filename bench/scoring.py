"""Scoring benchmark: the scorer plugins against their model libraries, side by side.

Measures, in one process and one run:

* batch scoring, rows per second, through each scorer plugin (``score`` on an
  Arrow table, as the pipeline calls it) and through the model library called
  directly on the same rows already in a numpy array (float64; float32 for
  ONNX), and their ratio (goal: at least 0.9);
* single-event scoring latency p50/p99 through ``score_one`` (a dict in, a
  float out), next to the library's own one-row call (goal: p99 under 1 ms
  for the 100-tree model via ONNX Runtime).

The models (100 trees, 6 features) are trained with ``ceap.ml.train`` into a
model registry under ``--data-dir`` and loaded by reference, as a program
would. Each batch measurement alternates plugin and direct calls for
``--repeat`` rounds; rows per second are from the best round of each, and the
ratio is given both as best over best and as the median of the per-round
ratios (a plugin call and the library call right after it see about the same
machine load, which matters on a shared machine).

Usage (from the repository root)::

    .venv/bin/python bench/scoring.py                  # 1M rows, 20k single events
    .venv/bin/python bench/scoring.py --rows 200000    # quicker
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ceap.ml.artefacts import ModelRegistry
from ceap.ml.train import TrainOptions, TrainParams, train
from ceap.plugin import PluginContext
from ceap.registry import default_registry
from ceap.scorers.base import feature_matrix

FEATURES = ["days_since_last_visit", "orders_90d", "avg_order_value", "tenure_days",
            "sessions_30d", "cart_value"]
#: scorer type -> ``ceap train --kind``
KINDS = {"lightgbm": "lightgbm", "xgboost": "xgboost", "onnx": "onnx-from-lightgbm",
         "sklearn": "sklearn"}


def make_table(rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = {
        "days_since_last_visit": rng.exponential(20, rows),
        "orders_90d": rng.poisson(2, rows).astype(np.int64),
        "avg_order_value": rng.gamma(2.0, 30.0, rows),
        "tenure_days": rng.integers(1, 2000, rows).astype(np.int64),
        "sessions_30d": rng.poisson(6, rows).astype(np.int64),
        "cart_value": rng.gamma(1.5, 40.0, rows),
    }
    logit = (0.05 * x["days_since_last_visit"] - 0.6 * x["orders_90d"] - 0.2 * x["sessions_30d"]
             + 0.004 * x["cart_value"] - 0.0005 * x["tenure_days"])
    churned = rng.random(rows) < 1 / (1 + np.exp(-logit))
    return pa.table({**x, "churned": churned})


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def direct_batch(kind: str, scorer: Any) -> tuple[Callable[[np.ndarray], Any], Any]:
    """The library's own batch call on the model the plugin loaded, and its input dtype."""
    if kind == "lightgbm":
        return scorer.booster.predict, np.float64
    if kind == "xgboost":
        return scorer.booster.inplace_predict, np.float64
    if kind == "onnx":
        name, _, outputs = scorer._io
        session = scorer.session
        return (lambda m: session.run(outputs, {name: m})[0][:, 1]), np.float32
    return (lambda m: scorer.estimator.predict_proba(m)[:, 1]), np.float64


def direct_one(kind: str, scorer: Any) -> Callable[[np.ndarray], Any]:
    """The library's one-row call on a prepared 1-row array (no dict, no feature lookup)."""
    if kind == "onnx":
        name, _, outputs = scorer._io
        session = scorer.session
        return lambda m: session.run(outputs, {name: m})[0][0, 1]
    if kind == "lightgbm":
        return lambda m: scorer.booster.predict(m, num_threads=1)[0]
    if kind == "xgboost":
        return lambda m: scorer._single.inplace_predict(m)[0]  # the same one-thread booster
    return lambda m: scorer.estimator.predict_proba(m)[0, 1]


def percentiles(fn: Callable[[Any], Any], inputs: list[Any], warmup: int = 200) -> tuple[float, float]:
    for item in inputs[:warmup]:
        fn(item)
    times = np.empty(len(inputs))
    clock = time.perf_counter_ns
    for i, item in enumerate(inputs):
        start = clock()
        fn(item)
        times[i] = clock() - start
    return float(np.percentile(times, 50) / 1e3), float(np.percentile(times, 99) / 1e3)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows scored in a batch")
    parser.add_argument("--events", type=int, default=20_000, help="single events scored")
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--train-rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7, help="rounds per batch measurement")
    parser.add_argument("--kinds", default=",".join(KINDS), help="scorers to measure")
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).parent / ".data" / "scoring")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()

    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    root = args.data_dir
    shutil.rmtree(root / "models", ignore_errors=True)
    registry = ModelRegistry(root / "models")
    history = make_table(args.train_rows, seed=1)
    print(f"machine: {os.cpu_count()} CPUs, {cpu_model()}; Python {platform.python_version()}",
          file=sys.stderr)
    context = PluginContext(base_dir=root)
    scorers: dict[str, Any] = {}
    for kind in kinds:
        start = time.perf_counter()
        options = TrainOptions(name=f"bench_{kind}", features=FEATURES, label="churned",
                               kind=KINDS[kind], params=TrainParams(trees=args.trees))
        meta = train(history, options, registry).meta
        config: dict[str, Any] = {"type": kind, "model": f"{meta.ref}"}
        scorers[kind] = default_registry().get("scorer", kind).from_dict(config, context)
        print(f"trained {meta.ref} ({kind}, {args.trees} trees) in {time.perf_counter() - start:.1f} s, "
              f"held-out AUC {meta.metrics['roc_auc']:.3f}", file=sys.stderr)

    table = make_table(args.rows, seed=2).select(FEATURES)
    matrix64 = feature_matrix(table, FEATURES)
    matrix32 = matrix64.astype(np.float32)
    results: dict[str, Any] = {"rows": args.rows, "events": args.events, "trees": args.trees,
                               "cpus": os.cpu_count(), "cpu": cpu_model(), "batch": {}, "single": {},
                               "load_before": os.getloadavg()[0]}
    for kind, scorer in scorers.items():
        direct, dtype = direct_batch(kind, scorer)
        array = matrix32 if dtype == np.float32 else matrix64
        plugin_scores = scorer.score(table)  # warm both up (and check they agree)
        direct_scores = np.asarray(direct(array), dtype=np.float64).reshape(-1)
        if not np.allclose(plugin_scores, direct_scores, rtol=1e-6, atol=1e-9):
            print(f"{kind}: plugin and library disagree", file=sys.stderr)
            return 1
        plugin_t, direct_t = [], []
        for _ in range(args.repeat):  # alternate, so each pair sees the same machine load
            plugin_t.append(best_of(lambda s=scorer: s.score(table), 1))
            direct_t.append(best_of(lambda d=direct, a=array: d(a), 1))
        plugin_s, direct_s = min(plugin_t), min(direct_t)
        paired = float(np.median(np.array(direct_t) / np.array(plugin_t)))
        results["batch"][kind] = {
            "plugin_rows_per_s": args.rows / plugin_s, "direct_rows_per_s": args.rows / direct_s,
            "ratio_best": direct_s / plugin_s, "ratio_paired_median": paired,
            "input": np.dtype(dtype).name}
        print(f"batch {kind}: plugin {args.rows / plugin_s:,.0f} rows/s, direct "
              f"{args.rows / direct_s:,.0f} rows/s, ratio {direct_s / plugin_s:.3f} (best vs best), "
              f"{paired:.3f} (median of paired rounds)", file=sys.stderr)

    rows = table.slice(0, args.events).to_pylist()
    for kind, scorer in scorers.items():
        # scikit-learn is not built for one row at a time: fewer calls keep the run short
        events = rows[:2_000] if kind == "sklearn" else rows
        dtype = np.float32 if kind == "onnx" else np.float64
        arrays = [np.array([[r[f] for f in FEATURES]], dtype=dtype) for r in events]
        p50, p99 = percentiles(scorer.score_one, events)
        d50, d99 = percentiles(direct_one(kind, scorer), arrays)
        results["single"][kind] = {"calls": len(events), "p50_us": p50, "p99_us": p99,
                                   "direct_p50_us": d50, "direct_p99_us": d99}
        print(f"single {kind}: score_one p50 {p50:.1f} us, p99 {p99:.1f} us "
              f"(library on a ready array: p50 {d50:.1f} us, p99 {d99:.1f} us)", file=sys.stderr)

    results["load_after"] = os.getloadavg()[0]
    print(report(results))
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


def report(r: dict[str, Any]) -> str:
    lines = [f"Machine: {r['cpus']} CPUs, {r['cpu']}; 1-minute load average {r['load_before']:.1f} "
             f"before, {r['load_after']:.1f} after.", "",
             f"Batch: {r['rows']:,} rows, {r['trees']}-tree models, 6 features; plugin `score` on an "
             "Arrow table vs the library on the same rows as a ready numpy array (best of the rounds).",
             "", "| scorer | plugin rows/s | library rows/s | ratio, best vs best | "
             "ratio, median of paired rounds (goal >= 0.9) |",
             "|---|---:|---:|---:|---:|"]
    for kind, b in r["batch"].items():
        lines.append(f"| {kind} | {b['plugin_rows_per_s']:,.0f} | {b['direct_rows_per_s']:,.0f} "
                     f"({b['input']}) | {b['ratio_best']:.3f} | {b['ratio_paired_median']:.3f} |")
    lines += ["", "Single events: `score_one(dict)` vs the library's one-row call on a ready array.", "",
              "| scorer | calls | score_one p50 | score_one p99 | library p50 | library p99 |",
              "|---|---:|---:|---:|---:|---:|"]
    for kind, s in r["single"].items():
        lines.append(f"| {kind} | {s['calls']:,} | {s['p50_us']:.1f} µs | {s['p99_us']:.1f} µs | "
                     f"{s['direct_p50_us']:.1f} µs | {s['direct_p99_us']:.1f} µs |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
