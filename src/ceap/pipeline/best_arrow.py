"""The best row per customer (and subject) per dedup bucket of a stream's micro-batch,
picked in Arrow: what ``selection._best_sql``'s ``QUALIFY row_number() ... = 1`` keeps,
without a window query (a micro-batch's selection then runs one query with no window).

The rows are sorted by their partition (customer, subject when a customer may get one
candidate per subject, the bucket ``floor(epoch(event time) / dedup window)`` as DuckDB
computes it) and then by the rank of ``selection.order_sql``: score descending, then the
subject and the ``selection.tie_columns`` ascending, nulls last; the first row of each
partition is kept. Those columns are of types DuckDB and Arrow order alike (strings by
their bytes, NaN above every number and below null).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ceap.pipeline.plan import SCORE
from ceap.spec.program import ProgramSpec


def _codes(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Equal values (nulls too) share one integer."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    encoded = pc.dictionary_encode(column)
    return pc.fill_null(pc.cast(encoded.indices, pa.int64()), -1)


def best_per_bucket(scored: pa.Table, spec: ProgramSpec, event_time: str,
                    ties: list[str]) -> pa.Table | None:
    """The best row of each partition of ``scored`` (rows with their ``SCORE``); ``ties``:
    the ``tie_columns`` of its schema. None (the window query then picks them) when a
    column is missing, the event time is not a timestamp or has nulls, or a column is of
    a type Arrow cannot sort."""
    src = spec.source
    names = set(scored.column_names)
    needed = {src.customer_id, SCORE, event_time, *ties, *([src.subject_id] if src.subject_id else [])}
    if (not needed <= names or scored.column(event_time).null_count
            or not pa.types.is_timestamp(scored.schema.field(event_time).type)):
        return None
    size = int(spec.selection.dedup_window.total_seconds())
    micros = pc.cast(pc.cast(scored.column(event_time), pa.timestamp("us")), pa.int64()).to_numpy()
    bucket = np.floor((micros / 1e6) / size)  # floor(epoch(event time) / size), in doubles
    keys = pa.table({"__c": _codes(scored.column(src.customer_id)), "__b": pa.array(bucket, pa.float64())})
    partition = ["__c", "__b"]
    if src.subject_id and not spec.selection.one_per_customer:
        keys = keys.append_column("__s", _codes(scored.column(src.subject_id)))
        partition.append("__s")
    # no NaN score here (``Plan._keep_scored`` sets unscored rows aside)
    rank = [(SCORE, "descending"), *([(src.subject_id, "ascending")] if src.subject_id else []),
            *((c, "ascending") for c in ties)]
    table = keys
    for name, _ in rank:
        table = table.append_column(name, scored.column(name))
    keys_order = [(p, "ascending", "at_end") for p in partition] + [(n, o, "at_end") for n, o in rank]
    try:
        order = pc.sort_indices(table, sort_keys=keys_order).to_numpy()
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):  # a type Arrow cannot sort
        return None
    same = np.ones(len(order), dtype=bool)  # in the partition of the row before it
    for p in partition:
        values = keys.column(p).to_numpy()[order]
        same[1:] &= values[1:] == values[:-1]
    same[0] = False
    return scored.take(pa.array(order[~same]))
