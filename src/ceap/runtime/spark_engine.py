"""``ceap run --engine spark``: the program's plan per partition, the selection in Spark.

* The source: a Parquet source is read by Spark itself (``spark.read.parquet``
  over the files the connector resolves, so each executor reads its own
  splits; ``where`` and the cursor become Spark filters). Any other source is
  read by its connector on the driver and handed to Spark as Arrow.
* Per partition (``mapInArrow``): the same ``Plan`` as the local engine:
  conform, features, filters, scorer, threshold. Each partition also emits its
  funnel counts and quarantined rows, tagged in one extra column, so nothing
  depends on accumulators (it works over Spark Connect too).
* The selection as Spark operations: best row per customer (``row_number``
  over the same total order as DuckDB's, ``selection.tie_columns``), top-k, and the holdout flag from the same
  MD5 hash (first 8 bytes, little-endian, over 2^64). Only the selected rows
  come back to the driver, where the candidate rows are made by the code the
  local engine uses, so both engines give identical candidates.

Scorer model files and local source paths must be readable where the executors
run (a shared file system or object storage on a cluster).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pyarrow as pa

from ceap import errors
from ceap.errors import CeapError, PluginError, RunError, SourceError
from ceap.pipeline.funnel import Funnel
from ceap.pipeline.plan import SCORE, Plan
from ceap.pipeline.selection import HOLDOUT, tie_columns
from ceap.runtime.cursor import HighWater

#: the extra column of mapInArrow's output: null for a scored row, else "funnel" or "bad"
TAG = "__ceap_tag"
#: that row's JSON (a partition's funnel, or a quarantined row and its reason)
INFO = "__ceap_info"
_COUNTS = ("read", "quarantined", "eligible", "unscored", "below_threshold")
#: a partition's scored rows, counted in its funnel row
KEPT = "__ceap_kept"


def spark_session(settings: dict[str, Any]) -> Any:
    """The active Spark session, or a new one from ``ceap.yaml``'s ``spark`` settings."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise PluginError("--engine spark needs PySpark: pip install 'ceap[spark]'") from None
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName("ceap")
    if settings.get("remote"):
        builder = builder.remote(settings["remote"])
    elif "PYSPARK_GATEWAY_PORT" not in os.environ:  # under spark-submit its --master stands
        builder = builder.master(settings.get("master") or "local[*]")
    for key, value in {"spark.sql.session.timeZone": "UTC",
                       "spark.sql.execution.arrow.pyspark.enabled": "true",
                       "spark.ui.showConsoleProgress": "false",
                       **(settings.get("conf") or {})}.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def _source_frame(spark: Any, plan: Plan, high: HighWater | None) -> Any:
    """The source rows as a Spark DataFrame (past the cursor's mark, if any)."""
    from pyspark.sql import functions as F

    connector: Any = plan.connector
    config: Any = plan.spec.source
    if config.type == "parquet":
        frame = spark.read.option("mergeSchema", "true").parquet(*connector.files())
        if config.where:
            frame = frame.filter(F.expr(config.where))
        if config.cursor and connector.after is not None:
            frame = frame.filter(F.col(config.cursor) > F.lit(connector.after))
    else:  # read by the connector on the driver
        batches = list(connector.batches())
        table = (pa.Table.from_batches(batches) if batches
                 else connector.schema().empty_table())
        frame = spark.createDataFrame(table)
    if high is not None:
        top = frame.agg(F.max(F.col(high.column)).alias("m")).collect()[0]["m"]
        if top is not None:
            kind = frame.select(high.column).limit(0).toArrow().schema.field(0).type
            high.see(pa.table({high.column: pa.array([top], kind)}))
    return frame


def _mapper(plan: Plan, now: datetime, out_schema: pa.Schema) -> Any:
    """The function each partition runs: the plan over its Arrow batches."""
    spec, context = plan.spec, plan.context

    def run_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        local = Plan(spec, context)
        funnel = Funnel(filters={f.id: 0 for f in spec.filters})
        scored = 0
        try:
            for batch in batches:
                outcome = local.process(batch, funnel, now)
                kept = outcome.kept
                n = kept.num_rows
                scored += n
                if n:
                    kept = kept.append_column(TAG, pa.nulls(n, pa.string()))
                    kept = kept.append_column(INFO, pa.nulls(n, pa.string()))
                    yield from kept.cast(out_schema).to_batches()
                if outcome.quarantine.num_rows:
                    bad = outcome.quarantine
                    infos = [json.dumps({"row": r, "reason": why}) for r, why in zip(
                        bad.column("row").to_pylist(), bad.column("reason").to_pylist(),
                        strict=True)]
                    yield _info_rows(out_schema, "bad", infos)
            yield _info_rows(out_schema, "funnel", [json.dumps({**funnel.to_dict(), KEPT: scored})])
        finally:
            local.close()

    return run_partition


def _info_rows(schema: pa.Schema, tag: str, infos: list[str]) -> pa.RecordBatch:
    n = len(infos)
    columns = [pa.nulls(n, f.type) for f in schema if f.name not in (TAG, INFO)]
    return pa.RecordBatch.from_arrays(
        [*columns, pa.array([tag] * n, pa.string()), pa.array(infos, pa.string())], schema=schema)


