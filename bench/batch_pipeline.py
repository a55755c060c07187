"""Batch benchmark: Parquet -> two filters -> LightGBM (100 trees) -> top-k -> SQLite.

Measures, in one process and one run, side by side:

* rows per second of the whole batch program (``ceap.runtime.run_program``);
* pipeline time (read + conform + filters + score + select, without the store
  write) over the bare ``Booster.predict`` time on the same rows' feature
  matrix, loaded beforehand (goal: at most 1.5);
* the time of ``SqliteStore.write_run`` for the selected candidates over a raw
  ``sqlite3`` ``executemany`` of the same rows, prepared as tuples beforehand,
  into an identical fresh table (goal: at most 1.25).

The predicts and ``run_program`` alternate in rounds (best of ``--repeat``),
so load from other jobs falls on both alike; process CPU seconds are shown
next to wall time. The program runs with ``selection.reasons: 0``; a variant
with the default reasons (LightGBM ``pred_contrib`` on the selected rows) is
timed as well. See ``bench/README.md`` for the recorded figures.

Usage (from the repository root)::

    .venv/bin/python bench/batch_pipeline.py                 # 10M rows
    .venv/bin/python bench/batch_pipeline.py --rows 1000000  # quicker

The generated Parquet file and model are kept in ``--data-dir`` (default
``bench/.data``, gitignored) and reused when the row count and seed match.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ceap.model import RunRecord
from ceap.plugin import PluginContext
from ceap.runtime import run_program
from ceap.scorers.base import feature_matrix
from ceap.spec import parse_program
from ceap.store import open_store
from ceap.store.schema import CANDIDATE_COLUMNS
from ceap.store.sql_common import ddl
from ceap.store.sqlite import arrow_rows

#: bump when the generated data changes, so old files are not reused
DATA_VERSION = 1
ROW_GROUP = 1_000_000
FEATURES = ["days_since_last_visit", "orders_90d", "avg_order_value", "tenure_days",
            "sessions_30d", "cart_value"]
COUNTRIES = ["US", "GB", "DE", "FR", "ES", "IT", "NL", "SE", "PL", "BR", "XK", "ZZ"]
COUNTRY_SHARE = [0.30, 0.12, 0.11, 0.10, 0.07, 0.07, 0.05, 0.04, 0.04, 0.04, 0.03, 0.03]
#: the two filters of the program; each drops a modest share of the rows
FILTERS = [
    {"id": "served_country", "expr": "country NOT IN ('XK', 'ZZ')"},
    {"id": "recently_seen", "expr": "days_since_last_visit <= 180"},
]
THRESHOLD = 0.2
TRAIN_ROWS = 200_000
GOAL_PREDICT = 1.5
GOAL_WRITE = 1.25


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- data -----------------------------------------------------------------
def _chunk(rows: int, start: int, seed: int, customers: int) -> pa.Table:
    """Rows ``start .. start+rows`` of the data set; each chunk has its own random stream."""
    rng = np.random.default_rng([seed, start])
    ids = pc.cast(pa.array(rng.integers(0, customers, rows)), pa.string())
    customer_id = pc.binary_join_element_wise("c", pc.utf8_lpad(ids, 9, "0"), "")
    country = pa.array(COUNTRIES).take(pa.array(rng.choice(len(COUNTRIES), rows, p=COUNTRY_SHARE)))
    cart = rng.lognormal(4.0, 0.8, rows)
    cart[rng.random(rows) < 0.6] = 0.0
    return pa.table({
        "customer_id": customer_id,
        "country": country,
        "days_since_last_visit": np.minimum(rng.exponential(70.0, rows), 1000).astype(np.int64),
        "orders_90d": rng.poisson(2.0, rows).astype(np.int64),
        "avg_order_value": np.round(rng.lognormal(3.5, 0.6, rows), 2),
        "tenure_days": rng.integers(0, 3650, rows),
        "sessions_30d": rng.poisson(5.0, rows).astype(np.int64),
        "cart_value": np.round(cart, 2),
    })


def ensure_data(data_dir: Path, rows: int, seed: int) -> Path:
    """The Parquet file for ``rows``/``seed``, generated (vectorised) unless already there."""
    path = data_dir / f"customers_{rows}_{seed}.parquet"
    meta_path = path.with_suffix(".json")
    meta = {"rows": rows, "seed": seed, "version": DATA_VERSION, "row_group": ROW_GROUP}
    if path.exists() and meta_path.exists() and json.loads(meta_path.read_text()) == meta:
        log(f"reusing {path} ({path.stat().st_size / 1e6:.0f} MB)")
        return path
    data_dir.mkdir(parents=True, exist_ok=True)
    log(f"generating {rows:,} rows into {path}")
    started = time.perf_counter()
    customers = max(1, int(rows * 0.8))  # some customers appear on several rows
    tmp = path.with_suffix(".parquet.tmp")
    writer: pq.ParquetWriter | None = None
    try:
        for start in range(0, rows, ROW_GROUP):
            chunk = _chunk(min(ROW_GROUP, rows - start), start, seed, customers)
            if writer is None:
                writer = pq.ParquetWriter(tmp, chunk.schema)
            writer.write_table(chunk, row_group_size=ROW_GROUP)
            log(f"  generated {start + chunk.num_rows:,} / {rows:,} rows")
    finally:
        if writer is not None:
            writer.close()
    tmp.replace(path)
    for stale in data_dir.glob(f"{path.stem}_*gbm100.txt"):  # trained on the old file
        stale.unlink()
    meta_path.write_text(json.dumps(meta))
    log(f"generated in {time.perf_counter() - started:.1f}s ({path.stat().st_size / 1e6:.0f} MB)")
    return path


def conversion_probability(x: np.ndarray) -> np.ndarray:
    """The made-up truth the model learns (columns in ``FEATURES`` order)."""
    days, orders, aov, tenure, sessions, cart = x.T
    logit = (-1.6 - 0.012 * days + 0.5 * np.log1p(orders) + 0.15 * np.log1p(aov)
             + 0.0002 * tenure + 0.12 * np.sqrt(sessions) + 0.6 * (cart > 0)
             + 0.002 * np.minimum(cart, 400))
    return 1.0 / (1.0 + np.exp(-logit))


def ensure_model(data_dir: Path, path: Path, matrix: np.ndarray, seed: int) -> Path:
    """A 100-tree LightGBM model trained on a deterministic 200k-row sample."""
    model_path = data_dir / f"{path.stem}_v{DATA_VERSION}_gbm100.txt"
    if model_path.exists():
        log(f"reusing {model_path}")
        return model_path
    log(f"training a 100-tree LightGBM model on {min(TRAIN_ROWS, len(matrix)):,} sampled rows")
    rng = np.random.default_rng([seed, 1])
    sample = np.sort(rng.choice(len(matrix), min(TRAIN_ROWS, len(matrix)), replace=False))
    x = matrix[sample]
    y = (rng.random(len(x)) < conversion_probability(x)).astype(np.int32)
    params = {"objective": "binary", "num_leaves": 31, "learning_rate": 0.1, "verbose": -1,
              "seed": seed, "deterministic": True, "force_row_wise": True, "num_threads": 2}
    started = time.perf_counter()
    booster = lgb.train(params, lgb.Dataset(x, y, feature_name=FEATURES), num_boost_round=100)
    booster.save_model(str(model_path))
    log(f"trained in {time.perf_counter() - started:.1f}s -> {model_path}")
    return model_path


def load_inputs(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The feature matrix of every row, and the mask of rows both filters keep."""
    log("loading the feature matrix for the bare predict baseline")
    table = pq.read_table(path, columns=["country", *FEATURES])
    matrix = feature_matrix(table, FEATURES)
    con = duckdb.connect()
    keep_sql = " AND ".join(f"({f['expr']})" for f in FILTERS)
    con.register("t", table.select(["country", "days_since_last_visit"]))
    kept = con.sql(f"SELECT COALESCE({keep_sql}, false) FROM t").fetchnumpy()
    con.close()
    return matrix, np.asarray(next(iter(kept.values())), dtype=bool)


