"""Selection: one row per customer, top-k, arms and variants, dedup keys, candidate rows.

Holdout membership is a pure function of (tenant, program, customer): DuckDB's
``md5_number_upper`` of ``tenant:program:customer`` (the first 8 bytes of the MD5
digest, little-endian), as a fraction of 2^64, below the holdout share. It is
stable across runs, machines and versions, so a customer stays in the same group
and uplift can be measured later. The global control group
and the variants are drawn the same way (``ceap.experiments.assignment``),
column-wise in DuckDB.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ceap.errors import PluginError
from ceap.experiments.assignment import VariantSql, global_control_sql, holdout_sql, weights_for
from ceap.pipeline import candidates_arrow
from ceap.pipeline.best_arrow import best_per_bucket
from ceap.pipeline.funnel import Funnel
from ceap.pipeline.plan import SCORE
from ceap.scorers.base import Scorer
from ceap.spec.program import Action, ProgramSpec
from ceap.sqlexpr import BATCH, quote, run_rows
from ceap.store.schema import CANDIDATE_SCHEMA

REASONS = "__ceap_reasons"
ITEMS = "__ceap_items"
BEST = "__ceap_best"
HOLDOUT = "__ceap_holdout"


@dataclass(frozen=True)
class RunInfo:
    tenant_id: str
    run_id: str
    now: datetime
    model: str
    #: the tenant-wide global control share (``ceap.yaml`` ``experiments.global_control``)
    global_control: float = 0.0
    #: a bandit's latest variant shares (None: the spec's weights)
    weights: Mapping[str, float] | None = None


def window_label(now: datetime, spec: ProgramSpec) -> str:
    """The start of the dedup window ``now`` falls in, e.g. ``20261125T000000``."""
    size = spec.selection.dedup_window.total_seconds()
    start = (now.astimezone(UTC).timestamp() // size) * size
    return datetime.fromtimestamp(start, UTC).strftime("%Y%m%dT%H%M%S")


def _json_object(columns: list[str]) -> str | None:
    if not columns:
        return None
    return "to_json(struct_pack(" + ", ".join(f"{quote(c)} := {quote(c)}" for c in columns) + "))"


def _features_json(columns: list[str]) -> str | None:
    """The scorer's inputs as a JSON object of numbers (NaN as null: JSON has no NaN)."""
    if not columns:
        return None
    values = (f"CASE WHEN isnan(CAST({quote(c)} AS DOUBLE)) THEN NULL "
              f"ELSE CAST({quote(c)} AS DOUBLE) END" for c in columns)
    return ("to_json(struct_pack(" + ", ".join(f"{quote(c)} := {v}" for c, v in zip(
        columns, values, strict=True)) + "))")


def _attach_explanations(top: pa.Table, scorer: Scorer[Any] | None, reasons: int,
                         items: int) -> pa.Table:
    """Add the reasons and recommended items of the selected rows, as JSON text."""
    explained = scorer.explain(top, reasons) if scorer is not None and reasons else None
    recommended = scorer.recommend(top, items) if scorer is not None and items else None
    for name, values in ((REASONS, explained), (ITEMS, recommended)):
        column = (pa.array([json.dumps(v) for v in values], pa.string()) if values is not None
                  else pa.nulls(top.num_rows, pa.string()))
        if len(column) != top.num_rows:
            raise PluginError(f"scorer returned {len(column)} {name.strip('_')} for "
                              f"{top.num_rows} rows")
        top = top.append_column(name, column)
    return top


def tie_columns(schema: pa.Schema, spec: ProgramSpec) -> list[str]:
    """The columns that break ties between a customer's rows of equal score, after the
    subject: every other plain column the rows carry, by name, ascending, nulls last.
    Rows equal on all of them make equal candidates, so the choice is total and the
    same in every engine (DuckDB and Spark order these types alike)."""
    src = spec.source
    skip = {SCORE, src.customer_id, src.subject_id}
    plain = (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer,
             pa.types.is_floating, pa.types.is_boolean, pa.types.is_date, pa.types.is_timestamp)
    return sorted(f.name for f in schema if f.name not in skip and not f.name.startswith("__ceap")
                  and any(test(f.type) for test in plain))


