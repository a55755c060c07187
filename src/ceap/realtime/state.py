"""Per-customer state in the store: an event log (deduplication by event id, the
changelog the worker's in-memory keyed state is restored from, ``ceap.realtime.keyed``,
and the history of ``history``); absence timers are in ``ceap.realtime.timers``.

The log keeps each customer's events for as long as the longest feature window
needs them; the same SQL runs on SQLite (embedded) and PostgreSQL (shared by
several workers), so state survives a worker restart.
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ceap.realtime.events import EVENT_SCHEMA
from ceap.store.base import Store
from ceap.store.delivery_schema import EVENT_LOG_INDEX
from ceap.store.schema import from_iso, to_iso
from ceap.store.tx import Tx


def _naive(value: datetime | str) -> datetime:
    """A stored timestamp as naive UTC (how the event tables hold time)."""
    ts = from_iso(value) if isinstance(value, str) else value
    assert ts is not None
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts


class EventLog:
    def __init__(self, store: Store, stream: str | None = None):
        self.store = store
        #: the stream (its name in ceap.yaml) this log's rows are written and pruned for:
        #: a partition is named by its stream and its key (None: rows without a stream)
        self.stream = stream

    def seen(self, tenant_ids: Sequence[str], event_ids: Sequence[str]) -> set[tuple[str, str]]:
        """``(tenant, event id)`` pairs already in the log."""
        found: set[tuple[str, str]] = set()
        with self.store.tx() as tx:
            for tenant, ids in _by_tenant(tenant_ids, event_ids).items():
                where, params = _in_list(tx, "event_id", ids)
                rows = tx.execute(f"SELECT event_id FROM event_log WHERE tenant_id = ? AND {where}",
                                  (tenant, *params)).fetchall()
                found.update((tenant, r[0]) for r in rows)
        return found

    def append(self, events: pa.Table, partitions: pa.Array | None = None) -> None:
        """Add events (idempotent by event id, across streams), each with its partition when
        given and this log's stream (the changelog a partition's keyed state is restored
        from: ``ceap.realtime.claims``)."""
        if not events.num_rows:
            return
        columns = [events.column(n) for n in ("tenant_id", "event_id", "customer_id", "type", "ts",
                                              "attributes")]
        columns[2] = pc.fill_null(columns[2], "")
        stamps = _iso_column(columns[4])
        parts = _values(partitions) if partitions is not None else [None] * events.num_rows
        with self.store.tx() as tx:
            if tx.dialect == "postgres":  # one statement of arrays, not a round trip per row
                tx.execute("INSERT INTO event_log (tenant_id, event_id, customer_id, type, ts, attributes, "
                           "partition_key, stream) SELECT *, CAST(? AS text) FROM unnest(CAST(? AS text[]), "
                           "CAST(? AS text[]), CAST(? AS text[]), CAST(? AS text[]), "
                           "CAST(CAST(? AS text[]) AS timestamptz[]), CAST(? AS text[]), CAST(? AS text[])) "
                           "ON CONFLICT (tenant_id, event_id) DO NOTHING",
                           [self.stream] + [c.to_pylist() for c in columns[:4]] + [stamps]
                           + [columns[5].to_pylist(), parts])
                return
            # rows of several events a statement, not one: some 1.2 µs of CPU an event less than
            # executemany of one row (bench/event_log_cost.py, bench/README.md)
            n = events.num_rows
            tenants = _values(columns[0])
            if _one_value(tenants) and _one_value(parts):  # the usual micro-batch: the tenant, the
                # partition and the stream bound once a statement, five values a row
                values = list(itertools.chain.from_iterable(zip(
                    *(c.to_pylist() for c in columns[1:4]), stamps, columns[5].to_pylist(), strict=True)))
                shared = [tenants[0], parts[0], self.stream]
                for start in range(0, n, ROWS_A_STATEMENT):
                    k = min(ROWS_A_STATEMENT, n - start)
                    tx.execute(_insert_shared(k), shared + values[start * 5:(start + k) * 5])
                return
            values = list(itertools.chain.from_iterable(zip(
                tenants, *(c.to_pylist() for c in columns[1:4]), stamps, columns[5].to_pylist(),
                parts, [self.stream] * n, strict=True)))
            for start in range(0, n, ROWS_A_STATEMENT):
                k = min(ROWS_A_STATEMENT, n - start)
                tx.execute(_insert_rows(k), values[start * 8:(start + k) * 8])

    def history(self, keys: Iterable[tuple[str, str]], since: datetime,
                types: Iterable[str] | None = None) -> pa.Table:
        """Logged events of these ``(tenant, customer)`` keys at or after ``since`` (naive UTC);
        with ``types``, only the events of those types."""
        by_tenant: dict[str, list[str]] = {}
        for tenant, customer in set(keys):
            by_tenant.setdefault(tenant, []).append(customer)
        kinds = sorted(set(types)) if types is not None else None
        if kinds is not None and not kinds:
            return EVENT_SCHEMA.empty_table()
        rows: list[tuple[object, ...]] = []
        with self.store.tx() as tx:
            start_ts = tx.ts(since.replace(tzinfo=UTC))
            for tenant, customers in by_tenant.items():
                where, params = _in_list(tx, "customer_id", customers)
                sql = ("SELECT event_id, tenant_id, customer_id, type, ts, attributes "
                       f"FROM {by_customer(tx)} WHERE tenant_id = ? AND {where} AND ts >= ?")
                args = [tenant, *params, start_ts]
                if kinds is not None:
                    sql += f" AND type IN ({tx.placeholders(len(kinds))})"
                    args += kinds
                rows.extend(tx.execute(sql, args).fetchall())
        return _event_table(rows)

    def prune(self, before: datetime) -> int:
        """Delete the logged events before ``before`` of this log's stream and those without
        a stream (logged before migration 0010): another stream's events are judged by its
        own worker's watermark, which may be behind this one's."""
        with self.store.tx() as tx:
            sql, args = "DELETE FROM event_log WHERE ts < ?", [tx.ts(before.replace(tzinfo=UTC))]
            if self.stream is not None:
                sql, args = sql + f" AND {of_stream()}", [*args, self.stream]
            cur = tx.execute(sql, args)
            return int(cur.rowcount or 0)


#: event-log rows a SQLite ``INSERT`` statement of the append holds (eight values each)
ROWS_A_STATEMENT = 256


@functools.lru_cache(maxsize=8)
def _insert_rows(k: int) -> str:
    """The append's statement of ``k`` rows (SQLite)."""
    return ("INSERT INTO event_log (tenant_id, event_id, customer_id, type, ts, attributes, partition_key, "
            f"stream) VALUES {', '.join(['(?, ?, ?, ?, ?, ?, ?, ?)'] * k)} "
            "ON CONFLICT (tenant_id, event_id) DO NOTHING")


