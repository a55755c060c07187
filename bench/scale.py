"""Scale benchmark: peak memory against rows, and the local engine next to Spark.

The program is ``bench/batch_pipeline.py``'s (Parquet, two filters, a 100-tree
LightGBM score, threshold 0.2, top-k, 5 % holdout), with one model trained on the
1M-row file and used for every size. Each run is a fresh child process, so its
peak RSS (``ru_maxrss``) is its own:

* **memory against rows**: the single-process engine (``engine: local``: scored
  rows in a DuckDB database that spills past ``--memory-limit``) over 1M, 10M
  and 100M rows; goal: 100M rows under 4 GB peak RSS;
* **local against Spark**: the same program over ``--spark-rows`` rows
  in-process and with ``--engine spark`` on ``local[2]``, side by side; the
  candidates (every column but the run id) must be identical. The Spark figure
  is wall time; its JVM and Python workers are other processes (their memory
  is not in the Python driver's RSS, and is listed apart when Linux reports it).

Usage (from the repository root)::

    .venv/bin/python bench/scale.py                                 # 1M, 10M, 100M + Spark at 10M
    .venv/bin/python bench/scale.py --sizes 1000000 --spark-rows 1000000   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
import batch_pipeline as bp

NOW = datetime(2026, 6, 1, 9, tzinfo=UTC)


def load() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


# -- the child: one run ------------------------------------------------------------
def child(args: argparse.Namespace) -> int:
    from ceap.plugin import PluginContext
    from ceap.runtime import run_program
    from ceap.store import open_store

    spec = bp.program(Path(args.parquet), Path(args.model), args.top_k, 0)
    db = Path(args.out).with_suffix(".db")
    db.unlink(missing_ok=True)
    store = open_store(f"sqlite:///{db}")
    options: dict[str, Any] = {}
    if args.engine != "before":  # "before": another CEAP version (--compare-with), no engines
        from ceap.runtime.batch import EngineSettings
        from ceap.runtime.spill import LocalSettings

        options["engine"] = EngineSettings(
            engine=args.engine, local=LocalSettings(memory_limit=args.memory_limit),
            spark={"master": "local[2]", "conf": {"spark.ui.enabled": "false",
                                                  "spark.driver.memory": "3g",
                                                  "spark.sql.shuffle.partitions": "8",
                                                  "spark.sql.files.maxPartitionBytes": "32m"}})
    started, cpu = time.perf_counter(), time.process_time()
    result = run_program(spec, store, PluginContext(), now=NOW, **options)
    seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    with store.tx() as tx:
        names = [r[1] for r in tx.execute("PRAGMA table_info(candidates)").fetchall()
                 if r[1] not in ("id", "run_id")]
        rows = tx.execute(f"SELECT {', '.join(names)} FROM candidates ORDER BY dedup_key").fetchall()
    pq.write_table(pa.Table.from_pylist([dict(zip(names, r, strict=True)) for r in rows]),
                   Path(args.out))
    store.close()
    if args.engine == "spark":
        from pyspark.sql import SparkSession

        session = SparkSession.getActiveSession()
        if session is not None:
            session.stop()
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"rows": result.funnel.read, "selected": result.funnel.selected,
                      "seconds": round(seconds, 1), "cpu_seconds": round(cpu_s, 1),
                      "peak_rss_mb": round(own), "children_peak_rss_mb": round(kids)}))
    return 0


def run_child(engine: str, parquet: Path, model: Path, top_k: int, out: Path,
              memory_limit: str, source: Path | None = None) -> dict[str, Any]:
    before = load()
    env = dict(os.environ)
    if source is not None:  # another CEAP version's src/ folder first on the path
        env["PYTHONPATH"] = os.pathsep.join([str(source), env.get("PYTHONPATH", "")])
    command = [sys.executable, __file__, "--child", "--engine", engine, "--parquet", str(parquet),
               "--model", str(model), "--top-k", str(top_k), "--out", str(out),
               "--memory-limit", memory_limit]
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{engine} run failed:\n{done.stderr[-3000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures.update({"engine": engine, "load_before": before, "load_after": load()})
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="local", help=argparse.SUPPRESS)
    parser.add_argument("--parquet", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="1000000,10000000,100000000")
    parser.add_argument("--spark-rows", type=int, default=10_000_000, help="0 skips Spark")
    parser.add_argument("--top-k", type=int, default=100_000)
    parser.add_argument("--memory-limit", default="1GB", help="DuckDB's limit in the local engine")
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).parent / ".data")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--compare-with", type=Path,
                        help="the src/ folder of another CEAP version (e.g. from `git archive`): "
                             "also run it at each size, for memory before and after")
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    data_dir = args.data_dir.resolve()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    bp.log("machine: " + ", ".join(f"{k} {v}" for k, v in bp.machine().items()))
    small = bp.ensure_data(data_dir, 1_000_000, args.seed)
    matrix, _ = bp.load_inputs(small)
    model = bp.ensure_model(data_dir, small, matrix, args.seed)
    del matrix
    work = data_dir / "scale"
    work.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {"sizes": [], "spark": None}
    for rows in sizes:
        parquet = bp.ensure_data(data_dir, rows, args.seed)
        bp.log(f"local engine over {rows:,} rows (memory limit {args.memory_limit}) ...")
        got = run_child("local", parquet, model, args.top_k, work / f"local_{rows}.parquet",
                        args.memory_limit)
        bp.log(f"  {got}")
        figures["sizes"].append(got)
        if args.compare_with and rows <= 10_000_000:
            bp.log(f"the other version ({args.compare_with}) over {rows:,} rows ...")
            other = run_child("before", parquet, model, args.top_k,
                              work / f"before_{rows}.parquet", args.memory_limit,
                              args.compare_with.resolve())
            bp.log(f"  {other}")
            figures["sizes"].append(other)
    if args.spark_rows:
        parquet = bp.ensure_data(data_dir, args.spark_rows, args.seed)
        pair = {}
        for engine in ("local", "spark"):
            bp.log(f"{engine} over {args.spark_rows:,} rows ...")
            pair[engine] = run_child(engine, parquet, model, args.top_k,
                                     work / f"pair_{engine}_{args.spark_rows}.parquet",
                                     args.memory_limit)
            bp.log(f"  {pair[engine]}")
        a = pq.read_table(work / f"pair_local_{args.spark_rows}.parquet")
        b = pq.read_table(work / f"pair_spark_{args.spark_rows}.parquet")
        identical = a.equals(b)
        figures["spark"] = {**pair, "identical_candidates": identical, "candidates": a.num_rows,
                            "spark_over_local_time": round(pair["spark"]["seconds"]
                                                           / pair["local"]["seconds"], 2)}
        bp.log(f"candidates identical: {identical} ({a.num_rows:,} rows); Spark / local wall time "
               f"{figures['spark']['spark_over_local_time']}")
    print("\nrows         engine  seconds  cpu s  peak RSS MB  load (before -> after)")
    for f in figures["sizes"] + ([figures["spark"]["local"], figures["spark"]["spark"]]
                                 if figures["spark"] else []):
        print(f"{f['rows']:>12,} {f['engine']:>6} {f['seconds']:>8} {f['cpu_seconds']:>6} "
              f"{f['peak_rss_mb']:>11}  {f['load_before']} -> {f['load_after']}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
