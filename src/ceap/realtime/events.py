"""Events: what the real-time path reads, validated into an Arrow table.

An event is a JSON object::

    {"id": "evt-1", "type": "app_crash", "ts": "2026-11-25T10:00:00Z",
     "customer_id": "C000042", "tenant_id": "default", "attributes": {"app": "ios"}}

``id`` (for deduplication), ``type`` and ``ts`` (event time) are required;
``customer_id`` may be absent for item-level events that fan out through a
lookup (a restock of an item). EventBridge envelopes are accepted too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from ceap.json_input import JSON_OBJECT_SCHEMA, NOT_UNICODE, BadText, Text, find_bad_text, loads_many
from ceap.model import DEFAULT_TENANT
from ceap.realtime.attributes_text import encode_attributes as _encode_attributes
from ceap.realtime.attributes_text import encode_decoded as _encode_decoded
from ceap.realtime.attributes_text import may_hold as _may_hold

EVENT_SCHEMA = pa.schema([
    ("event_id", pa.string()),
    ("tenant_id", pa.string()),
    ("customer_id", pa.string()),
    ("type", pa.string()),
    ("ts", pa.timestamp("us")),       # event time, UTC
    ("attributes", pa.string()),      # JSON object
])


_TYPE = r"^[A-Za-z0-9_.:\-]+$"
_TENANT = r"^[A-Za-z0-9_\-]+$"
_ISO_TIME = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d")


def _iso_time(value: Any) -> Any:
    """An event time is ISO 8601 text with a date and a time (a number is not one)."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO_TIME.match(value):
        raise ValueError("expected an ISO 8601 date and time, e.g. 2026-11-25T10:00:00Z")
    return value


#: ``ts``: ISO 8601 text, read by pydantic; without an offset it is UTC
EventTime = Annotated[datetime, BeforeValidator(_iso_time)]


class EventIn(BaseModel):
    """One event as sent to the platform."""

    model_config = ConfigDict(extra="forbid")

    id: Text = Field(min_length=1, max_length=255)
    type: str = Field(min_length=1, max_length=100, pattern=_TYPE)   # ASCII by its pattern
    ts: EventTime
    customer_id: Text | None = Field(None, min_length=1, max_length=255)
    tenant_id: str | None = Field(None, pattern=_TENANT)
    attributes: dict[str, Any] = Field(default_factory=dict, json_schema_extra=JSON_OBJECT_SCHEMA)

    @field_validator("ts")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        try:
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        except OverflowError:
            raise ValueError("time out of range once converted to UTC") from None

    @field_validator("attributes")
    @classmethod
    def _storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        bad = find_bad_text(value)
        if bad is not None:
            raise bad
        return value


class EventBridgeDetail(BaseModel):
    """An envelope's ``detail``: the event's customer and tenant, and its attributes."""

    model_config = ConfigDict(extra="allow", json_schema_extra={
        k: v for k, v in JSON_OBJECT_SCHEMA.items() if k != "type"})

    customer_id: Text | None = Field(None, min_length=1, max_length=255)
    tenant_id: str | None = Field(None, pattern=_TENANT)


class EventBridgeEnvelope(BaseModel):
    """An Amazon EventBridge event; other fields are allowed and dropped."""

    model_config = ConfigDict(extra="allow")

    id: Text = Field(min_length=1, max_length=255)
    detail_type: str = Field(alias="detail-type", min_length=1, max_length=100, pattern=_TYPE)
    time: EventTime
    source: Text | None = None
    detail: EventBridgeDetail
    version: Text | None = None
    account: Text | None = None
    region: Text | None = None
    resources: list[Text] | None = None