@functools.lru_cache(maxsize=8)
def _insert_shared(k: int) -> str:
    """The append's statement of ``k`` rows sharing their tenant (``?1``), partition (``?2``) and
    stream (``?3``), each row's own five values numbered after them (SQLite)."""
    rows = ", ".join(f"(?1, ?{4 + 5 * i}, ?{5 + 5 * i}, ?{6 + 5 * i}, ?{7 + 5 * i}, ?{8 + 5 * i}, ?2, ?3)"
                     for i in range(k))
    return ("INSERT INTO event_log (tenant_id, event_id, customer_id, type, ts, attributes, partition_key, "
            f"stream) VALUES {rows} ON CONFLICT (tenant_id, event_id) DO NOTHING")


def _one_value(values: Sequence[object]) -> bool:
    """Whether every one of ``values`` equals the first (one pass in C)."""
    return values.count(values[0]) == len(values)


def by_customer(tx: Tx) -> str:
    """The event log for a read by customer: through its customer index where the store has
    one (PostgreSQL; SQLite once a worker shared its stream, ``index_by_customer``); else
    (SQLite, migration 0011) read through, not row by row through the primary key (by
    tenant), which would fetch every row by itself."""
    if tx.dialect != "sqlite" or tx.execute(_HAS_INDEX).fetchone() is not None:
        return "event_log"
    return "event_log NOT INDEXED"


_HAS_INDEX = "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'event_log_by_customer'"


