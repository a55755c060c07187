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
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ceap.model import DEFAULT_TENANT

EVENT_SCHEMA = pa.schema([
    ("event_id", pa.string()),
    ("tenant_id", pa.string()),
    ("customer_id", pa.string()),
    ("type", pa.string()),
    ("ts", pa.timestamp("us")),       # event time, UTC
    ("attributes", pa.string()),      # JSON object
])


class EventIn(BaseModel):
    """One event as sent to the platform."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=255)
    type: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:\-]+$")
    ts: datetime
    customer_id: str | None = Field(None, min_length=1, max_length=255)
    tenant_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_\-]+$")
    attributes: dict[str, Any] = Field(default_factory=dict)

    @field_validator("ts")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def from_eventbridge(envelope: dict[str, Any]) -> dict[str, Any]:
    """An EventBridge envelope (``detail-type``, ``time``, ``detail``...) as an event."""
    detail = envelope.get("detail")
    if not isinstance(detail, dict):
        raise ValueError("EventBridge envelope without a 'detail' object")
    attributes = {k: v for k, v in detail.items() if k not in ("customer_id", "tenant_id")}
    attributes.setdefault("source", envelope.get("source"))
    return {"id": envelope.get("id"), "type": envelope.get("detail-type"), "ts": envelope.get("time"),
            "customer_id": detail.get("customer_id"), "tenant_id": detail.get("tenant_id"),
            "attributes": attributes}


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "event"
    kind = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
    return f"{where}: {kind}"


def validate_events(items: Sequence[Any], tenant: str = DEFAULT_TENANT
                    ) -> tuple[pa.Table, list[tuple[int, str]]]:
    """Valid events as a table (``EVENT_SCHEMA``), and ``(index, reason)`` per rejected one.

    A rejected event never stops the accepted ones. An item that is an EventBridge
    envelope (it has ``detail-type``) is unwrapped first."""
    rows: dict[str, list[Any]] = {name: [] for name in EVENT_SCHEMA.names}
    rejected: list[tuple[int, str]] = []
    for i, item in enumerate(items):
        try:
            if isinstance(item, dict) and "detail-type" in item:
                item = from_eventbridge(item)
            event = EventIn.model_validate(item)
        except ValidationError as exc:
            rejected.append((i, _first_error(exc)))
            continue
        except ValueError as exc:
            rejected.append((i, str(exc)))
            continue
        rows["event_id"].append(event.id)
        rows["tenant_id"].append(event.tenant_id or tenant)
        rows["customer_id"].append(event.customer_id)
        rows["type"].append(event.type)
        rows["ts"].append(event.ts.replace(tzinfo=None))
        rows["attributes"].append(json.dumps(event.attributes, separators=(",", ":"), default=str))
    return pa.table(rows, schema=EVENT_SCHEMA), rejected


def parse_bodies(bodies: Iterable[bytes], tenant: str = DEFAULT_TENANT
                 ) -> tuple[pa.Table, list[tuple[int, str]]]:
    """Decode stream message bodies (one event, or a JSON list of events, each) and validate."""
    items: list[Any] = []
    broken: list[tuple[int, str]] = []
    for body in bodies:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            broken.append((len(items), f"not JSON: {exc}"))
            items.append(None)
            continue
        items.extend(data if isinstance(data, list) else [data])
    table, rejected = validate_events(items, tenant)
    return table, sorted({*rejected, *broken})


def encode(events: Iterable[dict[str, Any]]) -> list[bytes]:
    """Events as message bodies, one per message."""
    return [json.dumps(e, separators=(",", ":"), default=str).encode() for e in events]