def order_sql(spec: ProgramSpec, schema: pa.Schema) -> tuple[str, str]:
    """The window partition of one-per-customer and the order that ranks rows (best first,
    ties by subject, then by ``tie_columns``, nulls last); the top-k order adds the
    customer id."""
    src = spec.source
    cust = quote(src.customer_id)
    subj = quote(src.subject_id) if src.subject_id else "CAST(NULL AS VARCHAR)"
    partition = cust if spec.selection.one_per_customer else f"{cust}, {subj}"
    ties = "".join(f", {quote(c)} NULLS LAST" for c in tie_columns(schema, spec))
    return partition, f"{SCORE} DESC, {subj} NULLS LAST{ties}"


def best_rows(con: duckdb.DuckDBPyConnection, scored: pa.Table | str,
              spec: ProgramSpec, event_time: str | None = None) -> tuple[pa.Table, int, int]:
    """The best row per customer (or customer and subject), then the top k of those;
    with ``event_time`` (a stream), the best per dedup bucket of that time.

    ``scored`` is a table, or the name of a table in ``con`` (a batch run's scored rows,
    which DuckDB may hold on disk). Returns the top rows, how many best rows there were
    before the limit, and how many scored rows there were."""
    schema = (scored.schema if isinstance(scored, pa.Table)
              else con.sql(f"SELECT * FROM {quote(scored)} LIMIT 0").to_arrow_table().schema)
    best_sql, top_order = _best_sql(spec, *_partition(spec, schema, event_time))
    if isinstance(scored, str):  # on disk: materialise the best rows, count, take the top
        name = quote(scored)
        total = int(con.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0])
        con.execute("DROP TABLE IF EXISTS __ceap_best_rows")
        con.execute(f"CREATE TABLE __ceap_best_rows AS SELECT * FROM {name} {best_sql}")
        try:
            best = int(con.execute("SELECT count(*) FROM __ceap_best_rows").fetchall()[0][0])
            top = con.sql(f"SELECT * FROM __ceap_best_rows {top_order}").to_arrow_table()
        finally:
            con.execute("DROP TABLE __ceap_best_rows")
        return top, best, total
    # in memory (a stream's micro-batch): one query; BEST counts the best rows before the limit
    con.register(BATCH, scored)
    try:
        top = con.sql(_top_sql(BATCH, best_sql, top_order)).to_arrow_table()
    finally:
        con.unregister(BATCH)
    best = int(top.column(BEST)[0].as_py()) if top.num_rows else 0
    return top.drop_columns([BEST]), best, scored.num_rows


def _partition(spec: ProgramSpec, schema: pa.Schema, event_time: str | None) -> tuple[str, str]:
    partition, rank = order_sql(spec, schema)
    if event_time:  # real-time: one per customer (and subject) per dedup bucket of event time
        size = int(spec.selection.dedup_window.total_seconds())
        partition += f", floor(epoch({quote(event_time)}) / {size})"
    return partition, rank


def _best_sql(spec: ProgramSpec, partition: str, rank: str) -> tuple[str, str]:
    """The QUALIFY keeping the best row per partition, and the order (and limit) of the top."""
    src, sel = spec.source, spec.selection
    cust = quote(src.customer_id)
    subj = quote(src.subject_id) if src.subject_id else "CAST(NULL AS VARCHAR)"
    limit = f"LIMIT {int(sel.top_k)}" if sel.top_k else ""
    return (f"QUALIFY row_number() OVER (PARTITION BY {partition} ORDER BY {rank}) = 1",
            f"ORDER BY {SCORE} DESC, {cust}, {subj} NULLS LAST {limit}")


