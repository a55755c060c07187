"""A stream micro-batch's candidate rows made in Python and Arrow: what
``selection._candidate_sql`` computes in DuckDB, without a query, for the plain programs
whose every value has one spelling in both (a query costs 3-4 ms of a micro-batch's
CPU for a handful of rows).

Taken only when the program has no variants, no ``source.context``, no ``action.items``,
does not learn, and keeps its customer (and subject) ids as text; the payload is merged
as DuckDB's ``json_merge_patch`` does (the spec's payload keys not among the payload
columns, in order, then the columns, a null value dropped) only when every value of it
is text of printable ASCII without ``"`` or ``\\``, an integer, a boolean or null (the
values whose JSON DuckDB and Python write alike). Otherwise ``None``: the query runs.
The holdout and global control draws are ``assignment.unit_fraction``, DuckDB's
``md5_number_upper`` / 2^64; the dedup bucket is ``best_arrow``'s, as DuckDB floors it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ceap.experiments.assignment import unit_fraction
from ceap.pipeline.plan import SCORE
from ceap.spec.program import ProgramSpec
from ceap.store.schema import CANDIDATE_SCHEMA

_TS = pa.timestamp("us", tz="UTC")
#: at most this many candidate rows are made here (a loop per row in Python); more go to the
#: query, which costs less from about 1,300-2,000 rows on (bench/README.md)
MAX_ROWS = 1024
_PLAIN = frozenset(chr(c) for c in range(0x20, 0x7F)) - {'"', "\\"}


def _json_value(value: Any) -> str | None:
    """The JSON of a payload value as DuckDB writes it, when it is one Python writes alike."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if -2**63 <= value < 2**64 else None
    if isinstance(value, str) and _PLAIN.issuperset(value):
        return f'"{value}"'
    return None


#: 1000-01-01 and 10000-01-01 in seconds since 1970: the years a window's text is written for
_FIRST_S, _END_S = -30610224000, 253402300800


def _windows(buckets: np.ndarray) -> list[str] | None:
    """Each window start (seconds since 1970, UTC) as ``%Y%m%dT%H%M%S``; None when one falls
    outside years 1000-9999. Whole seconds (the usual case) are written column-wise, by Arrow's
    cast to text (``2026-11-25 10:00:00``); others value by value."""
    if not len(buckets):
        return []
    if (buckets == np.floor(buckets)).all():
        if buckets.min() < _FIRST_S or buckets.max() >= _END_S:
            return None
        text = pc.cast(pa.array(buckets.astype(np.int64), pa.timestamp("s")), pa.string())
        text = pc.replace_substring(pc.replace_substring(text, "-", ""), ":", "")
        return pc.replace_substring(text, " ", "T").to_pylist()  # type: ignore[no-any-return]
    windows = []
    for start in buckets.tolist():
        when = datetime.fromtimestamp(start, UTC)
        if not 1000 <= when.year <= 9999:
            return None
        windows.append(when.strftime("%Y%m%dT%H%M%S"))
    return windows


def supported(spec: ProgramSpec, schema: pa.Schema) -> bool:
    """Whether ``candidate_rows`` can make this program's candidates from rows of ``schema``."""
    src, action, exp = spec.source, spec.action, spec.experiment
    text = (pa.types.is_string, pa.types.is_large_string)
    ids = [src.customer_id, *([src.subject_id] if src.subject_id else [])]
    if exp.variants or src.context or action.items or exp.learn or action.channels_if:
        return False
    if any(n not in schema.names or not any(t(schema.field(n).type) for t in text) for n in ids):
        return False
    if any(not c.isidentifier() for c in action.payload_columns):
        return False
    if action.payload_columns and any(_json_value(v) is None for v in action.payload.values()):
        return False
    return SCORE in schema.names


