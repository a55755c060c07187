"""A small micro-batch's scored rows without a query, for plain programs.

``ProgramRunner`` makes a program's rows with one DuckDB query over
``incremental.rows_input``'s table: the trigger events in event-time order, their
declared attributes (``attributes->>name``), their state features, conformed
(``conform.conform_sql``), filtered and scored (``Plan.scored_sql``). On a handful of rows
binding that query costs more than all it computes; ``SmallRows`` makes the same table in
Arrow and numpy (``pipeline.exprnp`` for the filters and the score) when every step is
one it reproduces exactly, and otherwise gives None, and the query runs:

- the program: filters and scorer of SQL that ``exprnp`` compiles (filters of boolean,
  a score of integer or double), declared columns (``source.columns``) all of ``string``;
- the micro-batch: at most ``MAX_ROWS`` rows (the attributes are read row by row), all of
  a trigger type (no timer row), each with a customer id whose first and last characters
  are printable ASCII other than a space (so ``trim`` leaves it non-empty and no row is
  quarantined), attributes without a backslash (each JSON text then reads alike in
  DuckDB and here) whose declared attributes (named as identifiers) are text or absent or
  null, none twice, and no ``__absence_`` attribute; values ``exprnp`` is sure of.

The table has the query's columns, types and row order (``ORDER BY event_ts, event_id``):
it is built against the schema of the query's first result (``build``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ceap.pipeline import conform, exprnp
from ceap.pipeline.plan import SCORE, Plan
from ceap.realtime.incremental import COLUMN
from ceap.spec.program import ProgramSpec

#: at most this many rows are made here (the attributes are parsed row by row): the query
#: costs less from about 1,100 rows on (bench/README.md)
MAX_ROWS = 512
_SAFE_END = frozenset(chr(c) for c in range(0x21, 0x7F))
_BASE = {"event_id": "event_id", "tenant_id": "tenant_id", "customer_id": "customer_id",
         "event_type": "type", "event_ts": "ts", "attributes": "attributes"}


class SmallRows:
    """The scored rows of one program's small micro-batches (``rows``)."""

    def __init__(self, spec: ProgramSpec, schema: pa.Schema, filters: list[exprnp.Expr],
                 score: exprnp.Expr | None, attributes: list[str], features: dict[str, str],
                 absent: list[str]):
        self.spec, self.schema, self.filters, self.score = spec, schema, filters, score
        #: declared attributes (columns of text); feature columns: name -> rows_input's column
        self.attributes, self.features, self.absent = attributes, features, absent
        self.kinds = {f.name: exprnp.kind_of(f.type) for f in schema}

    @classmethod
    def build(cls, spec: ProgramSpec, plan: Plan, scored: pa.Schema) -> SmallRows | None:
        """For the program of ``plan`` whose scored query gave rows of ``scored``; None when
        the program is not one made here."""
        src = spec.source
        columns: dict[str, str] = dict(getattr(src, "columns", {}) or {})
        if spec.features or any(kind != "string" for kind in columns.values()):
            return None
        attributes = [c for c in columns if c != "customer_id"]
        if not all(c.isidentifier() for c in attributes):
            return None
        features: dict[str, str] = {}
        absent: list[str] = []
        for i, (name, f) in enumerate(spec.state.items()):
            if f.kind == "absence":
                absent.append(name)
                continue
            features[name] = COLUMN + str(i)
            features.update({f"{name}_{a}": f"{COLUMN}{i}_{j}" for j, a in enumerate(f.capture)})
        n_filters = len(plan.filters)
        expected = [*_BASE, *attributes]
        for name, f in spec.state.items():
            expected += [name, *(f"{name}_{a}" for a in f.capture)]
        expected += [conform.REASON, conform.RAW, *(c for c in ("run_ts", "run_date") if c in scored.names
                                                     and c not in expected)]
        expected += [f"__ceap_k{i}" for i in range(n_filters)]
        expected += [SCORE] if plan.scorer is not None else []
        if scored.names != expected:
            return None
        kinds: dict[str, str | None] = {f.name: exprnp.kind_of(f.type) for f in scored
                                        if not f.name.startswith("__ceap")}
        filters = []
        for flt in plan.filters:
            sql = flt.sql()
            made = exprnp.compile_expr(sql, kinds) if sql is not None else None
            if made is None or made[1] not in (exprnp.BOOL, exprnp.NULL):
                return None
            filters.append(made[0])
        score = None
        if plan.scorer is not None:
            sql = plan.scorer.sql()
            made = exprnp.compile_expr(sql, kinds) if sql is not None else None
            if made is None or made[1] not in (exprnp.INT, exprnp.DBL):
                return None
            score = made[0]
        return cls(spec, scored, filters, score, attributes, features, absent)

    def rows(self, ready: pa.Table, now: datetime) -> pa.Table | None:
        """The scored rows of ``incremental.rows_input``'s ``ready``, as the query makes
        them; None when a row is not one made here (see the module's docstring)."""
        n = ready.num_rows
        if not n or n > MAX_ROWS:
            return None
        on = self.spec.source.on  # type: ignore[attr-defined]
        if not pc.all(pc.is_in(ready.column("type"), value_set=pa.array(on, pa.string()))).as_py():
            return None
        customers = ready.column("customer_id")
        if customers.null_count or any(not c or c[0] not in _SAFE_END or c[-1] not in _SAFE_END
                                       for c in customers.to_pylist()):
            return None
        texts = ready.column("attributes")
        if texts.null_count or pc.any(pc.match_substring(texts, "\\")).as_py():
            return None
        order = pc.sort_indices(ready, sort_keys=[("ts", "ascending"), ("event_id", "ascending")])
        ready = ready.take(order)
        values = self._attributes(ready.column("attributes").to_pylist())
        if values is None:
            return None
        columns: dict[str, Any] = {name: ready.column(source) for name, source in _BASE.items()}
        columns.update({a: pa.array(v, pa.string()) for a, v in zip(self.attributes, values, strict=True)})
        columns.update({name: ready.column(source) for name, source in self.features.items()})
        columns.update({name: pa.array(np.zeros(n, dtype=bool)) for name in self.absent})
        ts = now.astimezone(UTC).replace(tzinfo=None)
        columns["run_ts"] = pa.array([ts] * n, pa.timestamp("us"))
        columns["run_date"] = pa.array([ts.date()] * n, pa.date32())
        cols = _Columns(columns, self.kinds)
        try:
            alive = np.ones(n, dtype=bool)  # no row quarantined (see ``rows``' checks)
            for i, f in enumerate(self.filters):
                kept = f(cols, n)
                alive = alive & kept.values & kept.valid
                columns[f"__ceap_k{i}"] = pa.array(alive)
            if self.score is not None:
                s = self.score(cols, n)
                columns[SCORE] = pa.array(s.values, mask=~(s.valid & alive))
        except exprnp.Unsure:
            return None
        arrays = [columns[f.name] if f.name not in (conform.REASON, conform.RAW) else pa.nulls(n, f.type)
                  for f in self.schema]
        try:
            return pa.Table.from_arrays([a.cast(f.type) for a, f in zip(arrays, self.schema, strict=True)],
                                        schema=self.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            return None

    def _attributes(self, texts: list[str]) -> list[list[str | None]] | None:
        """Each declared attribute of each row as ``attributes->>name`` gives it (a text, or
        None when absent or null); None when one is of another kind, a text is not a JSON
        object, or a row has an ``__absence_`` attribute of the program."""
        out: list[list[str | None]] = [[] for _ in self.attributes]
        absent = [f"__absence_{name}" for name in self.absent]
        keys = [f'"{name}":' for name in self.attributes]
        for text in texts:
            if any(text.count(key) > 1 for key in keys):  # a key twice: which one DuckDB reads
                return None
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError:
                return None
            if type(value) is not dict or any(a in value for a in absent):
                return None
            for name, column in zip(self.attributes, out, strict=True):
                got = value.get(name)
                if got is not None and type(got) is not str:
                    return None
                column.append(got)
        return out


class _Columns(dict[str, exprnp.Col]):
    """The columns the expressions read, converted when first read."""

    def __init__(self, arrays: dict[str, Any], kinds: dict[str, str | None]):
        super().__init__()
        self.arrays, self.kinds = arrays, kinds

    def __missing__(self, name: str) -> exprnp.Col:
        kind = self.kinds[name]
        assert kind is not None
        col = exprnp.column(self.arrays[name], kind)
        self[name] = col
        return col