def _top_sql(source: str, best_sql: str, top_order: str) -> str:
    """The top rows of ``source``, each with ``BEST``: how many best rows there were."""
    return f"SELECT *, count(*) OVER () AS {BEST} FROM (SELECT * FROM {source} {best_sql}) {top_order}"


def select(con: duckdb.DuckDBPyConnection, scored: pa.Table | str, spec: ProgramSpec,
           run: RunInfo, funnel: Funnel, scorer: Scorer[Any] | None = None,
           event_time: str | None = None) -> pa.Table:
    """Turn the scored rows of a whole run into candidate rows (``CANDIDATE_SCHEMA``).

    Rows in memory that no scorer explains (``Scorer.explain`` and ``recommend`` not
    called: no ``selection.reasons``/``action.items``, or a scorer without them) take one
    query for both steps (a stream's micro-batch pays a query's fixed cost once); the
    same candidates and counts as the two steps."""
    if (isinstance(scored, pa.Table) and not _explains(scorer, spec)
            and HOLDOUT not in scored.column_names):
        return _select_in_one(con, scored, spec, run, funnel, scorer, event_time)
    top, best, total = best_rows(con, scored, spec, event_time)
    funnel.duplicate_customer += total - best
    return candidate_rows(con, top, best, spec, run, funnel, scorer, event_time)


def _explains(scorer: Scorer[Any] | None, spec: ProgramSpec) -> bool:
    """Whether ``_attach_explanations`` may give a value: the spec asks for reasons or
    items and the scorer's class has its own ``explain`` or ``recommend``."""
    if scorer is None:
        return False
    kind = type(scorer)
    return bool((spec.selection.reasons and kind.explain is not Scorer.explain)
                or (spec.action.items and kind.recommend is not Scorer.recommend))


def _select_in_one(con: duckdb.DuckDBPyConnection, scored: pa.Table, spec: ProgramSpec, run: RunInfo,
                   funnel: Funnel, scorer: Scorer[Any] | None, event_time: str | None) -> pa.Table:
    """``best_rows`` then ``candidate_rows`` as one query (no explanations to attach); a
    stream's best rows are picked in Arrow first (``best_arrow``), so that query has no
    window."""
    best_sql, top_order = _best_sql(spec, *_partition(spec, scored.schema, event_time))
    picked = (best_per_bucket(scored, spec, event_time, tie_columns(scored.schema, spec))
              if event_time else None)
    if picked is not None and event_time and candidates_arrow.supported(spec, picked.schema):
        made = candidates_arrow.candidate_rows(
            _top_k(picked, spec), spec, run.tenant_id, run.run_id, run.model,
            _global_share(spec, run), event_time, int(spec.selection.dedup_window.total_seconds()))
        if made is not None:
            funnel.duplicate_customer += scored.num_rows - picked.num_rows
            return _counted(made, picked.num_rows, funnel)
    inner = _top_sql(BATCH, best_sql, top_order) if picked is None else f"SELECT * FROM {BATCH} {top_order}"
    top = (f"(SELECT *, CAST(NULL AS VARCHAR) AS {REASONS}, CAST(NULL AS VARCHAR) AS {ITEMS} "
           f"FROM ({inner}))")
    sql, params = _candidate_sql(spec, run, scorer, event_time, top, holdout_given=False,
                                 extra=BEST if picked is None else None)
    table = run_rows(con, sql, scored if picked is None else picked, params)
    if picked is not None:
        best = picked.num_rows
    else:
        best = int(table.column(BEST)[0].as_py()) if table.num_rows else 0
        table = table.drop_columns([BEST])
    funnel.duplicate_customer += scored.num_rows - best
    return _counted(table, best, funnel)