def candidate_rows(top: pa.Table, spec: ProgramSpec, tenant: str, run_id: str, model: str,
                   global_share: float, event_time: str, size: int) -> pa.Table | None:
    """The candidate rows of the selected ``top`` rows (``CANDIDATE_SCHEMA``, ordered by
    score descending, customer, subject); None when a value is not one this module writes
    (see the module's docstring) or there are more than ``MAX_ROWS`` of them."""
    src, action, exp = spec.source, spec.action, spec.experiment
    n = top.num_rows
    if n > MAX_ROWS:
        return None
    customers = top.column(src.customer_id).to_pylist()
    subjects = top.column(src.subject_id).to_pylist() if src.subject_id else [None] * n
    if any(c is None for c in customers):
        return None
    micros = pc.cast(pc.cast(top.column(event_time), pa.timestamp("us")), pa.int64()).to_numpy()
    buckets = np.floor((micros / 1e6) / size) * size  # as DuckDB: floor(epoch(ts) / size) * size
    windows = _windows(buckets)
    if windows is None:
        return None
    if action.payload_columns:
        base = {k: _json_value(v) for k, v in action.payload.items() if k not in action.payload_columns}
        columns = {c: top.column(c).to_pylist() for c in action.payload_columns}
        payloads = []
        for i in range(n):
            parts = [f'"{k}":{v}' for k, v in base.items()]
            for c, values in columns.items():
                text = _json_value(values[i])
                if text is None:
                    return None
                if text != "null":  # a null in the patch removes the key
                    parts.append(f'"{c}":{text}')
            payloads.append("{" + ",".join(parts) + "}")
    else:
        payloads = [json.dumps(action.payload)] * n
    arms = []
    for customer in customers:
        if global_share > 0 and unit_fraction(f"{tenant}:global_control:{customer}") < global_share:
            arms.append("global_control")
        elif exp.holdout > 0 and unit_fraction(f"{tenant}:{spec.name}:{customer}") < exp.holdout:
            arms.append("holdout")
        else:
            arms.append("treatment")
    working = ("digest" if action.digest is not None else "shadow" if spec.mode == "shadow"
               else "journey" if spec.journey is not None else "pending")
    created = pc.cast(pc.cast(top.column(event_time), pa.timestamp("us")), _TS)
    not_before = pc.add(created, pa.scalar(action.delay, pa.duration("us")))
    texts = {"tenant_id": tenant, "program": spec.name, "run_id": run_id, "context": "{}",
             "action_type": action.type, "channels": json.dumps(action.channels), "template": action.template,
             "category": action.category, "model": model}
    arrays: dict[str, Any] = {name: pa.array([value] * n, pa.string()) for name, value in texts.items()}
    arrays.update({
        "customer_id": pa.array(customers, pa.string()), "subject_id": pa.array(subjects, pa.string()),
        "score": top.column(SCORE).cast(pa.float64()), "reasons": pa.nulls(n, pa.string()),
        "payload": pa.array(payloads, pa.string()),
        "status": pa.array([working if a == "treatment" else "held_out" for a in arms], pa.string()),
        "priority": pa.array([spec.priority] * n, pa.int64()),
        "created_at": created, "not_before": not_before,
        "expires_at": pc.add(not_before, pa.scalar(action.expiry, pa.duration("us"))),
        "dedup_key": pa.array([f"{spec.name}:{c}:{s or ''}:{w}"
                               for c, s, w in zip(customers, subjects, windows, strict=True)], pa.string()),
        "holdout": pa.array([a != "treatment" for a in arms], pa.bool_()),
        "version": pa.array([1] * n, pa.int64()), "arm": pa.array(arms, pa.string()),
        "variant": pa.nulls(n, pa.string()), "features": pa.nulls(n, pa.string()),
    })
    table = pa.Table.from_arrays([arrays[name] for name in CANDIDATE_SCHEMA.names],
                                 schema=CANDIDATE_SCHEMA)
    # by score descending, customer, subject (nulls last), stably, as Arrow's sort would (its
    # fixed cost is some 100 µs): no score is NaN or null (``Plan._keep_scored``), texts
    # compare by code point as by their UTF-8 bytes
    scores = table.column("score").to_pylist()
    order = sorted(range(n), key=lambda i: (-scores[i], customers[i], subjects[i] is None, subjects[i] or ""))
    return table if order == list(range(n)) else table.take(pa.array(order, pa.int64()))
