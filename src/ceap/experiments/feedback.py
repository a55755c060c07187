"""Outcomes back to online models: ``experiment.learn`` with a River scorer.

A program that learns keeps, on each candidate, the scorer's inputs at scoring time
(the ``features`` column). Once a treated candidate's outcome is final (see
``finality``), the scorer learns it: label true when a conversion is attributed to
the candidate, false otherwise, in the order of the candidates' touches. The model
is then saved as the next version in the model registry, which the program (whose
``scorer.model`` names the registry model without a version) scores with from its
next run. ``learned_outcomes`` records each learned candidate, so none is learned
twice; a crash between saving the model and recording the candidates can make the
next pass learn those again (at least once).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from ceap.experiments.finality import final_treated_sql
from ceap.experiments.reading import fetch_table, table_exists
from ceap.plugin import PluginContext
from ceap.registry import Registry, default_registry
from ceap.spec.program import ProgramSpec
from ceap.store.base import Store

_ROWS = pa.schema([("id", pa.int64()), ("features", pa.string()), ("converted", pa.int64())])


@dataclass(frozen=True)
class Learned:
    """What one pass learned: rows, positives, and the model versions before and after."""

    rows: int
    converted: int
    model_before: str | None = None
    model_after: str | None = None


def feature_table(rows: pa.Table, features: list[str]) -> pa.Table:
    """The ``features`` JSON column as one float column per scorer feature (DuckDB)."""
    con = duckdb.connect()
    try:
        con.register("rows", rows)
        columns = ", ".join(f"TRY_CAST(json_extract_string(features, $p{i}) AS DOUBLE) AS "
                            f"\"{f.replace(chr(34), chr(34) * 2)}\"" for i, f in enumerate(features))
        params = {f"p{i}": '$."' + f.replace('"', '\\"') + '"' for i, f in enumerate(features)}
        return con.sql(f"SELECT {columns} FROM rows", params=params).to_arrow_table()
    finally:
        con.close()


def learn_from_outcomes(store: Store, spec: ProgramSpec, context: PluginContext, now: datetime,
                        within: timedelta, registry: Registry | None = None) -> Learned:
    """Teach the program's River scorer the final outcomes it has not learned yet."""
    if not spec.experiment.learn or spec.scorer is None:
        return Learned(0, 0)
    tenant = context.tenant
    with store.tx() as tx:
        if not table_exists(tx, "conversions"):
            return Learned(0, 0)
        sql, params = final_treated_sql(
            tx, "c.id, CAST(c.features AS TEXT), converted", tenant, spec.name, now, within,
            where="AND c.features IS NOT NULL AND NOT EXISTS (SELECT 1 FROM learned_outcomes l "
                  "WHERE l.tenant_id = c.tenant_id AND l.candidate_id = c.id)",
            tail="ORDER BY COALESCE(d.sent_at, c.not_before), c.id")
        rows = fetch_table(tx, sql, params, _ROWS)
    if not rows.num_rows:
        return Learned(0, 0)
    scorer: Any = (registry or default_registry()).create("scorer", spec.scorer, context)
    labels = np.asarray(rows.column("converted").to_numpy(zero_copy_only=False)) > 0
    before = scorer.model_id()
    scorer.learn(feature_table(rows, scorer.features()), labels)
    artefact = scorer.save()
    ids = rows.column("id").to_pylist()
    with store.tx() as tx:
        tx.executemany(
            "INSERT INTO learned_outcomes (tenant_id, candidate_id, program, converted, model, "
            "learned_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, candidate_id) DO NOTHING",
            [(tenant, i, spec.name, bool(y), artefact.meta.ref, tx.ts(now))
             for i, y in zip(ids, labels.tolist(), strict=True)])
    return Learned(len(ids), int(labels.sum()), before, artefact.meta.ref)