def _top_k(best: pa.Table, spec: ProgramSpec) -> pa.Table:
    """The first ``top_k`` of the best rows by ``_best_sql``'s top order (all without top-k)."""
    k = spec.selection.top_k
    if not k or best.num_rows <= k:
        return best
    src = spec.source
    keys = [(SCORE, "descending", "at_end"), (src.customer_id, "ascending", "at_end"),
            *([(src.subject_id, "ascending", "at_end")] if src.subject_id else [])]
    return best.take(pc.sort_indices(best, sort_keys=keys)[:int(k)])


def _global_share(spec: ProgramSpec, run: RunInfo) -> float:
    """The global control share the candidate rows are drawn with (0 for exempt categories)."""
    return run.global_control if spec.experiment.uses_global_control(spec.action.category) else 0.0


def candidate_rows(con: duckdb.DuckDBPyConnection, top: pa.Table, best: int, spec: ProgramSpec,
                   run: RunInfo, funnel: Funnel, scorer: Scorer[Any] | None = None,
                   event_time: str | None = None) -> pa.Table:
    """The candidate rows of the selected ``top`` rows: arm (holdout, global control),
    variant, dedup key, payload, times.

    ``top`` may carry the holdout flag already as ``__ceap_holdout`` (computed where the
    selection ran, e.g. in Spark, with the same hash)."""
    top = _attach_explanations(top, scorer, spec.selection.reasons, spec.action.items)
    sql, params = _candidate_sql(spec, run, scorer, event_time, BATCH,
                                 holdout_given=HOLDOUT in top.column_names)
    con.register(BATCH, top)
    try:
        table = con.sql(sql, params=params).to_arrow_table()
    finally:
        con.unregister(BATCH)
    return _counted(table, best, funnel)


