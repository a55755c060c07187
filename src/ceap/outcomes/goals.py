"""Goal events: the events programs declare as their goal (``goal.event``), kept
in ``goal_events`` for attribution.

They come from every ingestion path: the real-time worker hands each
micro-batch to ``record_event_outcomes`` (HTTP ``/v1/events``, EventBridge,
stream connectors and ``ceap publish`` all arrive there), and
``import_goal_file`` loads conversions a warehouse already holds (CSV,
Parquet, JSON Lines). Both insert or ignore by ``(tenant_id, event_id)``, so a
replay stores nothing twice.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ceap.model import utcnow
from ceap.outcomes.arrow_io import UTC_TS, bulk_insert
from ceap.outcomes.engagement import TYPES as ENGAGEMENT_TYPES
from ceap.outcomes.reported import record_reports, reports_from_events
from ceap.privacy.tombstone import drop_deleted

log = logging.getLogger(__name__)

GOAL_SCHEMA = pa.schema([("tenant_id", pa.string()), ("event_id", pa.string()),
                         ("customer_id", pa.string()), ("type", pa.string()), ("ts", UTC_TS),
                         ("value", pa.float64()), ("recorded_at", UTC_TS)])
_KEY = ("tenant_id", "event_id")


def goal_types(specs: Iterable[Any]) -> dict[str, str | None]:
    """Event type -> the attribute holding its value, over every program with a goal, and
    the event types journeys wait for or exit on (no value; engagement types excepted).
    Programs naming different value attributes for one type: the first by name wins
    (logged), as ``goal_events`` keeps one value per event."""
    found: dict[str, str | None] = {}
    specs_list = sorted(specs, key=lambda s: s.name)
    for spec in specs_list:
        goal = getattr(spec, "goal", None)
        if goal is None:
            continue
        for kind in goal.event:
            have = found.get(kind)
            if have is not None and goal.value is not None and goal.value != have:
                log.warning("goal event %s: program %s reads its value from %r, an earlier program "
                            "from %r; %r is kept", kind, spec.name, goal.value, have, have)
            if have is None:
                found[kind] = goal.value
    for spec in specs_list:
        journey = getattr(spec, "journey", None)
        if journey is not None:  # the events journeys wait for and exit on are kept the same way
            for kind in sorted(journey.event_types() - ENGAGEMENT_TYPES):
                found.setdefault(kind, None)
    return found


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def goal_rows(events: pa.Table, goals: dict[str, str | None], now: datetime) -> pa.Table:
    """The goal events among ``events`` (``EVENT_SCHEMA``) as ``GOAL_SCHEMA`` rows."""
    if not goals or not events.num_rows:
        return GOAL_SCHEMA.empty_table()
    mask = pc.and_(pc.is_in(events.column("type"), value_set=pa.array(sorted(goals))),
                   pc.is_valid(events.column("customer_id")))
    picked = events.filter(mask)
    if not picked.num_rows:
        return GOAL_SCHEMA.empty_table()
    values: list[float | None] = []
    for kind, attrs in zip(picked.column("type").to_pylist(), picked.column("attributes").to_pylist(),
                           strict=True):
        key = goals.get(kind)
        if key is None:
            values.append(None)
            continue
        try:
            data = json.loads(attrs or "{}")
        except ValueError:
            data = {}
        values.append(_number(data.get(key)) if isinstance(data, dict) else None)
    ts = picked.column("ts")
    ts = pc.assume_timezone(ts, "UTC") if ts.type.tz is None else pc.cast(ts, UTC_TS)
    n = picked.num_rows
    return pa.table([picked.column("tenant_id"), picked.column("event_id"), picked.column("customer_id"),
                     picked.column("type"), ts, pa.array(values, pa.float64()),
                     pa.array([now] * n, UTC_TS)], schema=GOAL_SCHEMA)


def record_goal_events(store: Any, events: pa.Table, goals: dict[str, str | None],
                       now: datetime | None = None) -> int:
    """Insert the goal events among ``events``; returns how many were new."""
    return bulk_insert(store, "goal_events", goal_rows(events, goals, now or utcnow()), _KEY)


class GoalIndex:
    """The goal event types of the programs in a folder, re-read when a file is added,
    changed or removed (checked on every call: a listing and a stat per file)."""

    def __init__(self, programs_dir: Path):
        self.dir = Path(programs_dir)
        self._specs: dict[Path, tuple[float, Any]] = {}
        self._goals: dict[str, str | None] = {}

    def goals(self) -> dict[str, str | None]:
        from ceap.errors import CeapError
        from ceap.spec import load_program

        try:  # one listing (``glob`` walks the folder once a pattern), each file's time from it
            with os.scandir(self.dir) as entries:
                found = {self.dir / e.name: e for e in entries if e.name.endswith((".yaml", ".yml"))}
        except (FileNotFoundError, NotADirectoryError):
            found = {}
        paths = sorted(found)
        changed = set(self._specs) != set(paths)
        for path in paths:
            try:
                mtime = found[path].stat().st_mtime
            except FileNotFoundError:  # removed since the listing: as if not listed
                continue
            if path in self._specs and self._specs[path][0] == mtime:
                continue
            changed = True
            try:
                self._specs[path] = (mtime, load_program(path))
            except CeapError:  # the worker reports bad files; the last good version stays
                self._specs.setdefault(path, (mtime, None))
        for gone in set(self._specs) - set(paths):
            del self._specs[gone]
        if changed:
            self._goals = goal_types(s for _, s in self._specs.values() if s is not None)
        return self._goals


_INDEXES: dict[Path, GoalIndex] = {}


@dataclass
class EventOutcomes:
    goal_events: int = 0
    engagements: int = 0
    unknown_deliveries: list[int] = field(default_factory=list)


def record_event_outcomes(store: Any, programs_dir: Path, events: pa.Table,
                          now: datetime | None = None) -> EventOutcomes:
    """The real-time worker's hook, once per micro-batch before it commits: goal events
    of any program in ``programs_dir`` go to ``goal_events``, client-reported
    engagements (``opened``, ``clicked``... naming a delivery) to ``engagements``."""
    now = now or utcnow()
    given = Path(programs_dir)
    index = _INDEXES.get(given) if given.is_absolute() else None  # a worker's folder, as given
    if index is None:
        index = _INDEXES.setdefault(given.resolve(), GoalIndex(given))
        if given.is_absolute():
            _INDEXES[given] = index
    goals = index.goals()
    result = EventOutcomes(goal_events=record_goal_events(store, events, goals, now) if goals else 0)
    reports = reports_from_events(events)
    if reports:
        with store.tx() as tx:
            result.engagements, result.unknown_deliveries = record_reports(tx, reports, "event", now)
    return result


# -- batch import -------------------------------------------------------------------

_READERS = {".csv": "read_csv", ".parquet": "read_parquet", ".jsonl": "read_json", ".json": "read_json",
            ".ndjson": "read_json"}


@dataclass
class ImportResult:
    read: int
    inserted: int
    rejected: list[tuple[int, str]]
    erased: int = 0  # rows of deleted customers, dropped (docs/privacy.md)

    @property
    def duplicates(self) -> int:
        return self.read - len(self.rejected) - self.inserted - self.erased


def import_goal_file(store: Any, path: Path, tenant: str, *, event_type: str | None = None,
                     value: str | None = None, now: datetime | None = None) -> ImportResult:
    """Load goal events from a CSV, Parquet or JSON Lines file: columns ``event_id`` (or
    ``id``), ``customer_id``, ``type`` (or ``event_type`` for all rows), ``ts`` (ISO 8601;
    no offset means UTC) and the optional ``value`` column. Rows missing one of them, or
    with a time or value that does not parse, are rejected with their row number."""
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"{path}: expected a .csv, .parquet or .jsonl file")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    try:
        source = con.sql(f"SELECT * FROM {reader}(?)", params=[str(path)])
    except duckdb.Error as exc:
        raise ValueError(f"{path}: {str(exc).splitlines()[0]}") from None
    columns = set(source.columns)
    ident = "event_id" if "event_id" in columns else "id" if "id" in columns else None
    missing = [c for c, ok in (("event_id", ident), ("customer_id", "customer_id" in columns),
                               ("type", event_type or "type" in columns), ("ts", "ts" in columns)) if not ok]
    value_col = value or ("value" if "value" in columns else None)
    if value_col is not None and value_col not in columns:
        missing.append(value_col)
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} "
                         f"(have: {', '.join(sorted(columns))})")
    kind = "?" if event_type else '"type"'
    val = f'"{value_col}"' if value_col else "NULL"
    con.register("goal_src", source.to_arrow_table())
    rows = con.sql(f"""
        SELECT row_number() OVER () AS line, CAST("{ident}" AS VARCHAR) AS event_id,
               CAST(customer_id AS VARCHAR) AS customer_id, CAST({kind} AS VARCHAR) AS type,
               TRY_CAST(CAST(ts AS VARCHAR) AS TIMESTAMPTZ) AS ts,
               TRY_CAST({val} AS DOUBLE) AS value, {val} IS NOT NULL AS has_value
        FROM goal_src""", params=[event_type] if event_type else None).to_arrow_table()
    rejected: list[tuple[int, str]] = []
    checks = [("event_id", pc.or_(pc.is_null(rows["event_id"]), pc.equal(rows["event_id"], ""))),
              ("customer_id", pc.or_(pc.is_null(rows["customer_id"]), pc.equal(rows["customer_id"], ""))),
              ("type", pc.or_(pc.is_null(rows["type"]), pc.equal(rows["type"], ""))),
              ("ts", pc.is_null(rows["ts"])),
              ("value", pc.and_(rows["has_value"], pc.is_null(rows["value"])))]
    bad = pa.array([False] * rows.num_rows)
    for name, mask in checks:
        mask = pc.fill_null(mask, True)
        for line in rows.filter(pc.and_not(mask, bad))["line"].to_pylist():
            what = {"value": "not a number", "ts": "missing or not a time"}.get(name, "missing")
            rejected.append((int(line), f"{name}: {what}"))
        bad = pc.or_(bad, mask)
    good = rows.filter(pc.invert(bad))
    now = now or utcnow()
    table = pa.table([pa.array([tenant] * good.num_rows, pa.string()), good["event_id"], good["customer_id"],
                      good["type"], pc.cast(good["ts"], UTC_TS), good["value"],
                      pa.array([now] * good.num_rows, UTC_TS)], schema=GOAL_SCHEMA)
    table, erased = drop_deleted(store, table)
    inserted = bulk_insert(store, "goal_events", table, _KEY)
    return ImportResult(rows.num_rows, inserted, sorted(rejected), erased)


__all__ = ["GOAL_SCHEMA", "EventOutcomes", "GoalIndex", "ImportResult", "goal_rows", "goal_types",
           "import_goal_file", "record_event_outcomes", "record_goal_events"]
