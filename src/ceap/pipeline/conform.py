"""Conform a source batch: cast declared columns, set bad rows aside with a reason.

A row is quarantined when its customer id is missing or a declared column
holds a value that does not parse as the declared type (NaN counts as not a
valid float). A row with several problems keeps the first reason in this
order: the customer id, then the declared columns in the order ``source.columns``
lists them. Reasons name the column, never the value (it may be personal data).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from ceap.connectors.base import DUCKDB_TYPES, ConnectorConfig
from ceap.errors import SourceError
from ceap.sqlexpr import BATCH, quote

#: Arrow types that already are what a declared type asks for.
_ALREADY = {
    "string": (pa.types.is_string, pa.types.is_large_string),
    "int": (pa.types.is_integer,),
    "float": (pa.types.is_floating,),
    "bool": (pa.types.is_boolean,),
    "date": (pa.types.is_date32,),
    "timestamp": (pa.types.is_timestamp,),
}

REASON = "__ceap_reason"
RAW = "__ceap_raw"


def check_columns(schema: pa.Schema, config: ConnectorConfig) -> None:
    """Raise SourceError naming any column the program needs that the source lacks."""
    have = set(schema.names)
    needed = {"source.customer_id": [config.customer_id],
              "source.subject_id": [config.subject_id] if config.subject_id else [],
              "source.context": config.context,
              "source.columns": list(config.columns)}
    for field_name, columns in needed.items():
        missing = [c for c in columns if c not in have]
        if missing:
            raise SourceError(f"{field_name}: column {missing[0]!r} is not in the source "
                              f"(source has: {', '.join(schema.names)})")
    for name, kind in config.columns.items():
        actual = schema.field(name).type
        if pa.types.is_nested(actual) and kind != "string":
            raise SourceError(f"source.columns.{name}: the source column holds {actual}, "
                              f"which cannot be read as {kind}")


def conform_sql(schema: pa.Schema, config: ConnectorConfig) -> str:
    """The SELECT list that casts declared columns and computes each row's reason."""
    casts: list[str] = []
    reasons: list[str] = []
    cust = quote(config.customer_id)
    reasons.append(f"WHEN {cust} IS NULL OR trim(CAST({cust} AS VARCHAR)) = '' "
                   f"THEN 'customer id ({config.customer_id}) is missing'")
    declared = dict(config.columns)
    for ident in (config.customer_id, config.subject_id):
        if ident:
            declared.setdefault(ident, "string")
    for name, kind in declared.items():
        col = quote(name)
        label = name.replace("'", "''")
        if any(check(schema.field(name).type) for check in _ALREADY[kind]):
            if kind == "float":  # NaN would pass any `>=` filter in DuckDB (NaN sorts above all)
                reasons.append(f"WHEN isnan({col}) THEN 'column {label}: not a valid float (NaN)'")
            continue
        # a timestamp's UTC offset is applied, not dropped (the session time zone is UTC)
        cast = (f"CAST(TRY_CAST({col} AS TIMESTAMPTZ) AS TIMESTAMP)" if kind == "timestamp"
                else f"TRY_CAST({col} AS {DUCKDB_TYPES[kind]})")
        casts.append(f"{cast} AS {col}")
        reasons.append(f"WHEN {col} IS NOT NULL AND {cast} IS NULL "
                       f"THEN 'column {label}: not a valid {kind}'")
        if kind == "float":  # the text 'nan' casts to NaN
            reasons.append(f"WHEN isnan({cast}) THEN 'column {label}: not a valid float (NaN)'")
    reason = "CASE " + " ".join(reasons) + " END"
    star = f"* REPLACE ({', '.join(casts)})" if casts else "*"
    return (f"{star}, {reason} AS {REASON}, "
            f"CASE WHEN {reason} IS NOT NULL THEN to_json({BATCH}) END AS {RAW}")


def split(conformed: pa.Table) -> tuple[pa.Table, pa.Table]:
    """``(good rows, bad rows as {row, reason})`` of a conformed batch."""
    if conformed.column(REASON).null_count == conformed.num_rows:  # no bad row: copy nothing
        bad = conformed.slice(0, 0).select([RAW, REASON]).rename_columns(["row", "reason"])
        return conformed.drop_columns([REASON, RAW]), bad
    is_bad = pc.is_valid(conformed.column(REASON))
    bad = conformed.filter(is_bad).select([RAW, REASON]).rename_columns(["row", "reason"])
    good = conformed.filter(pc.invert(is_bad)).drop_columns([REASON, RAW])
    return good, bad


def ensure_castable(error: Exception, config: ConnectorConfig) -> SourceError:
    """Turn a bind-time cast failure into an error naming the declared column."""
    text = str(error).strip().splitlines()[0]
    for name, kind in config.columns.items():
        if f'"{name}"' in str(error) or name in text:
            return SourceError(f"source.columns.{name}: the source column cannot be read as "
                               f"{kind} ({text})")
    return SourceError(f"source: {text}")
