"""A program made executable: plugins built, columns checked, stages ready.

A plan is checked against the source's schema before any row is read, so a
filter naming a missing column fails the run up front, naming the filter.
The same plan runs a batch job's big batches and a stream's micro-batches.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ceap.connectors.base import Connector
from ceap.errors import PluginError, SourceError, unknown_column_message
from ceap.filters.base import Filter
from ceap.pipeline import conform
from ceap.pipeline.funnel import Funnel
from ceap.plugin import PluginContext
from ceap.registry import Registry, default_registry
from ceap.scorers.base import Scorer
from ceap.spec.program import ProgramSpec
from ceap.sqlexpr import BATCH, evaluate, missing_column, quote, sandboxed_connection

SCORE = "__ceap_score"
#: an expression that may hold a window function (``scored_sql`` leaves it to its stage)
_WINDOW = re.compile(r"\bover\b", re.IGNORECASE)
RUN_COLUMNS = ("run_ts", "run_date")


def config_field(prefix: str, config: Any, column: str) -> str:
    """``prefix.<field>``: the field of a plugin's config the user wrote ``column`` in (its value,
    an item of its list, a key of its mapping, a word of its expression); else ``prefix.model``
    when the config names a model (the column came from the model's metadata), else ``prefix``."""
    word = re.compile(rf"(?<![\w.]){re.escape(column)}(?!\w)")
    for name in type(config).model_fields:
        if name in ("type", "id", "description"):
            continue
        value = getattr(config, name, None)
        if (value == column or (isinstance(value, list | tuple | dict) and column in value)
                or (isinstance(value, str) and word.search(value))):
            return f"{prefix}.{name}"
    return f"{prefix}.model" if "model" in type(config).model_fields else prefix


@dataclass
class BatchOutcome:
    """What one batch left after filters, scoring and the threshold."""

    kept: pa.Table
    quarantine: pa.Table


class Plan:
    """The stages of one program, bound to its plugins."""

    def __init__(self, spec: ProgramSpec, context: PluginContext,
                 registry: Registry | None = None):
        registry = registry or default_registry()
        self.spec = spec
        self.context = context
        self.connector: Connector[Any] = registry.create("connector", spec.source, context)
        self.filters: list[Filter[Any]] = [registry.create("filter", f, context)
                                           for f in spec.filters]
        self.scorer: Scorer[Any] | None = (registry.create("scorer", spec.scorer, context)
                                           if spec.scorer else None)
        self.con = sandboxed_connection()
        self._columns: list[str] | None = None
        #: more columns to carry to selection (the stream worker keeps the event time)
        self.keep_also: list[str] = []

    # -- checks before reading ---------------------------------------------
    def check(self, schema: pa.Schema | None = None) -> None:
        """Check every column the program names against the source's schema."""
        schema = schema or self.connector.schema()
        conform.check_columns(schema, self.spec.source)
        empty = schema.empty_table()
        try:
            conformed = evaluate(self.con, empty, conform.conform_sql(schema, self.spec.source))
        except duckdb.Error as exc:
            raise conform.ensure_castable(exc, self.spec.source) from None
        good, _ = conform.split(conformed)
        table = self._with_features(good, datetime.now(UTC), where="features")
        for i, f in enumerate(self.filters):
            expr = f.sql()
            if expr is not None:
                self._try(table, f"COALESCE(({expr}), false)", f"filters[{i}] ({f.id})")
            else:
                self._require(table, f.columns() or set(), f"filters[{i}] ({f.id})")
        if self.scorer is not None:
            features = set(self.scorer.features())
            missing = sorted(features - set(table.column_names))
            where = config_field("scorer", self.scorer.config, missing[0]) if missing else "scorer"
            self._require(table, features, where)
            scorer_sql = self.scorer.sql()
            if scorer_sql is not None:  # an expression scorer's expr, bound now, not at scoring
                config = self.scorer.config
                self._try(table, f"{scorer_sql} AS score", "scorer",
                          lambda column: config_field("scorer", config, column))
        self._require(table, set(self.spec.action.payload_columns), "action.payload_columns")
        self._require(table, set(self.spec.action.channels_if.values()), "action.channels_if")
        self._columns = table.column_names

    def _try(self, table: pa.Table, select: str, where: str,
             field: Callable[[str], str] | None = None) -> pa.Table:
        """``select`` over ``table``; an error names ``where`` (or ``field(column)`` for
        a column the rows lack)."""
        try:
            return evaluate(self.con, table, select)
        except duckdb.Error as exc:
            column = missing_column(exc)
            if column:
                raise SourceError(_unknown(field(column) if field else where, column, table)) from None
            text = str(exc).strip().splitlines()[0]
            raise SourceError(f"{where}: {text}") from None

    @staticmethod
    def _require(table: pa.Table, columns: set[str], where: str) -> None:
        missing = sorted(columns - set(table.column_names))
        if missing:
            raise SourceError(_unknown(where, missing[0], table))

    def _with_features(self, table: pa.Table, now: datetime, where: str = "") -> pa.Table:
        """Add run_ts/run_date and the program's feature columns."""
        ts = now.astimezone(UTC).replace(tzinfo=None)
        if not self.spec.features:  # only the run columns: no query needed (a stream's micro-batch)
            for name, value, kind in (("run_ts", ts, pa.timestamp("us")),
                                      ("run_date", ts.date(), pa.date32())):
                if name not in table.column_names:
                    table = table.append_column(name, pa.repeat(pa.scalar(value, kind), table.num_rows))
            return table
        extra = [f"CAST($1 AS TIMESTAMP) AS {c}" if c == "run_ts" else f"CAST($1 AS DATE) AS {c}"
                 for c in RUN_COLUMNS if c not in table.column_names]
        sql_from = f"(SELECT *{', ' if extra else ''}{', '.join(extra)} FROM {BATCH})"
        names = set(table.column_names) | set(RUN_COLUMNS)
        for name, expr in self.spec.features.items():
            col = quote(name)
            select = f"* REPLACE (({expr}) AS {col})" if name in names else f"*, ({expr}) AS {col}"
            sql_from = f"(SELECT {select} FROM {sql_from})"
            names.add(name)
        try:
            self.con.register(BATCH, table)
            try:
                return self.con.sql(f"SELECT * FROM {sql_from}", params=[ts]).to_arrow_table()
            finally:
                self.con.unregister(BATCH)
        except duckdb.Error as exc:
            column = missing_column(exc)
            culprit = next((n for n, e in self.spec.features.items() if column and column in e),
                           None)
            at = f"features.{culprit}" if culprit else (where or "features")
            if column:
                raise SourceError(_unknown(at, column, table)) from None
            raise SourceError(f"{at}: {str(exc).strip().splitlines()[0]}") from None

    # -- the stages ------------------------------------------------------
    def process(self, batch: pa.RecordBatch | pa.Table, funnel: Funnel,
                now: datetime) -> BatchOutcome:
        """Conform, add features, filter, score and apply the threshold to one batch."""
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        funnel.read += table.num_rows
        conformed = evaluate(self.con, table, conform.conform_sql(table.schema, self.spec.source))
        return self._after_conform(conformed, funnel, now)

    def process_conformed(self, conformed: pa.Table, funnel: Funnel, now: datetime) -> BatchOutcome:
        """``process`` over rows a caller already ran through ``conform.conform_sql`` (as part
        of its own query: the stream worker conforms in the query that makes its rows)."""
        funnel.read += conformed.num_rows
        return self._after_conform(conformed, funnel, now)

    # -- one query for a micro-batch ------------------------------------------
    def scored_sql(self, schema: pa.Schema, conformed: str) -> str | None:
        """The query doing what ``process_conformed`` asks of DuckDB, in one: over the FROM
        item ``conformed`` (rows of ``schema`` run through ``conform.conform_sql``), the run
        columns, a flag per filter (``__ceap_k{i}``: kept by filters 0..i; no filter is
        evaluated on a row conform set aside, or on one an earlier filter removed, as in
        ``_filter``) and the score of the rows every filter kept. ``process_scored`` reads
        its result. None when a stage has no SQL form (a filter or scorer of Python code)
        or the program has ``features``, and when an expression may hold a window function
        (``OVER``): over this query's rows (quarantined ones too) it would not see the rows
        the stage sees alone."""
        if self.spec.features or any(f.sql() is None for f in self.filters):
            return None
        score = self.scorer.sql() if self.scorer is not None else None
        if self.scorer is not None and score is None:
            return None
        if any(_WINDOW.search(e) for e in [*(str(f.sql()) for f in self.filters), score or ""]):
            return None
        run = {"run_ts": "CAST($run_ts AS TIMESTAMP)", "run_date": "CAST($run_date AS DATE)"}
        extra = "".join(f", {v} AS {c}" for c, v in run.items() if c not in schema.names)
        sql = f"SELECT *{extra} FROM ({conformed})"
        previous = f"({conform.REASON} IS NULL)"
        for i, f in enumerate(self.filters):
            sql = (f"SELECT *, CASE WHEN {previous} THEN COALESCE(({f.sql()}), false) ELSE false END "
                   f"AS __ceap_k{i} FROM ({sql})")
            previous = f"__ceap_k{i}"
        if score is not None:
            sql = f"SELECT *, CASE WHEN {previous} THEN {score} END AS {SCORE} FROM ({sql})"
        return sql

    @staticmethod
    def run_params(schema: pa.Schema, now: datetime) -> dict[str, object] | None:
        """The parameters of ``scored_sql``'s query at ``now`` (its text stays the same from
        one micro-batch to the next: ``sqlexpr.run_arrow`` parses it once)."""
        ts = now.astimezone(UTC).replace(tzinfo=None)
        values: dict[str, object] = {"run_ts": ts, "run_date": ts.date()}
        params = {c: v for c, v in values.items() if c not in schema.names}
        return params or None

    def process_scored(self, scored: pa.Table, funnel: Funnel) -> BatchOutcome:
        """``process_conformed`` over the result of ``scored_sql``: the same funnel counts,
        kept rows and quarantine."""
        funnel.read += scored.num_rows
        good, bad = conform.split(scored)
        funnel.quarantined += bad.num_rows
        if bad.num_rows:
            funnel.quarantine_reasons.update(bad.column("reason").to_pylist())
        alive = np.ones(good.num_rows, dtype=bool)
        for i, f in enumerate(self.filters):
            kept = np.asarray(good.column(f"__ceap_k{i}").to_numpy(zero_copy_only=False), dtype=bool)
            funnel.filters[f.id] = funnel.filters.get(f.id, 0) + int(np.count_nonzero(alive & ~kept))
            alive = kept
        survivors = good.filter(alive) if not alive.all() else good
        funnel.eligible += survivors.num_rows
        if self.scorer is None:
            scores = np.ones(survivors.num_rows, dtype=np.float64)
        else:
            scores = np.asarray(survivors.column(SCORE).to_numpy(zero_copy_only=False), dtype=np.float64)
            survivors = survivors.drop_columns([SCORE])
        return BatchOutcome(self._keep_scored(survivors, scores, funnel).select(
            [*self._keep_columns(), SCORE]), bad)

    def _after_conform(self, conformed: pa.Table, funnel: Funnel, now: datetime) -> BatchOutcome:
        good, bad = conform.split(conformed)
        funnel.quarantined += bad.num_rows
        if bad.num_rows:
            funnel.quarantine_reasons.update(bad.column("reason").to_pylist())
        table = self._with_features(good, now)
        alive = self._filter(table, funnel)
        survivors = table.filter(alive) if not alive.all() else table
        funnel.eligible += survivors.num_rows
        return BatchOutcome(self._score(survivors, funnel).select([*self._keep_columns(), SCORE]), bad)

    def _filter(self, table: pa.Table, funnel: Funnel) -> np.ndarray:
        """Apply the filters in order; each one sees only the rows the earlier ones kept.

        SQL filters run in one DuckDB query whose flag ``k{i}`` is "kept by filters
        0..i": a filter's expression is evaluated (CASE) only on rows still alive,
        so a cast that would fail on a removed row does not fail the run.
        """
        alive = np.ones(table.num_rows, dtype=bool)
        start = 0
        while start < len(self.filters):
            end = start
            while end < len(self.filters) and self.filters[end].sql() is not None:
                end += 1
            if end > start:
                alive = self._sql_filters(table, start, end, alive, funnel)
                start = end
                continue
            f = self.filters[start]
            mask = np.asarray(pc.fill_null(f.mask(table), False).to_numpy(zero_copy_only=False),
                              dtype=bool)
            if mask.shape != (table.num_rows,):
                raise PluginError(f"filter {f.id!r} returned {mask.shape[0]} values "
                                  f"for {table.num_rows} rows")
            funnel.filters[f.id] = funnel.filters.get(f.id, 0) + int(np.count_nonzero(alive & ~mask))
            alive &= mask
            start += 1
        return alive

    def _chain(self, start: int, stop: int) -> str:
        """The query flagging, for filters start..stop-1, the rows each keeps in turn."""
        sql = f"SELECT * FROM {BATCH}"
        previous = "__ceap_alive"
        for i in range(start, stop):
            sql = (f"SELECT *, CASE WHEN {previous} THEN COALESCE(({self.filters[i].sql()}), false) "
                   f"ELSE false END AS __ceap_k{i} FROM ({sql})")
            previous = f"__ceap_k{i}"
        flags = ", ".join(f"__ceap_k{i}" for i in range(start, stop))
        return f"SELECT {flags} FROM ({sql})"

    def _sql_filters(self, table: pa.Table, start: int, end: int, alive: np.ndarray,
                     funnel: Funnel) -> np.ndarray:
        with_alive = table.append_column("__ceap_alive", pa.array(alive))
        self.con.register(BATCH, with_alive)
        try:
            try:
                flagged = self.con.sql(self._chain(start, end)).to_arrow_table()
            except duckdb.Error as exc:
                raise self._which_filter_failed(start, end, exc) from None
        finally:
            self.con.unregister(BATCH)
        for i in range(start, end):
            kept = np.asarray(flagged.column(f"__ceap_k{i}").to_numpy(zero_copy_only=False), dtype=bool)
            f = self.filters[i]
            funnel.filters[f.id] = funnel.filters.get(f.id, 0) + int(np.count_nonzero(alive & ~kept))
            alive = kept
        return alive

    def _which_filter_failed(self, start: int, end: int, exc: duckdb.Error) -> SourceError:
        """Name the first filter whose expression fails on the rows it sees (error path only)."""
        for stop in range(start + 1, end + 1):
            try:
                self.con.sql(self._chain(start, stop)).fetchall()
            except duckdb.Error as inner:
                f = self.filters[stop - 1]
                return SourceError(f"filters[{stop - 1}] ({f.id}): "
                                   f"{str(inner).strip().splitlines()[0]}")
        return SourceError(f"filters: {str(exc).strip().splitlines()[0]}")

    def _keep_columns(self) -> list[str]:
        src = self.spec.source
        keep = [src.customer_id, *([src.subject_id] if src.subject_id else []), *src.context,
                *self.spec.action.payload_columns, *self.spec.action.channels_if.values(),
                *(self.scorer.features() if self.scorer else []), *self.keep_also]
        return list(dict.fromkeys(keep))

    def _score(self, table: pa.Table, funnel: Funnel) -> pa.Table:
        if self.scorer is None:
            scores = np.ones(table.num_rows, dtype=np.float64)
        else:
            scores = np.asarray(self.scorer.score(table), dtype=np.float64)
            if scores.shape != (table.num_rows,):
                raise PluginError(f"scorer returned {scores.shape} scores for "
                                  f"{table.num_rows} rows")
        return self._keep_scored(table, scores, funnel)

    def _keep_scored(self, table: pa.Table, scores: np.ndarray, funnel: Funnel) -> pa.Table:
        """The rows scored and at or above the threshold, with their ``SCORE``."""
        scored = ~np.isnan(scores)
        funnel.unscored += int(np.count_nonzero(~scored))
        keep = scored
        threshold = self.spec.selection.threshold
        if threshold is not None:
            above = scored & (scores >= threshold)
            funnel.below_threshold += int(np.count_nonzero(scored & ~above))
            keep = above
        table = table.append_column(SCORE, pa.array(scores, pa.float64()))
        return table.filter(keep) if not keep.all() else table

    def model_id(self) -> str:
        return self.scorer.model_id() if self.scorer else "none"

    def close(self) -> None:
        self.con.close()


def _unknown(where: str, column: str, table: pa.Table) -> str:
    """The message for a column the rows lack; for events, how an attribute becomes one."""
    events = "event_type" in table.column_names and "attributes" in table.column_names
    return unknown_column_message(where, column, table.column_names, events)