def from_eventbridge(envelope: dict[str, Any]) -> dict[str, Any]:
    """An EventBridge envelope (``detail-type``, ``time``, ``detail``...) as an event; a
    malformed envelope raises ``ValidationError`` naming its field."""
    checked = EventBridgeEnvelope.model_validate(envelope)
    detail = envelope["detail"]
    attributes = {k: v for k, v in detail.items() if k not in ("customer_id", "tenant_id")}
    attributes.setdefault("source", checked.source)
    return {"id": checked.id, "type": checked.detail_type, "ts": checked.time,
            "customer_id": checked.detail.customer_id, "tenant_id": checked.detail.tenant_id,
            "attributes": attributes}


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = list(err["loc"])
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, BadText):
        loc, kind = [*loc, *cause.path], str(cause)
    elif err["type"] == "string_unicode":  # pydantic's own check: a str it cannot encode
        kind = NOT_UNICODE
    elif err["type"] == "extra_forbidden":
        kind = "unknown field"
    elif err["type"] == "value_error" and cause is not None:
        kind = str(cause)   # our own reason, without pydantic's "Value error, "
    else:
        kind = err["msg"]
    where = ".".join(str(p) for p in loc) or "event"
    if not where.isascii():   # a field name may itself hold a lone surrogate
        where = where.encode("utf-8", "backslashreplace").decode("utf-8")
    return f"{where}: {kind}"


NOT_ENVELOPE = "not an EventBridge envelope: no 'detail-type'"


def validate_events(items: Sequence[Any], tenant: str = DEFAULT_TENANT, *, envelopes: bool = False,
                    decoded: bool = False) -> tuple[pa.Table, list[tuple[int, str]]]:
    """Valid events as a table (``EVENT_SCHEMA``), and ``(index, reason)`` per rejected one.

    A rejected event never stops the accepted ones. An item that is an EventBridge
    envelope (it has ``detail-type``) is unwrapped first; with ``envelopes`` every item
    must be one.

    Events are checked column by column first (Arrow kernels over the whole batch);
    only the items that check does not plainly accept (an envelope, a ``ts`` in
    another format, a wrong type or value) are validated one by one with
    ``EventIn``, which accepts them as before or names the reason. ``decoded``: the items
    were read from JSON text (dicts, lists, text, numbers, booleans and nulls only), so the
    ``attributes`` text may be written by orjson where it is ``json.dumps``'s."""
    fast, table = (_validate_columns(items, tenant, decoded) if not envelopes
                   else ([], EVENT_SCHEMA.empty_table()))
    if len(fast) == len(items):
        return table, []
    rows: dict[str, list[Any]] = {name: [] for name in EVENT_SCHEMA.names}
    rejected: list[tuple[int, str]] = []
    slow: list[int] = []
    is_fast = np.zeros(len(items), dtype=bool)
    is_fast[fast] = True
    for i in np.flatnonzero(~is_fast).tolist():
        item = items[i]
        is_envelope = isinstance(item, dict) and "detail-type" in item
        if envelopes and not is_envelope:
            rejected.append((i, NOT_ENVELOPE))
            continue
        try:
            if is_envelope:
                item = from_eventbridge(item)
            event = EventIn.model_validate(item)
        except ValidationError as exc:
            rejected.append((i, _first_error(exc)))
            continue
        except ValueError as exc:
            rejected.append((i, str(exc)))
            continue
        slow.append(i)
        rows["event_id"].append(event.id)
        rows["tenant_id"].append(event.tenant_id or tenant)
        rows["customer_id"].append(event.customer_id)
        rows["type"].append(event.type)
        rows["ts"].append(event.ts.replace(tzinfo=None))
        rows["attributes"].append(_encode_attributes(event.attributes))
    checked = pa.table(rows, schema=EVENT_SCHEMA)
    if not len(fast):
        return checked, rejected
    order = np.argsort(np.concatenate([np.asarray(fast, dtype=np.int64),
                                       np.asarray(slow, dtype=np.int64)]), kind="stable")
    return pa.concat_tables([table, checked]).take(pa.array(order)), rejected


_FIELDS = frozenset(EventIn.model_fields)
#: the ``ts`` texts the column check takes: ISO 8601 with a UTC offset, years 1900-2999,
#: at most microseconds (Arrow and pydantic read them alike); others go through EventIn
_TS = (r"^(19|2\d)\d\d-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d"
       r"(:[0-5]\d(\.\d{1,6})?)?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$")
_NO_ATTRIBUTES: dict[str, Any] = {}