def index_by_customer(store: Store) -> None:
    """Give a SQLite event log its customer index back (dropped by migration 0011): a worker
    that reads history from the log at every micro-batch (another worker reads its stream)
    looks customers up through it, not by reading the log through. Its appends then pay the
    index's 2-3 µs an event again; PostgreSQL keeps the index always."""
    with store.tx() as tx:
        if tx.dialect == "sqlite":
            tx.execute(EVENT_LOG_INDEX)


def of_stream(column: str = "stream") -> str:
    """The condition (one parameter: the stream's name) on rows of a stream: its own, and
    those without a stream (written before migration 0010, read by every stream as before)."""
    return f"({column} = ? OR {column} IS NULL)"


def _values(column: pa.Array | pa.ChunkedArray) -> list[object]:
    """A text column as Python values; one holding a single value (the tenant, the partition,
    most batches) is converted once and repeated."""
    n = len(column)
    if n > 1 and column.null_count == 0 and pc.all(pc.equal(column, column[0])).as_py():
        return [column[0].as_py()] * n
    return column.to_pylist()  # type: ignore[no-any-return]


def _by_tenant(tenant_ids: Sequence[str], values: Sequence[str]) -> dict[str, list[str]]:
    if tenant_ids and len(set(tenant_ids)) == 1:
        return {tenant_ids[0]: list(values)}
    out: dict[str, list[str]] = {}
    for t, v in zip(tenant_ids, values, strict=True):
        out.setdefault(t, []).append(v)
    return out


def _in_list(tx: Tx, column: str, values: Sequence[str]) -> tuple[str, list[object]]:
    """``column`` among ``values`` as one condition with one parameter, however many values."""
    if tx.dialect == "postgres":
        return f"{column} = ANY(CAST(? AS text[]))", [list(values)]
    try:  # orjson: the same JSON array (UTF-8 where json escapes), some ten times cheaper
        text = orjson.dumps(values if type(values) is list else list(values)).decode()
    except (orjson.JSONEncodeError, TypeError):  # a lone surrogate
        text = json.dumps(list(values))
    return f"{column} IN (SELECT value FROM json_each(?))", [text]


_YEAR_1000 = pa.scalar(datetime(1000, 1, 1), pa.timestamp("us"))
_YEAR_10000 = pa.scalar(253402300800_000_000, pa.timestamp("us"))  # 10000-01-01: datetime's end
_Z = pa.scalar("Z", pa.string())


def _iso_column(ts: pa.ChunkedArray) -> list[str]:
    """Naive UTC times as the store's text (``to_iso``), converted column-wise: Arrow's cast
    to text (``2026-11-25 10:00:00.000000``, always six digits of a second) with a ``T`` and
    a ``Z``, some 30 times cheaper than ``pc.strftime``, which formats value by value."""
    if len(ts) and ts.null_count == 0 and pc.less(pc.min(ts), _YEAR_1000).as_py() is False \
            and pc.less(pc.max(ts), _YEAR_10000).as_py() is True:
        text = pc.utf8_replace_slice(pc.cast(ts.cast(pa.timestamp("us")), pa.string()), 10, 11, "T")
        return pc.binary_join_element_wise(text, _Z, "").to_pylist()  # type: ignore[no-any-return]
    return [to_iso(v.replace(tzinfo=UTC)) for v in ts.to_pylist()]  # years before 1000: as to_iso pads


def _event_table(rows: list[tuple[object, ...]]) -> pa.Table:
    """Rows of ``event_id, tenant_id, customer_id, type, ts, attributes`` as ``EVENT_SCHEMA``."""
    if not rows:
        return EVENT_SCHEMA.empty_table()
    columns = list(zip(*rows, strict=True))
    stamps = columns[4]
    try:
        if isinstance(stamps[0], str):  # SQLite: to_iso text
            ts = pc.cast(pc.cast(pa.array(stamps, pa.string()), pa.timestamp("us", "UTC")),
                         pa.timestamp("us"))
        else:                           # PostgreSQL: aware datetimes
            ts = pa.array(stamps, pa.timestamp("us", "UTC")).cast(pa.timestamp("us"))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        ts = pa.array([_naive(v) for v in stamps], pa.timestamp("us"))  # type: ignore[arg-type]
    arrays = [pa.array(c, f.type) if f.name != "ts" else ts
              for c, f in zip(columns, EVENT_SCHEMA, strict=True)]
    return pa.Table.from_arrays(arrays, schema=EVENT_SCHEMA)