_CEAP_ERROR = re.compile(r"ceap\.errors\.(\w+): (.+)")


def worker_error(exc: Exception, source: str) -> CeapError:
    """The CEAP error a partition raised (a filter, a scorer, bad data), as that error, not as
    Spark's wrapped Python traceback; any other failure as a RunError with its first line."""
    text = str(exc)
    found = _CEAP_ERROR.findall(text)
    if found:
        name, message = found[-1]
        kind = getattr(errors, name, None)
        if isinstance(kind, type) and issubclass(kind, CeapError):
            return kind(message.strip())
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return RunError(f"Spark failed reading source {source!r} or running the program on it: "
                    f"{first}")


def holdout_column(spec: Any, tenant: str) -> Any:
    """The holdout flag in Spark, equal to DuckDB's ``md5_number_upper`` test."""
    from pyspark.sql import functions as F

    digest = F.md5(F.concat(F.lit(f"{tenant}:{spec.name}:"),
                            F.col(spec.source.customer_id).cast("string")))
    # md5_number_upper reads the first 8 bytes little-endian: reverse their hex pairs
    upper = F.concat(*[F.substring(digest, 2 * i + 1, 2) for i in range(7, -1, -1)])
    fraction = F.conv(upper, 16, 10).cast("double") / F.lit(18446744073709551616.0)
    return fraction < F.lit(float(spec.experiment.holdout))


def select_with_spark(plan: Plan, funnel: Funnel, now: datetime, settings: dict[str, Any],
                      high: HighWater | None) -> tuple[pa.Table | None, int, list[pa.Table]]:
    """Run the plan and the selection in Spark; return the top rows (with the holdout
    flag), the count of best rows before top-k, and the quarantined rows."""
    from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

    spark = spark_session(settings)
    try:
        source = _source_frame(spark, plan, high)
    except SourceError:
        raise
    except Exception as exc:  # Spark's own errors reading the source
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(f"source {plan.connector.describe()!r}: {text}") from None
    if settings.get("partitions"):
        source = source.repartition(int(settings["partitions"]))
    in_schema = to_arrow_schema(source.schema)
    plan.check(in_schema)
    kept_schema = plan.process(in_schema.empty_table(), Funnel(), now).kept.schema
    out_schema = pa.schema([*kept_schema, pa.field(TAG, pa.string()), pa.field(INFO, pa.string())])
    mapped = source.mapInArrow(_mapper(plan, now, out_schema), from_arrow_schema(out_schema))
    mapped = mapped.persist()
    try:
        return _select(mapped, plan, funnel, kept_schema)
    except CeapError:
        raise
    except Exception as exc:  # Py4J / PySpark errors from the executors or the driver
        raise worker_error(exc, plan.connector.describe()) from None
    finally:
        mapped.unpersist()


def _select(mapped: Any, plan: Plan, funnel: Funnel, kept_schema: pa.Schema
            ) -> tuple[pa.Table | None, int, list[pa.Table]]:
    """Gather the partitions' funnels and bad rows; select the best rows in Spark."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    spec = plan.spec
    bad: list[pa.Table] = []
    infos = mapped.filter(F.col(TAG).isNotNull()).select(TAG, INFO).toArrow()
    rows, reasons = [], []
    total = 0
    for tag, info in zip(infos.column(TAG).to_pylist(), infos.column(INFO).to_pylist(),
                         strict=True):
        data = json.loads(info)
        if tag == "funnel":
            total += int(data[KEPT])
            part = Funnel.from_dict(data)
            for name in _COUNTS:
                setattr(funnel, name, getattr(funnel, name) + getattr(part, name))
            funnel.quarantine_reasons.update(part.quarantine_reasons)
            for fid, removed in part.filters.items():
                funnel.filters[fid] = funnel.filters.get(fid, 0) + removed
        else:
            rows.append(data["row"])
            reasons.append(data["reason"])
    if rows:
        bad.append(pa.table({"row": pa.array(rows, pa.string()),
                             "reason": pa.array(reasons, pa.string())}))
    scored = mapped.filter(F.col(TAG).isNull()).drop(TAG, INFO)
    src, sel = spec.source, spec.selection
    subj = (F.col(src.subject_id) if src.subject_id else F.lit(None).cast("string"))
    keys = [src.customer_id] if sel.one_per_customer or not src.subject_id else [
        src.customer_id, src.subject_id]
    ties = [F.col(c).asc_nulls_last() for c in tie_columns(kept_schema, spec)]
    rank = Window.partitionBy(*keys).orderBy(F.col(SCORE).desc(), subj.asc_nulls_last(), *ties)
    best = scored.withColumn("__ceap_rank", F.row_number().over(rank)) \
        .filter(F.col("__ceap_rank") == 1).drop("__ceap_rank").persist()
    try:
        best_count = best.count()
        top = best.orderBy(F.col(SCORE).desc(), F.col(src.customer_id).asc(), subj.asc_nulls_last())
        if sel.top_k:
            top = top.limit(int(sel.top_k))
        top = top.withColumn(HOLDOUT, holdout_column(spec, plan.context.tenant))
        collected = top.toArrow()
    finally:
        best.unpersist()
    funnel.duplicate_customer += total - best_count
    return collected, best_count, bad