def _candidate_sql(spec: ProgramSpec, run: RunInfo, scorer: Scorer[Any] | None, event_time: str | None,
                   source: str, holdout_given: bool, extra: str | None = None
                   ) -> tuple[str, dict[str, Any]]:
    """The query making candidate rows of the top rows in the FROM item ``source`` (with
    their ``REASONS`` and ``ITEMS``), and its parameters; ``extra``: a column of the
    source's to keep as it is."""
    src, sel, action = spec.source, spec.selection, spec.action
    cust = quote(src.customer_id)
    subj = quote(src.subject_id) if src.subject_id else "CAST(NULL AS VARCHAR)"
    exp = spec.experiment
    variants = VariantSql(exp.variants, weights_for(exp.variants, run.weights), cust)
    context = _json_object(src.context) or "'{}'"
    payload_cols = _json_object(action.payload_columns)
    payload = variants.pick("__variant", "payload", "$payload")
    payload = f"json_merge_patch({payload}, {payload_cols})" if payload_cols else payload
    size = int(sel.dedup_window.total_seconds())
    if event_time:  # real-time: each candidate dates from its own triggering event
        created = f"CAST({quote(event_time)} AS TIMESTAMPTZ)"
        window = (f"strftime(to_timestamp(floor(epoch({quote(event_time)}) / {size}) * {size}), "
                  "'%Y%m%dT%H%M%S')")
    else:
        created, window = "CAST($created AS TIMESTAMPTZ)", "$window"
    global_share = _global_share(spec, run)
    params = {
        "tenant": run.tenant_id, "program": spec.name, "run_id": run.run_id,
        "action_type": action.type, "channels": json.dumps(action.channels),
        "template": action.template, "category": action.category, "model": run.model,
        "payload": json.dumps(action.payload), "shadow": spec.mode == "shadow",
        "digest": action.digest is not None,  # held for its digest (ceap.delivery.digest)
        "journey": spec.journey is not None,
        "priority": spec.priority, "delay": action.delay, "expiry": action.expiry,
        **({} if event_time else {"created": run.now, "window": window_label(run.now, spec)}),
        "holdout": exp.holdout, "global_control": global_share, **variants.params(),
    }
    if action.items:
        payload = f"json_merge_patch({payload}, json_object('items', json({ITEMS})))"
    features = _features_json(scorer.features()) if exp.learn and scorer is not None else None
    draw = f", {variants.draw()} AS {VariantSql.DRAW}" if variants else ""
    not_before = f"{created} + {variants.pick('__variant', 'delay', '$delay')}"
    holdout = holdout_sql(cust)
    if holdout_given:  # computed where the selection ran
        holdout = HOLDOUT
        del params["holdout"]
    kept = f", {quote(extra)}" if extra else ""
    return f"""
            WITH marked AS (
                SELECT *, {holdout} AS __holdout,
                       {global_control_sql(cust)} AS __global{draw} FROM {source}),
            assigned AS (
                SELECT *, {variants.name()} AS __variant,
                       CASE WHEN __global THEN 'global_control' WHEN __holdout THEN 'holdout'
                            ELSE 'treatment' END AS __arm FROM marked)
            SELECT $tenant AS tenant_id, $program AS program, $run_id AS run_id,
                   CAST({cust} AS VARCHAR) AS customer_id, CAST({subj} AS VARCHAR) AS subject_id,
                   {context} AS context, $action_type AS action_type,
                   {_kept_channels(variants.pick('__variant', 'channels', '$channels'), action)} AS channels,
                   {variants.pick('__variant', 'template', '$template')} AS template,
                   $category AS category, {SCORE} AS score,
                   $model AS model, {REASONS} AS reasons, {payload} AS payload,
                   CASE WHEN __arm <> 'treatment' THEN 'held_out' WHEN $digest THEN 'digest'
                        WHEN $shadow THEN 'shadow' WHEN $journey THEN 'journey' ELSE 'pending' END AS status,
                   CAST($priority AS BIGINT) AS priority,
                   {created} AS created_at,
                   {not_before} AS not_before,
                   {not_before} + $expiry AS expires_at,
                   $program || ':' || CAST({cust} AS VARCHAR) || ':'
                       || COALESCE(CAST({subj} AS VARCHAR), '') || ':' || {window} AS dedup_key,
                   __arm <> 'treatment' AS holdout, CAST(1 AS BIGINT) AS version,
                   __arm AS arm, __variant AS variant,
                   {features or 'CAST(NULL AS VARCHAR)'} AS features{kept}
            FROM assigned ORDER BY score DESC, customer_id, subject_id NULLS LAST
        """, params


def _kept_channels(channels: str, action: Action) -> str:
    """The SQL of the JSON list ``channels`` without the channels whose ``action.channels_if``
    column is not true on the row (null counts as false); written as ``json.dumps`` would."""
    if not action.channels_if:
        return channels
    keep = " AND ".join(f"(__ch <> '{name.replace(chr(39), chr(39) * 2)}' "
                        f"OR COALESCE(TRY_CAST({quote(column)} AS BOOLEAN), false))"
                        for name, column in action.channels_if.items())
    kept = f"list_filter(CAST(json({channels}) AS VARCHAR[]), lambda __ch: {keep})"
    return f"('[' || array_to_string(list_transform({kept}, lambda __ch: to_json(__ch)), ', ') || ']')"


def _counted(table: pa.Table, best: int, funnel: Funnel) -> pa.Table:
    """The candidate rows as ``CANDIDATE_SCHEMA``, counted in the funnel."""
    funnel.over_top_k += best - table.num_rows
    funnel.selected += table.num_rows
    arms = pc.value_counts(table.column("arm")).to_pylist() if table.num_rows else []
    counts = {a["values"]: a["counts"] for a in arms}
    held = table.num_rows - counts.get("treatment", 0)
    funnel.held_out += held
    funnel.global_control += counts.get("global_control", 0)
    funnel.targeted += table.num_rows - held
    return table if table.schema.equals(CANDIDATE_SCHEMA) else table.cast(CANDIDATE_SCHEMA)
