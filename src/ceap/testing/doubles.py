"""Test doubles for testing programs without real sources or providers.

``MemoryConnector`` (type ``memory``) reads rows held in memory and
``CapturingChannel`` (type ``capture``) records what it is asked to send,
honouring idempotency keys the way a real channel must. Neither is installed
as an entry point; register them in your tests::

    registry = Registry.discover()
    registry.register("connector", "memory", MemoryConnector)
    registry.register("channel", "capture", CapturingChannel)
    MemoryConnector.publish("customers", [{"customer_id": "c1", "spend": 120.0}])
    # a program with  source: {type: memory, dataset: customers}  now reads that table

``make_candidates`` and ``make_messages`` build valid inputs for stores and
channels with every field filled in.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal, TypeAlias

import pyarrow as pa
from pydantic import Field, model_validator

from ceap.channels.base import Channel, ChannelConfig, Message, SendResult
from ceap.connectors.base import Connector, ConnectorConfig
from ceap.errors import SourceError
from ceap.model import utcnow
from ceap.plugin import PluginContext
from ceap.store.schema import CANDIDATE_SCHEMA, JSON_COLUMNS

Rows: TypeAlias = pa.Table | Sequence[Mapping[str, Any]]


def _as_table(data: Rows) -> pa.Table:
    return data if isinstance(data, pa.Table) else pa.Table.from_pylist([dict(r) for r in data])


# -- the in-memory source ------------------------------------------------------


class MemoryConfig(ConnectorConfig):
    """``{type: memory, rows: [{customer_id: c1, spend: 10}]}`` or, for typed data,
    ``{type: memory, dataset: customers}`` naming a table given to ``MemoryConnector.publish``."""

    type: Literal["memory"] = "memory"
    rows: list[dict[str, Any]] | None = Field(None, description="the rows themselves")
    dataset: str | None = Field(None, description="a table published with MemoryConnector.publish")

    @model_validator(mode="after")
    def _one_source(self) -> MemoryConfig:
        if self.rows is not None and self.dataset is not None:
            raise ValueError("give at most one of 'rows' and 'dataset'")
        return self


class MemoryConnector(Connector[MemoryConfig]):
    """Rows in memory: from ``MemoryConnector.of(table)``, the config's ``rows``, or a
    dataset published by name (what a program built from YAML can reach)."""

    config_model: ClassVar[type[ConnectorConfig]] = MemoryConfig
    _datasets: ClassVar[dict[str, pa.Table]] = {}
    _datasets_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, config: MemoryConfig, context: PluginContext | None = None,
                 table: pa.Table | None = None):
        super().__init__(config, context)
        self._table = table

    @classmethod
    def of(cls, data: Rows, context: PluginContext | None = None, **fields: Any) -> MemoryConnector:
        """A source over ``data`` (a table, or a list of row dicts); ``fields`` are config fields."""
        config = MemoryConfig.model_validate({"type": "memory", **fields})
        return cls(config, context, table=_as_table(data))

    @classmethod
    def publish(cls, name: str, data: Rows) -> None:
        """Make ``data`` readable by any memory source with ``dataset: <name>``."""
        with cls._datasets_lock:
            cls._datasets[name] = _as_table(data)

    @classmethod
    def clear(cls) -> None:
        """Forget every published dataset."""
        with cls._datasets_lock:
            cls._datasets.clear()

    def table(self) -> pa.Table:
        if self._table is not None:
            return self._table
        if self.config.dataset is not None:
            with self._datasets_lock:
                found = self._datasets.get(self.config.dataset)
                known = ", ".join(sorted(self._datasets)) or "none"
            if found is None:
                raise SourceError(f"source.dataset: no memory dataset named {self.config.dataset!r} "
                                  f"(published: {known})")
            return found
        if self.config.rows is not None:
            return pa.Table.from_pylist(self.config.rows)
        raise SourceError("source: a memory source needs 'rows', 'dataset' or a table "
                          "given to MemoryConnector.of")

    def describe(self) -> str:
        return f"memory:{self.config.dataset}" if self.config.dataset else "memory"

    def schema(self) -> pa.Schema:
        return self.table().schema

    def read(self) -> Iterator[pa.RecordBatch]:
        yield from self.table().to_batches(max_chunksize=self.config.batch_rows)

    def estimated_rows(self) -> int | None:
        return self.table().num_rows


# -- the capturing channel -----------------------------------------------------


@dataclass
class Outbox:
    """What capturing channels with the same ``outbox`` name delivered, in order."""

    messages: list[Message] = field(default_factory=list)
    keys: set[tuple[str, str]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def for_customer(self, customer_id: str) -> list[Message]:
        with self.lock:
            return [m for m in self.messages if m.customer_id == customer_id]

    def clear(self) -> None:
        with self.lock:
            self.messages.clear()
            self.keys.clear()


class CaptureConfig(ChannelConfig):
    type: Literal["capture"] = "capture"
    outbox: str = Field("default", description="the outbox messages are recorded in")
    fail_customers: list[str] = Field(default_factory=list,
                                      description="customers whose messages fail (to test retries)")


class CapturingChannel(Channel[CaptureConfig]):
    """Records messages in a named ``Outbox`` instead of sending them.

    A key already delivered (per tenant) is reported as ``duplicate`` and not
    recorded again, also across instances sharing the outbox; a failed message
    is not recorded, so a retry with the same key can still go through.
    """

    config_model: ClassVar[type[ChannelConfig]] = CaptureConfig
    provider_dedup: ClassVar[bool] = True  # the outbox is unique by (tenant, key)
    in_flight: ClassVar[int] = 1000  # in memory; a resend after a crash is a duplicate
    _outboxes: ClassVar[dict[str, Outbox]] = {}
    _outboxes_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def outbox(cls, name: str = "default") -> Outbox:
        with cls._outboxes_lock:
            return cls._outboxes.setdefault(name, Outbox())

    @classmethod
    def reset(cls) -> None:
        """Empty every outbox."""
        with cls._outboxes_lock:
            boxes = list(cls._outboxes.values())
        for box in boxes:
            box.clear()

    @property
    def messages(self) -> list[Message]:
        box = self.outbox(self.config.outbox)
        with box.lock:
            return list(box.messages)

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        box = self.outbox(self.config.outbox)
        results = []
        with box.lock:
            for m in messages:
                key = (m.tenant_id, m.idempotency_key)
                if m.customer_id in self.config.fail_customers:
                    results.append(SendResult(m.idempotency_key, "failed",
                                              error=f"simulated failure for {m.customer_id!r}"))
                elif key in box.keys:
                    results.append(SendResult(m.idempotency_key, "duplicate"))
                else:
                    box.keys.add(key)
                    box.messages.append(m)
                    results.append(SendResult(m.idempotency_key, "sent",
                                              provider_id=f"capture-{len(box.messages)}"))
        return results


# -- builders ------------------------------------------------------------------

Value = Any | Callable[[int], Any]


def _at(value: Value, i: int) -> Any:
    return value(i) if callable(value) else value


def make_candidates(n: int = 3, *, now: datetime | None = None, **overrides: Value) -> pa.Table:
    """``n`` valid candidate rows (``ceap.store.schema.CANDIDATE_SCHEMA``).

    Each override is a column name with one value for every row, or a function
    of the row index (``customer_id=lambda i: f"u{i}"``). JSON columns
    (context, channels, reasons, payload) take Python values, or text as is.
    """
    unknown = set(overrides) - set(CANDIDATE_SCHEMA.names)
    if unknown:
        raise TypeError(f"make_candidates: unknown column(s) {', '.join(sorted(unknown))}")
    now = now or utcnow()
    defaults: dict[str, Value] = {
        "tenant_id": "default", "program": "conformance", "run_id": "run-conformance",
        "customer_id": lambda i: f"c{i}", "subject_id": lambda i: f"s{i}",
        "context": lambda i: {"region": "eu", "n": i}, "action_type": "inform",
        "channels": ["inapp"], "template": "welcome", "category": "general",
        "score": lambda i: round(1.0 - i / (n + 1), 6), "model": "conformance@1",
        "reasons": {"top": ["spend"]}, "payload": lambda i: {"i": i, "text": "héllo ✓"},
        "status": "pending", "priority": 0, "created_at": now, "not_before": now,
        "expires_at": now + timedelta(days=7), "dedup_key": lambda i: f"dedup-{i}",
        "holdout": False, "version": 1, "variant": None, "features": None,
    }
    spec = {**defaults, **overrides}
    if "arm" not in overrides:  # the arm follows the holdout flag unless given
        spec["arm"] = lambda i: "holdout" if _at(spec["holdout"], i) else "treatment"
    columns: dict[str, list[Any]] = {}
    for name in CANDIDATE_SCHEMA.names:
        values = [_at(spec[name], i) for i in range(n)]
        if name in JSON_COLUMNS:
            values = [v if v is None or isinstance(v, str) else json.dumps(v) for v in values]
        columns[name] = values
    return pa.table(columns, schema=CANDIDATE_SCHEMA)


def make_messages(n: int = 3, **overrides: Value) -> list[Message]:
    """``n`` messages with distinct idempotency keys; overrides as in ``make_candidates``."""
    names = {f.name for f in fields(Message)}
    unknown = set(overrides) - names
    if unknown:
        raise TypeError(f"make_messages: unknown field(s) {', '.join(sorted(unknown))}")
    defaults: dict[str, Value] = {
        "tenant_id": "default", "idempotency_key": lambda i: f"msg-{i}",
        "customer_id": lambda i: f"c{i}", "program": "conformance", "channel": "capture",
        "title": lambda i: f"Hello {i}", "body": "Body ✓", "candidate_id": lambda i: i + 1,
        "to": None, "payload": lambda i: {"i": i},
    }
    spec = {k: v for k, v in {**defaults, **overrides}.items() if k in names}
    return [Message(**{name: _at(value, i) for name, value in spec.items()}) for i in range(n)]


__all__ = ["CaptureConfig", "CapturingChannel", "FakeClock", "MemoryConfig", "MemoryConnector",
           "Outbox", "make_candidates", "make_messages"]


class FakeClock:
    """A clock for ``Dispatcher(clock=...)`` and friends: it moves only when told to."""

    def __init__(self, start: datetime | None = None):
        self.now = start or utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        """Move forward by a ``timedelta(**kw)`` (``seconds=30``, ``days=2``...)."""
        self.now += timedelta(**kw)