def _text(values: list[Any]) -> tuple[pa.Array, np.ndarray | None]:
    """``values`` as a string array, and the positions holding something else than text or
    null, or text a store cannot hold (None when there are none); those become null."""
    try:
        return pa.array(values, pa.string()), None
    except (pa.ArrowTypeError, pa.ArrowInvalid, UnicodeEncodeError):
        other = np.fromiter((v is not None and (type(v) is not str or find_bad_text(v) is not None)
                             for v in values), dtype=bool, count=len(values))
        return pa.array([None if o else v for v, o in zip(values, other, strict=True)], pa.string()), other


#: the text fields of an event, read from a batch of dicts in one Arrow conversion
_HEADS = pa.struct([(name, pa.string()) for name in ("id", "type", "ts", "customer_id", "tenant_id")])


def _plain_heads(items: Sequence[Any]) -> list[pa.Array] | None:
    """``id, type, ts, customer_id, tenant_id`` as string columns (null where absent) when
    every item is a dict of ``EventIn``'s fields only and each of these is text or null
    (Arrow holds it: no lone surrogate); otherwise None (the item by item way decides)."""
    if not items or set(map(type, items)) != {dict} or not all(map(_FIELDS.issuperset, items)):
        return None
    try:
        heads = pa.array(items, _HEADS)
    except (pa.ArrowException, UnicodeEncodeError, TypeError, ValueError):
        return None
    return heads.flatten()  # type: ignore[no-any-return]


def _validate_columns(items: Sequence[Any], tenant: str, decoded: bool = False
                      ) -> tuple[list[int], pa.Table]:
    """The indexes of the items that are plainly valid events, and those events as a table.

    An item is taken here only when ``EventIn`` would accept it as it is and give the
    same values; every other item is left for ``EventIn``."""
    heads = _plain_heads(items)
    if heads is not None:   # every item a dict of known fields, each text or absent
        fast, rows = list(range(len(items))), items
        ids, types, stamps, customers, tenants = heads
        bad_id = bad_type = bad_ts = bad_customer = bad_tenant = None
    else:
        fast = [i for i, item in enumerate(items) if type(item) is dict and _FIELDS.issuperset(item)]
        if not fast:
            return [], EVENT_SCHEMA.empty_table()
        rows = items if len(fast) == len(items) else [items[i] for i in fast]
        try:
            ids, bad_id = _text([row.get("id") for row in rows])
            types, bad_type = _text([row.get("type") for row in rows])
            stamps, bad_ts = _text([row.get("ts") for row in rows])
            customers, bad_customer = _text([row.get("customer_id") for row in rows])
            tenants, bad_tenant = _text([row.get("tenant_id") for row in rows])
        except (pa.ArrowTypeError, pa.ArrowInvalid):  # e.g. text Arrow cannot hold: EventIn decides
            return [], EVENT_SCHEMA.empty_table()
    attributes = [row.get("attributes", _NO_ATTRIBUTES) for row in rows]
    id_len, type_len, customer_len = (pc.utf8_length(a) for a in (ids, types, customers))
    checks = [
        pc.and_(pc.greater_equal(id_len, 1), pc.less_equal(id_len, 255)),
        pc.and_(pc.less_equal(type_len, 100), pc.match_substring_regex(types, _TYPE)),
        pc.match_substring_regex(stamps, _TS),
        pc.or_kleene(pc.is_null(customers), pc.and_(pc.greater_equal(customer_len, 1),
                                                    pc.less_equal(customer_len, 255))),
        pc.or_kleene(pc.is_null(tenants), pc.match_substring_regex(tenants, _TENANT)),
    ]
    if _may_hold(ids, b"\x00"):  # a NUL in some id: each is looked at (nearly never)
        checks.append(pc.invert(pc.match_substring(ids, "\x00")))
    if _may_hold(customers, b"\x00"):
        checks.append(pc.or_kleene(pc.is_null(customers), pc.invert(pc.match_substring(customers, "\x00"))))
    ok = (np.ones(len(rows), dtype=bool) if set(map(type, attributes)) == {dict}
          else np.fromiter((type(a) is dict for a in attributes), dtype=bool, count=len(rows)))
    # ASCII-escaped text: a lone surrogate shows as \\udXXX (as does a pair, or a backslash
    # followed by "ud"), a NUL as \\u0000; only those rows are looked at closely
    attrs = _encode_decoded(attributes, ok) if decoded else pa.array(
        [_encode_attributes(a) if good else "{}" for a, good in zip(attributes, ok, strict=True)],
        pa.string())
    if _may_hold(attrs, b"\\u"):  # only then may a text hold either escape
        escaped = pc.or_(pc.match_substring(attrs, "\\ud"), pc.match_substring(attrs, "\\u0000"))
        for i in np.flatnonzero(escaped.to_numpy(zero_copy_only=False)).tolist():
            ok[i] &= find_bad_text(attributes[i]) is None
    for check in checks:
        ok &= pc.fill_null(check, False).to_numpy(zero_copy_only=False)
    for bad in (bad_id, bad_type, bad_ts, bad_customer, bad_tenant):
        if bad is not None:
            ok &= ~bad
    ts = _utc_times(stamps, ok)
    if not ok.all():
        keep = pa.array(ok)
        fast = [i for i, good in zip(fast, ok.tolist(), strict=True) if good]
        ids, types, ts, customers, tenants, attrs = (pc.filter(a, keep) for a in
                                                     (ids, types, ts, customers, tenants, attrs))
    table = pa.Table.from_arrays([ids, pc.fill_null(tenants, tenant), customers, types, ts, attrs],
                                 schema=EVENT_SCHEMA)
    return fast, table