# -- the program ----------------------------------------------------------
def program(parquet: Path, model: Path, top_k: int, reasons: int | None) -> Any:
    """The benchmark's program. ``reasons`` None leaves ``selection.reasons`` at its default."""
    selection: dict[str, Any] = {"threshold": THRESHOLD, "top_k": top_k}
    if reasons is not None:
        selection["reasons"] = reasons
    return parse_program({
        "name": "bench_batch",
        "source": {"type": "parquet", "path": str(parquet), "customer_id": "customer_id",
                   "context": ["country"]},
        "filters": FILTERS,
        "scorer": {"type": "lightgbm", "model": str(model), "features": FEATURES},
        "selection": selection,
        "action": {"type": "offer", "channels": ["inapp"], "template": "winback",
                   "payload": {"discount": 10}},
        "experiment": {"holdout": 0.05},
    })


class TimedStore:
    """Wraps a store and times its ``write_run`` (the rest is delegated)."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.write_seconds = 0.0
        self.write_cpu = 0.0
        self.candidates: pa.Table | None = None

    def write_run(self, run: RunRecord, candidates: pa.Table, quarantine: pa.Table | None = None):
        started, cpu = time.perf_counter(), time.process_time()
        result = self.inner.write_run(run, candidates, quarantine)
        self.write_seconds = time.perf_counter() - started
        self.write_cpu = time.process_time() - cpu
        self.candidates = candidates
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def fresh_db(work: Path, name: str) -> Path:
    path = work / name
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


@dataclass
class Pipeline:
    total: list[float] = field(default_factory=list)
    write: list[float] = field(default_factory=list)
    #: process CPU seconds (all threads) of run_program minus write_run
    cpu: list[float] = field(default_factory=list)
    funnel: dict[str, Any] = field(default_factory=dict)
    candidates: pa.Table | None = None

    @property
    def best(self) -> tuple[float, float, float]:
        """(total, write, pipeline = total - write) of the fastest run."""
        i = min(range(len(self.total)), key=lambda k: self.total[k] - self.write[k])
        return self.total[i], self.write[i], self.total[i] - self.write[i]


def run_pipeline(spec: Any, work: Path, out: Pipeline, rows: int, label: str) -> None:
    """One timed ``run_program`` into a fresh SQLite store; appends to ``out``."""
    context = PluginContext(base_dir=work)
    db = fresh_db(work, "pipeline.db")
    store = TimedStore(open_store(f"sqlite:///{db}"))
    last = [time.perf_counter()]

    def progress(read: int, expected: int | None) -> None:
        if time.perf_counter() - last[0] >= 5 or read == expected:
            last[0] = time.perf_counter()
            log(f"    read {read:,} / {expected or rows:,} rows")

    gc.collect()
    started, cpu = time.perf_counter(), time.process_time()
    result = run_program(spec, store, context, progress=progress)  # type: ignore[arg-type]
    total = time.perf_counter() - started
    out.cpu.append(time.process_time() - cpu - store.write_cpu)
    store.close()
    out.total.append(total)
    out.write.append(store.write_seconds)
    out.funnel = result.funnel.to_dict()
    out.candidates = store.candidates
    log(f"  {label}: total {total:.2f}s, write_run {store.write_seconds:.3f}s, "
        f"pipeline {total - store.write_seconds:.2f}s (CPU {out.cpu[-1]:.2f}s)")


def timed(fn: Callable[[], Any], label: str, cpu_times: list[float] | None = None) -> float:
    """Wall seconds of ``fn()``; its process CPU seconds go to ``cpu_times``."""
    gc.collect()
    started, cpu = time.perf_counter(), time.process_time()
    fn()
    elapsed, used = time.perf_counter() - started, time.process_time() - cpu
    if cpu_times is not None:
        cpu_times.append(used)
    log(f"  {label}: {elapsed:.3f}s (CPU {used:.2f}s)")
    return elapsed


# -- the write baseline ---------------------------------------------------
def store_write(work: Path, candidates: pa.Table) -> float:
    db = fresh_db(work, "store_write.db")
    store = open_store(f"sqlite:///{db}")
    run = RunRecord("bench-write", "default", "bench_batch", "succeeded", datetime.now(UTC))
    gc.collect()
    started = time.perf_counter()
    result = store.write_run(run, candidates)
    elapsed = time.perf_counter() - started
    store.close()
    assert result.inserted == candidates.num_rows, result
    return elapsed


def raw_write(work: Path, rows: list[tuple[Any, ...]]) -> float:
    """A plain executemany of prepared tuples into the same DDL, same pragmas, one transaction."""
    db = fresh_db(work, "raw_write.db")
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    for statement in candidate_table_ddl():
        conn.execute(statement)
    sql = (f"INSERT INTO candidates ({', '.join(CANDIDATE_COLUMNS)}) "
           f"VALUES ({', '.join('?' for _ in CANDIDATE_COLUMNS)})")
    gc.collect()
    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(sql, rows)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def candidate_table_ddl() -> list[str]:
    """``ddl("sqlite")`` plus the nullable columns ``migrate`` adds to ``candidates``, if any,
    so the raw table is the store's table."""
    statements = list(ddl("sqlite"))
    try:
        from ceap.store.delivery_schema import add_missing_columns
    except ImportError:
        return statements
    return [*statements, *add_missing_columns("sqlite", set(CANDIDATE_COLUMNS) | {"id"})]


