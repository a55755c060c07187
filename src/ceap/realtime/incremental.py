"""A micro-batch's state features without a window query: vectorized over each
customer's events sorted by event time (numpy ``searchsorted`` on one composite key
of customer and time), for the kinds that need no attribute value (and a ``sequence``'s
``capture`` of text attributes).

``count``, ``sequence`` (its ``capture`` too) and ``time_since`` are computed here,
and which rows the program gets (fresh events, timer rows, and the logged events of a
customer at or after its earliest fresh event: ``features.rows_sql``); ``absence``
stays the plain SQL item it always was (no window). The query that conforms, filters
and scores the rows then reads these columns and holds no window. A program with any
other feature (``sum``, ``distinct``, ``last``, a ``where``) keeps the window query of
``ceap.realtime.features``; so does a micro-batch whose times do not fit the composite
key, or whose captured attributes are not all text (``rows_input`` gives None).

The same frames as the window functions: ``count`` and ``sequence`` take the events of
their type with ``ts`` in ``[ts - window, ts]`` (``RANGE ... CURRENT ROW``: events at
the same time count); ``time_since`` takes the latest event of its type strictly
before the row's time. (The window query's ``ROWS ... 1 PRECEDING`` leaves the order of
events at the same time to its sort, so which of two events at one instant it sees
first is arbitrary there; here neither sees the other.) A ``capture`` takes the
attribute of the latest ``first`` event in the sequence's frame that has it (``arg_max``
skips nulls); of two such events at one instant, the window query takes either.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ceap.realtime.attributes_text import may_hold
from ceap.realtime.features import FRESH, attribute_sql, feature_sql
from ceap.realtime.spec import StateFeature
from ceap.sqlexpr import BATCH, quote

#: the kinds computed here (``absence`` needs no window: its SQL item is kept)
KINDS = ("count", "sequence", "time_since", "absence")
#: the prefix of the feature columns ``rows_input`` adds
COLUMN = "__ceap_sf_"
_LIMIT = 2 ** 62


def supported(state: dict[str, StateFeature]) -> bool:
    """Whether every feature of the program can be computed here."""
    return all(f.kind in KINDS and not f.where and (not f.capture or f.kind == "sequence")
               for f in state.values())


def _micros(span: timedelta) -> int:
    return int(span.total_seconds() * 1e6)  # as features._range writes the window


def rows_sql(state: dict[str, StateFeature], on: list[str], columns: dict[str, str]) -> str:
    """The query making the program's rows from ``rows_input``'s table (as ``batch``):
    the columns, names and order of ``features.rows_sql``'s, without a window."""
    select = ["event_id", "tenant_id", "customer_id", "type AS event_type", "ts AS event_ts",
              "attributes"]
    select += attribute_sql({c: t for c, t in columns.items() if c not in ("customer_id",)})
    for i, (name, feature) in enumerate(state.items()):
        if feature.kind == "absence":
            select += feature_sql(name, feature)
        else:
            select.append(f"{quote(COLUMN + str(i))} AS {quote(name)}")
            select += [f"{quote(f'{COLUMN}{i}_{j}')} AS {quote(f'{name}_{a}')}"
                       for j, a in enumerate(feature.capture)]
    types = ", ".join("'" + t.replace("'", "''") + "'" for t in on) or "NULL"
    return (f"SELECT {', '.join(select)} FROM {BATCH} "
            f"WHERE (type IN ({types}) OR attributes->>'__timer' IS NOT NULL) "
            "ORDER BY event_ts, event_id")