_UTC = pa.timestamp("us", "UTC")


def _utc_times(stamps: pa.Array, ok: np.ndarray) -> pa.Array:
    """The ``ts`` texts as naive UTC times (null where not ``ok``); a text Arrow cannot
    read as a time (30 February) is taken out of ``ok`` for EventIn to name."""
    stamps = pc.if_else(pa.array(ok), stamps, pa.scalar(None, pa.string()))
    try:
        return pc.cast(pc.cast(stamps, _UTC), pa.timestamp("us"))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    for i in np.flatnonzero(ok).tolist():
        try:
            pc.cast(stamps[i : i + 1], _UTC)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            ok[i] = False
    stamps = pc.if_else(pa.array(ok), stamps, pa.scalar(None, pa.string()))
    return pc.cast(pc.cast(stamps, _UTC), pa.timestamp("us"))


def decode_bodies(bodies: Iterable[bytes]) -> tuple[list[Any], list[int], list[tuple[int, str]]]:
    """Message bodies as event items (one event, or a JSON list of events, each): the
    items, the index of the body each came from, and ``(item index, reason)`` for each
    body that is not JSON (see ``ceap.json_input.loads``; it stands as one None item)."""
    values, errors = loads_many(bodies if isinstance(bodies, Sequence) else list(bodies))
    if not errors and set(map(type, values)) == {dict}:   # one event a body: the usual case
        return values, list(range(len(values))), []
    items: list[Any] = []
    origin: list[int] = []
    broken: list[tuple[int, str]] = []
    for n, data in enumerate(values):
        if n in errors:
            broken.append((len(items), f"not JSON: {errors[n]}"))
        if isinstance(data, list):
            items.extend(data)
            origin.extend([n] * len(data))
        else:
            items.append(data)
            origin.append(n)
    return items, origin, broken


def parse_bodies(bodies: Iterable[bytes], tenant: str = DEFAULT_TENANT
                 ) -> tuple[pa.Table, list[tuple[int, str]]]:
    """Decode stream message bodies (one event, or a JSON list of events, each) and validate.
    A body that is not JSON (see ``ceap.json_input.loads``) is rejected as one item."""
    items, _, broken = decode_bodies(bodies)
    table, rejected = validate_events(items, tenant, decoded=True)
    return table, problems_of(rejected, broken)


def problems_of(rejected: list[tuple[int, str]], broken: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """One ``(item index, reason)`` per rejected item, in order: a body that is not JSON is
    named as such, not also as the invalid event its None item then is."""
    if not broken:
        return sorted(rejected)
    gone = {i for i, _ in broken}
    return sorted([*broken, *(r for r in rejected if r[0] not in gone)])


def encode(events: Iterable[dict[str, Any]]) -> list[bytes]:
    """Events as message bodies, one per message."""
    return [json.dumps(e, separators=(",", ":"), default=str).encode() for e in events]