def table_layout(path: Path) -> list[Any]:
    """Columns and index definitions of ``candidates`` in a database file."""
    conn = sqlite3.connect(path)
    try:
        columns = conn.execute("PRAGMA table_info(candidates)").fetchall()
        indexes = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                               "AND tbl_name = 'candidates' ORDER BY name").fetchall()
        return [columns, indexes]
    finally:
        conn.close()


def compare_writes(work: Path, candidates: pa.Table, repeat: int) -> tuple[float, float]:
    rows = arrow_rows(candidates.select(CANDIDATE_COLUMNS))
    store_times, raw_times = [], []
    for i in range(repeat):  # interleaved, so drift in the machine hits both alike
        store_times.append(store_write(work, candidates))
        raw_times.append(raw_write(work, rows))
        log(f"  write {i + 1}/{repeat}: write_run {store_times[-1]:.3f}s, "
            f"raw executemany {raw_times[-1]:.3f}s")
    if table_layout(work / "store_write.db") != table_layout(work / "raw_write.db"):
        raise SystemExit("the raw baseline's candidates table differs from the store's")
    return min(store_times), min(raw_times)


# -- report ---------------------------------------------------------------
def machine() -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal"))
        ram = f"{mem_kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration):
        ram = "?"
    return {
        "cpus": str(os.cpu_count()), "cpu": cpu, "ram": ram,
        "python": platform.python_version(), "numpy": np.__version__,
        "pyarrow": pa.__version__, "duckdb": duckdb.__version__,
        "lightgbm": lgb.__version__, "sqlite": sqlite3.sqlite_version,
    }


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def verdict(value: float, goal: float) -> str:
    return "PASS" if value <= goal else "FAIL"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows of Parquet to score")
    parser.add_argument("--top-k", type=int, default=100_000, help="candidates to select")
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).parent / ".data",
                        help="where the generated Parquet, model and databases go")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds (predict all rows, predict kept rows, run_program); "
                             "figures are the best of them")
    parser.add_argument("--explained-repeat", type=int, default=1,
                        help="timed runs of the variant with the default selection.reasons "
                             "(0: skip it)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)

    info = machine()
    log("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    load_start = load_average()
    log(f"load average (1/5/15 min): {load_start}")
    data_dir: Path = args.data_dir.resolve()
    parquet = ensure_data(data_dir, args.rows, args.seed)
    matrix, kept = load_inputs(parquet)
    model = ensure_model(data_dir, parquet, matrix, args.seed)
    booster = lgb.Booster(model_file=str(model))
    survivors = np.ascontiguousarray(matrix[kept])
    work = data_dir / "work"
    work.mkdir(parents=True, exist_ok=True)

    # Rounds interleave the baselines and the pipeline, so that load from elsewhere on the
    # machine affects both alike; each figure is the best of its rounds.
    spec = program(parquet, model, args.top_k, 0)
    predict_all_t: list[float] = []
    predict_kept_t: list[float] = []
    predict_all_cpu: list[float] = []
    pipe = Pipeline()
    for i in range(args.repeat):
        log(f"round {i + 1}/{args.repeat}: bare Booster.predict on all {len(matrix):,} rows, on the "
            f"{len(survivors):,} rows both filters keep, then run_program (top_k {args.top_k:,}, "
            "selection.reasons 0)")
        predict_all_t.append(timed(partial(booster.predict, matrix), "predict, all rows",
                                   predict_all_cpu))
        predict_kept_t.append(timed(partial(booster.predict, survivors), "predict, kept rows"))
        run_pipeline(spec, work, pipe, args.rows, "run_program")
        log(f"  round {i + 1}: pipeline / predict (all rows) "
            f"{(pipe.total[-1] - pipe.write[-1]) / predict_all_t[-1]:.2f}")
    del survivors
    predict_all, predict_kept = min(predict_all_t), min(predict_kept_t)
    total, write_in_run, pipeline = pipe.best
    candidates = pipe.candidates
    assert candidates is not None
    if pipe.funnel["eligible"] != int(kept.sum()):
        raise SystemExit(f"funnel eligible {pipe.funnel['eligible']} != baseline {int(kept.sum())}")

    explained: Pipeline | None = None
    if args.explained_repeat:
        spec = program(parquet, model, args.top_k, None)
        log(f"the same program with the default selection.reasons ({spec.selection.reasons}): "
            f"LightGBM pred_contrib on the {args.top_k:,} selected rows")
        explained = Pipeline()
        for i in range(args.explained_repeat):
            run_pipeline(spec, work, explained, args.rows, f"run_program {i + 1}/{args.explained_repeat}")

    log(f"candidate write: {candidates.num_rows:,} rows")
    write_store, write_raw = compare_writes(work, candidates, args.repeat)
    shutil.rmtree(work, ignore_errors=True)

    rows = args.rows
    ratio_all = pipeline / predict_all
    ratio_kept = pipeline / predict_kept
    ratio_write = write_store / write_raw
    ratio_cpu = min(pipe.cpu) / min(predict_all_cpu)
    paired = statistics.median((t - w) / p for t, w, p in zip(pipe.total, pipe.write, predict_all_t,
                                                              strict=True))
    funnel = pipe.funnel
    print()
    print("funnel: " + ", ".join(
        f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in funnel.items()
        if k != "quarantine_reasons"))
    print()
    table = [
        ("rows read", f"{rows:,}", ""),
        ("rows scored (passed both filters)", f"{int(kept.sum()):,}", ""),
        ("candidates written", f"{candidates.num_rows:,}", ""),
        ("run_program end to end", f"{total:.2f} s", f"{rows / total:,.0f} rows/s"),
        ("pipeline (run_program minus write_run)", f"{pipeline:.2f} s",
         f"{rows / pipeline:,.0f} rows/s"),
        ("bare predict, all rows", f"{predict_all:.2f} s", f"{rows / predict_all:,.0f} rows/s"),
        ("bare predict, kept rows only", f"{predict_kept:.2f} s", ""),
        ("HEADLINE pipeline / predict (all rows)", f"{ratio_all:.2f}",
         f"goal <= {GOAL_PREDICT}: {verdict(ratio_all, GOAL_PREDICT)} "
         f"(median of paired rounds: {paired:.2f})"),
        ("stricter: pipeline / predict (kept rows)", f"{ratio_kept:.2f}",
         f"goal <= {GOAL_PREDICT}: {verdict(ratio_kept, GOAL_PREDICT)}"),
        ("CPU seconds: pipeline / predict (all rows)", f"{ratio_cpu:.2f}",
         f"{min(pipe.cpu):.1f} / {min(predict_all_cpu):.1f} CPU s (less sensitive to other load)"),
    ]
    figures: dict[str, Any] = {}
    if explained is not None:
        e_total, _, e_pipeline = explained.best
        figures = {"explained_total_s": e_total, "explained_pipeline_s": e_pipeline,
                   "explained_ratio_predict_all": e_pipeline / predict_all}
        table += [
            ("with default reasons: pipeline", f"{e_pipeline:.2f} s",
             f"{rows / e_pipeline:,.0f} rows/s; explaining {args.top_k:,} rows "
             f"~{e_pipeline - pipeline:.1f} s"),
            ("with default reasons: pipeline / predict (all)", f"{e_pipeline / predict_all:.2f}",
             f"goal <= {GOAL_PREDICT}: {verdict(e_pipeline / predict_all, GOAL_PREDICT)}"),
        ]
    table += [
        ("SqliteStore.write_run", f"{write_store:.3f} s",
         f"{candidates.num_rows / write_store:,.0f} rows/s"),
        ("  (write_run inside the timed run)", f"{write_in_run:.3f} s", ""),
        ("raw sqlite3 executemany", f"{write_raw:.3f} s",
         f"{candidates.num_rows / write_raw:,.0f} rows/s"),
        ("HEADLINE write_run / raw executemany", f"{ratio_write:.2f}",
         f"goal <= {GOAL_WRITE}: {verdict(ratio_write, GOAL_WRITE)}"),
    ]
    width = max(len(r[0]) for r in table)
    vwidth = max(len(r[1]) for r in table)
    load_end = load_average()
    print(f"best of {args.repeat}; {info['cpus']} CPUs, {info['cpu']}, {info['ram']} RAM; "
          f"load average {load_start} at start, {load_end} at end")
    for name, value, note in table:
        print(f"  {name:<{width}}  {value:>{vwidth}}  {note}")
    if args.json:
        args.json.write_text(json.dumps({
            "rows": rows, "top_k": args.top_k, "repeat": args.repeat, "machine": info,
            "funnel": funnel, "run_total_s": total, "pipeline_s": pipeline,
            "write_in_run_s": write_in_run, "predict_all_s": predict_all,
            "predict_kept_s": predict_kept, "ratio_predict_all": ratio_all,
            "ratio_predict_kept": ratio_kept, "write_run_s": write_store, "raw_write_s": write_raw,
            "ratio_write": ratio_write, "rows_per_s": rows / total,
            "rounds": {"run_total_s": pipe.total, "write_in_run_s": pipe.write,
                       "predict_all_s": predict_all_t, "predict_kept_s": predict_kept_t,
                       "pipeline_cpu_s": pipe.cpu, "predict_all_cpu_s": predict_all_cpu},
            "ratio_cpu_predict_all": ratio_cpu, "ratio_predict_all_paired_median": paired,
            "load_start": load_start, "load_end": load_end, **figures,
        }, indent=2, default=str))
    ok = ratio_all <= GOAL_PREDICT and ratio_write <= GOAL_WRITE
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