def rows_input(combined: pa.Table, state: dict[str, StateFeature], on: list[str]) -> pa.Table | None:
    """The rows of ``combined`` (history and the micro-batch, ``FRESH`` marking the
    latter) that may be the program's rows, each with its state features (``COLUMN`` +
    the feature's position); None when the times do not fit the composite key."""
    n = combined.num_rows
    if not n:
        return None
    ts_col = combined.column("ts")
    if ts_col.null_count:
        return None
    ts = pc.cast(ts_col, pa.int64()).to_numpy()
    types = combined.column("type").combine_chunks()
    fresh = np.asarray(combined.column(FRESH).to_numpy(), dtype=bool)
    tenants = pc.dictionary_encode(combined.column("tenant_id").combine_chunks())
    customers_col = combined.column("customer_id").combine_chunks()
    customers = pc.dictionary_encode(customers_col)
    width_c = len(customers.dictionary) + 1
    t_codes = pc.fill_null(tenants.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64) + 1
    c_codes = pc.fill_null(customers.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64) + 1
    n_tenants = len(tenants.dictionary) + 1
    key = t_codes * width_c + c_codes
    spans = [_micros(f.span()) for f in state.values() if f.kind in ("count", "sequence")]
    base = int(ts.min()) - max(spans, default=0) - 1
    rel = ts - base
    width = int(rel.max()) + 1
    if n_tenants * width_c * width >= _LIMIT:
        return None
    comp = key * width + rel

    def is_type(name: str) -> np.ndarray:
        hit = pc.fill_null(pc.equal(types, name), False)
        return np.asarray(hit.to_numpy(zero_copy_only=False), dtype=bool)

    # which rows: fresh ones, and (with a feature over history) a customer's logged events at
    # or after its earliest fresh event that is not a timer row
    keep = fresh.copy()
    if any(f.kind != "absence" for f in state.values()):
        real = fresh & ~is_type("__timer")
        if real.any():
            first = np.full(n_tenants * width_c, np.iinfo(np.int64).max, dtype=np.int64)
            np.minimum.at(first, key[real], ts[real])
            named = customers_col.is_valid().to_numpy(zero_copy_only=False)
            keep |= named & (ts >= first[key])
    # only rows the query can keep: of the trigger types, or maybe with a ``__timer``
    # attribute (its name in the JSON text, or an escape that may spell it: looked for value by
    # value only when the column's bytes hold either)
    attributes = combined.column("attributes").combine_chunks()
    may = pc.is_in(types, value_set=pa.array([*on, "__timer"], pa.string()))
    if attributes.null_count or may_hold(attributes, b"__timer") or may_hold(attributes, b"\\u"):
        named = pc.or_(pc.match_substring(attributes, "__timer"), pc.match_substring(attributes, "\\u"))
        may = pc.or_(may, named)
    keep &= np.asarray(pc.fill_null(may, True).to_numpy(zero_copy_only=False), dtype=bool)
    rows = np.flatnonzero(keep)
    out = combined.take(pa.array(rows))
    at = comp[rows]
    sorted_of: dict[str, np.ndarray] = {}

    def of(name: str) -> np.ndarray:
        if name not in sorted_of:
            sorted_of[name] = np.sort(comp[is_type(name)])
        return sorted_of[name]

    def in_window(name: str, span: int) -> np.ndarray:
        cx = of(name)
        return np.searchsorted(cx, at, "right") - np.searchsorted(cx, at - span, "left")

    for i, f in enumerate(state.values()):
        column: pa.Array
        if f.kind == "count":
            column = pa.array(in_window(str(f.count), _micros(f.span())).astype(np.int64), pa.int64())
        elif f.kind == "sequence" and f.sequence is not None:
            seen = in_window(f.sequence.first, _micros(f.span())) > 0
            column = pa.array(is_type(f.sequence.then)[rows] & seen, pa.bool_())
            if f.capture:
                firsts = np.flatnonzero(is_type(f.sequence.first))
                values = _attribute_texts(attributes, firsts, f.capture)
                if values is None:
                    return None
                captured = [_latest_in_window(comp[firsts], texts, at, _micros(f.span()))
                            for texts in values]
                out = out.append_column(COLUMN + str(i), column)
                for j, texts in enumerate(captured):
                    out = out.append_column(f"{COLUMN}{i}_{j}", texts)
                continue
        elif f.kind == "time_since":
            cx = of(str(f.time_since))
            idx = np.searchsorted(cx, at, "left") - 1
            prev = cx[np.clip(idx, 0, None)] if len(cx) else np.zeros(len(at), dtype=np.int64)
            found = (idx >= 0) & (prev // width == at // width)
            seconds = ts[rows] / 1e6 - (prev % width + base) / 1e6  # as epoch(ts) - epoch(max(ts))
            column = pa.array(seconds, pa.float64(), mask=~found)
        else:
            continue
        out = out.append_column(COLUMN + str(i), column)
    return out


def _attribute_texts(attributes: pa.Array, rows: np.ndarray, names: list[str]
                     ) -> list[list[str | None]] | None:
    """For each of ``names``, the value of that top-level attribute of each of ``rows`` as
    ``attributes->>name`` gives it, for a text value (None when absent or JSON null); None
    when any value is of another kind (a number, a list...: DuckDB's text of it is its own)
    or a text does not read as JSON here: then the window query decides."""
    out: list[list[str | None]] = [[] for _ in names]
    for text in attributes.take(pa.array(rows, pa.int64())).to_pylist():
        try:
            value = orjson.loads(text) if text is not None else {}
        except orjson.JSONDecodeError:
            return None
        if type(value) is not dict:
            return None
        for name, column in zip(names, out, strict=True):
            got = value.get(name)
            if got is not None and type(got) is not str:
                return None
            column.append(got)
    return out


def _latest_in_window(at_first: np.ndarray, texts: list[str | None], at: np.ndarray, span: int) -> pa.Array:
    """Per row (``at``: its composite key), the text of the latest ``first`` event in
    ``[ts - span, ts]`` whose text is not null: ``arg_max(text, ts)`` over the frame, which
    skips null values (of events at one instant, the one after in ``combined``'s order)."""
    has = np.fromiter((t is not None for t in texts), dtype=bool, count=len(texts))
    keys = at_first[has]
    values = np.asarray([t for t in texts if t is not None], dtype=object)
    order = np.argsort(keys, kind="stable")
    keys, values = keys[order], values[order]
    j = np.searchsorted(keys, at, "right") - 1
    found = (j >= 0) & (keys[np.clip(j, 0, None)] >= at - span) if len(keys) else np.zeros(len(at), bool)
    picked = values[np.clip(j, 0, None)][found] if len(keys) else values[:0]
    result = np.full(len(at), None, dtype=object)
    result[found] = picked
    return pa.array(result, pa.string())
