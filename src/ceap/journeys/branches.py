"""Branch conditions, evaluated once per tick for every active entry in one DuckDB query
per branch step: an entry's data (score, context, payload) does not change while it
walks, so neither does its answer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from ceap.journeys.state import Entry
from ceap.spec.journey import Journey
from ceap.sqlexpr import BATCH, sandboxed_connection


def entry_table(entries: Sequence[Entry]) -> pa.Table:
    """One row per entry: ``entry_id``, ``score``, then every context column and payload
    field (the context wins a name both have). A field whose values differ in type from
    row to row is read as text (JSON for lists and objects)."""
    columns: dict[str, list[Any]] = {"entry_id": [e.id for e in entries],
                                     "score": [e.data.get("score") for e in entries]}
    names: dict[str, None] = {}
    for e in entries:
        names.update(dict.fromkeys(e.data.get("payload") or {}))
        names.update(dict.fromkeys(e.data.get("context") or {}))
    for name in names:
        if name in columns:
            continue
        columns[name] = [(e.data.get("context") or {}).get(name, (e.data.get("payload") or {}).get(name))
                         for e in entries]
    arrays = {}
    for name, values in columns.items():
        try:
            arrays[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays[name] = pa.array([None if v is None else v if isinstance(v, str) else json.dumps(v)
                                     for v in values], pa.string())
        if pa.types.is_null(arrays[name].type):
            arrays[name] = arrays[name].cast(pa.string())
    return pa.table(arrays)


def branch_results(journey: Journey, entries: Sequence[Entry]) -> dict[str, dict[int, bool | str]]:
    """Branch step id -> entry id -> whether its condition holds (null counts as false),
    or the error text when the condition cannot be evaluated (a column no entry has)."""
    steps = [s for s in journey.steps if s.branch is not None]
    if not steps or not entries:
        return {}
    table = entry_table(entries)
    con = sandboxed_connection()
    out: dict[str, dict[int, bool | str]] = {}
    try:
        con.register(BATCH, table)
        for step in steps:
            assert step.branch is not None
            try:
                rows = con.execute(f"SELECT entry_id, COALESCE(CAST(({step.branch.if_}) AS BOOLEAN), false) "
                                   f"FROM {BATCH}").fetchall()
            except Exception as exc:  # duckdb.Error: a missing column, a bad cast
                text = str(exc).strip().splitlines()[0]
                out[step.id] = dict.fromkeys(table.column("entry_id").to_pylist(), text)
                continue
            out[step.id] = {int(i): bool(v) for i, v in rows}
    finally:
        con.close()
    return out
