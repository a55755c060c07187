"""The shape of what a run writes, shared by every store."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson
import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")

#: Columns of the candidate table a run hands to ``Store.write_run``, in order.
CANDIDATE_SCHEMA = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("program", pa.string()),
        ("run_id", pa.string()),
        ("customer_id", pa.string()),
        ("subject_id", pa.string()),
        ("context", pa.string()),
        ("action_type", pa.string()),
        ("channels", pa.string()),
        ("template", pa.string()),
        ("category", pa.string()),
        ("score", pa.float64()),
        ("model", pa.string()),
        ("reasons", pa.string()),
        ("payload", pa.string()),
        ("status", pa.string()),
        ("priority", pa.int64()),
        ("created_at", TS),
        ("not_before", TS),
        ("expires_at", TS),
        ("dedup_key", pa.string()),
        ("holdout", pa.bool_()),
        ("version", pa.int64()),
        # experiments (docs/experiments.md): treatment, holdout or global_control; the variant
        # (NULL without variants); the scorer's inputs, kept only for programs that learn
        ("arm", pa.string()),
        ("variant", pa.string()),
        ("features", pa.string()),
    ]
)
CANDIDATE_COLUMNS = CANDIDATE_SCHEMA.names
JSON_COLUMNS = ("context", "channels", "reasons", "payload", "features")
TIME_COLUMNS = ("created_at", "not_before", "expires_at")

QUARANTINE_SCHEMA = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("run_id", pa.string()),
        ("program", pa.string()),
        ("row", pa.string()),
        ("reason", pa.string()),
    ]
)

ISO_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def to_iso(value: datetime) -> str:
    """A UTC timestamp as fixed-width text that sorts in time order."""
    return value.astimezone(UTC).strftime(ISO_FORMAT)


def from_iso(value: str | datetime | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        return _parsed(value)
    return value if value.tzinfo is UTC else value.astimezone(UTC)


@lru_cache(maxsize=4096)
def _parsed(text: str) -> datetime:
    """A stored timestamp's text, parsed once: the rows of one claim or one run share a few
    (``created_at``, ``updated_at``, ...), and a ``datetime`` is immutable."""
    value = datetime.fromisoformat(text)  # ours end in Z: already UTC
    return value if value.tzinfo is UTC else value.astimezone(UTC)


#: JSON texts decoded without the parser (the dispatcher reads thousands a second)
_LITERALS: dict[str, Any] = {"null": None, "true": True, "false": False}
#: 19 digits in a row: perhaps an integer orjson reads as a float (past 64 bits); a long
#: fraction or text matches too, and reads the same with the standard library
_LONG_DIGITS = re.compile(r"\d{19}")
#: the same test on bytes (where ``\d`` is an ASCII digit), a regular expression's search
#: done in C at a byte a nanosecond: every ASCII digit made "0", the rest "."; a long JSON
#: value took 14 µs through the expression (the serving API's hot reads, bench/README.md)
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x2E for b in range(256))
_NINETEEN = b"0" * 19


def loads(value: Any) -> Any:
    """Decode a JSON column (PostgreSQL may already have decoded it)."""
    if value is None or not isinstance(value, str | bytes):
        return value
    if value == "{}":
        return {}
    if value == "[]":
        return []
    if value in _LITERALS:
        return _LITERALS[value]
    if (_LONG_DIGITS.search(value) if isinstance(value, str)
            else _NINETEEN in value.translate(_DIGITS_AS_ZERO)):
        return json.loads(value)  # an integer past 64 bits, which orjson would make a float
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:  # what only the standard library reads (NaN)
        return json.loads(value)


def empty_candidates() -> pa.Table:
    return CANDIDATE_SCHEMA.empty_table()
