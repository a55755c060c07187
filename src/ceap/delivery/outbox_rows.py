"""The rows of the outbox: the ``deliveries`` columns and their decoding, the idempotency
key, the retry policy, and ``update_in`` (one statement per chunk of ids)."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from functools import lru_cache
from itertools import chain
from typing import Any

import orjson

from ceap.delivery.model import Delivery
from ceap.model import Candidate
from ceap.store.schema import JSON_COLUMNS, from_iso
from ceap.store.sql_common import SELECT_CANDIDATE
from ceap.store.tx import Tx

DELIVERY_COLUMNS = ("id", "tenant_id", "candidate_id", "program", "customer_id", "channel", "step",
                    "idempotency_key", "status", "attempts", "next_attempt_at", "category",
                    "shadow", "last_error", "policy", "provider_id", "created_at", "updated_at",
                    "sent_at", "ambiguous_at", "ambiguity")
DELIVERY_COLS = ", ".join(DELIVERY_COLUMNS)
#: ``SELECT <every column of DELIVERY_COLUMNS> FROM deliveries``, for ``delivery_from_row``
SELECT_DELIVERY = f"SELECT {DELIVERY_COLS} FROM deliveries"
#: the columns of ``SELECT_CANDIDATE``, for ``RETURNING``
CANDIDATE_RETURNING = SELECT_CANDIDATE.removeprefix("SELECT ").removesuffix(" FROM candidates")
#: the candidate columns as ``select_rows`` reads them: the score (a float) as text of 17
#: significant digits, which ``float`` reads back exactly (JSON would keep 15)
CANDIDATE_JSON = CANDIDATE_RETURNING.replace(
    "score", "CASE WHEN score IS NULL THEN NULL ELSE printf('%!.17g', score) END")
_CANDIDATE_NAMES = tuple(CANDIDATE_RETURNING.split(", "))
_SCORE_AT = _CANDIDATE_NAMES.index("score")
#: ``CANDIDATE_JSON`` with the JSON columns embedded as JSON (``json(column)``), not as
#: texts to decode one by one: one ``orjson.loads`` reads a claim's rows and their values;
#: the score as 17 significant digits in exponent form (no run of 19 digits, see below)
CANDIDATE_EMBEDDED = ", ".join(
    f"json({n})" if n in JSON_COLUMNS else
    "CASE WHEN score IS NULL THEN NULL ELSE printf('%!.16e', score) END" if n == "score" else n
    for n in _CANDIDATE_NAMES)
_C_TIMES = tuple(_CANDIDATE_NAMES.index(n) for n in ("created_at", "not_before", "expires_at", "updated_at"))
_C_HOLDOUT, _C_CONTEXT, _C_PAYLOAD = (_CANDIDATE_NAMES.index(n) for n in ("holdout", "context", "payload"))
#: every ASCII digit made "0", any other byte "."; 19 zeros in a row: perhaps an integer
#: past 64 bits, which orjson would read as a float (``schema.loads`` reads those exactly)
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x2E for b in range(256))
_NINETEEN = b"0" * 19


#: ``record``'s sent rows on SQLite: one statement over a JSON array of [id, status,
#: provider id, attempts] (each row looked up by its id)
SENT_FROM_JSON = (
    "UPDATE deliveries SET status = j.status, provider_id = j.pid, attempts = j.att, sent_at = ?, "
    "lease_until = NULL, last_error = NULL, updated_at = ? FROM (SELECT json_extract(value, '$[0]') AS id, "
    "json_extract(value, '$[1]') AS status, json_extract(value, '$[2]') AS pid, "
    "json_extract(value, '$[3]') AS att FROM json_each(?)) AS j WHERE deliveries.id = j.id")


def scored(row: Sequence[Any]) -> list[Any]:
    """A row of ``CANDIDATE_JSON`` as ``SELECT_CANDIDATE`` gives it (the score a float again)."""
    values = list(row)
    if values[_SCORE_AT] is not None:
        values[_SCORE_AT] = float(values[_SCORE_AT])
    return values


#: a delivery row of ``Outbox._row`` followed by ``lease_until`` and ``worker`` (both None
#: unless it is born leased to the worker that planned it)
INSERT_DELIVERY = ("INSERT INTO deliveries (tenant_id, candidate_id, program, customer_id, channel, "
                   "step, remaining, idempotency_key, status, attempts, next_attempt_at, category, "
                   "shadow, policy, created_at, updated_at, lease_until, worker) "
                   "VALUES (?,?,?,?,?,?,?,?,?,0,?,?,?,?,?,?,?,?) "
                   "ON CONFLICT (tenant_id, idempotency_key) DO NOTHING")
_DELIVERY_VALUES = "(?,?,?,?,?,?,?,?,?,0,?,?,?,?,?,?,?,?)"
#: rows of one multi-row ``INSERT`` on SQLite (17 parameters a row: 8,500, well under 32,766)
ROWS_A_STATEMENT = 500


if set(DELIVERY_COLUMNS) != {f.name for f in fields(Delivery)}:  # delivery_from_row sets them all
    raise RuntimeError("DELIVERY_COLUMNS differ from the Delivery fields")
_TIME_AT = tuple(DELIVERY_COLUMNS.index(n)
                 for n in ("next_attempt_at", "created_at", "updated_at", "sent_at", "ambiguous_at"))
_SHADOW_AT = DELIVERY_COLUMNS.index("shadow")


def parsed_time(times: dict[Any, Any], stamp: str) -> datetime | None:
    """``from_iso(stamp)``, parsed once per text in ``times`` (the rows of one claim share
    their timestamps)."""
    if stamp in times:
        return times[stamp]  # type: ignore[no-any-return]
    return times.setdefault(stamp, from_iso(stamp))  # type: ignore[no-any-return]


def delivery_from_row(row: Sequence[Any], times: dict[Any, Any] | None = None) -> Delivery:
    """A ``Delivery`` from a row of ``DELIVERY_COLUMNS`` (fields set directly, as
    ``Delivery(**values)`` would: claims decode thousands a second). ``times``: the
    timestamps already parsed (text -> datetime), shared by the rows of one claim."""
    values = list(row)
    if times is None:
        for i in _TIME_AT:
            values[i] = from_iso(values[i])
    else:
        for i in _TIME_AT:
            stamp = values[i]
            if stamp is not None:
                values[i] = times[stamp] if stamp in times else parsed_time(times, stamp)
    values[_SHADOW_AT] = bool(values[_SHADOW_AT])
    d = object.__new__(Delivery)
    d.__dict__.update(zip(DELIVERY_COLUMNS, values, strict=True))
    return d


@lru_cache(maxsize=8)
def _insert_many(n: int) -> str:
    return INSERT_DELIVERY.replace(_DELIVERY_VALUES, ",".join([_DELIVERY_VALUES] * n))


def insert_deliveries(tx: Tx, rows: Sequence[Sequence[Any]]) -> None:
    """``INSERT_DELIVERY`` over ``rows``. On SQLite one statement with a ``VALUES`` row per
    delivery (up to ``ROWS_A_STATEMENT``): one step, where ``executemany`` steps once per
    row and hands the interpreter lock to the other threads at each step (the sending
    lanes, in a pipelined dispatcher). Elsewhere ``executemany``."""
    if tx.dialect != "sqlite":
        tx.executemany(INSERT_DELIVERY, rows)
        return
    for start in range(0, len(rows), ROWS_A_STATEMENT):
        chunk = rows[start:start + ROWS_A_STATEMENT]
        tx.execute(_insert_many(len(chunk)), list(chain.from_iterable(chunk)))


def select_rows(tx: Tx, columns: str, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
    """The rows of ``sql`` (which selects ``columns``, a comma-separated list of names).
    On SQLite they come back as one JSON array (``json_group_array``), parsed by orjson:
    the driver steps once per row and hands the interpreter lock over at each step, so a
    claim of 1,000 rows waited 1,000 times for the sending lanes; this is one step. The
    columns must hold no floating-point values (JSON keeps 15 digits)."""
    if tx.dialect != "sqlite":
        return list(tx.execute(sql, params).fetchall())
    (text,) = tx.execute(f"SELECT json_group_array(json_array({columns})) FROM ({sql})", params).fetchone()
    return orjson.loads(text) if text else []


def embedded_candidates(tx: Tx, sql: str, params: Sequence[Any]) -> list[Candidate] | None:
    """The candidates of ``sql`` (a ``SELECT_CANDIDATE``) on SQLite, as ``candidate_from_row``
    makes them, from one JSON text with the JSON columns in it (``CANDIDATE_EMBEDDED``): a
    claim decoded six JSON texts a row one by one. None, to read them the usual way, when a
    stored value is not JSON SQLite reads (NaN) or the text may hold an integer past 64 bits."""
    try:
        (text,) = tx.execute(f"SELECT CAST(json_group_array(json_array({CANDIDATE_EMBEDDED})) AS BLOB) "
                             f"FROM ({sql})", params).fetchone()
    except sqlite3.OperationalError:  # malformed JSON: NaN, which only the standard library reads
        return None
    if not text:
        return []
    if _NINETEEN in text.translate(_DIGITS_AS_ZERO):
        return None
    try:
        rows = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    times: dict[str, datetime | None] = {}
    names = _CANDIDATE_NAMES
    claimed: list[Candidate] = []
    for values in rows:
        if values[_SCORE_AT] is not None:
            values[_SCORE_AT] = float(values[_SCORE_AT])
        for i in _C_TIMES:
            stamp = values[i]
            if stamp is not None:
                values[i] = times[stamp] if stamp in times else parsed_time(times, stamp)
        values[_C_HOLDOUT] = bool(values[_C_HOLDOUT])
        values[_C_CONTEXT] = values[_C_CONTEXT] or {}
        values[_C_PAYLOAD] = values[_C_PAYLOAD] or {}
        c = object.__new__(Candidate)
        c.__dict__.update(zip(names, values, strict=True))
        claimed.append(c)
    return claimed


def update_in(tx: Tx, sql: str, params: Sequence[Any], ids: Sequence[int]) -> int:
    """Run ``sql`` (its ``{ids}`` an ``IN`` list) over ``ids`` in chunks of 500: one statement
    per chunk costs less than one execution per row. Returns the rows changed."""
    changed = 0
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        cur = tx.execute(sql.format(ids=tx.placeholders(len(chunk))), (*params, *chunk))
        changed += int(cur.rowcount or 0)
    return changed


def idempotency_key(candidate: Candidate, channel: str) -> str:
    """Stable across retries and restarts; unique per tenant, candidate and channel.
    Longer than 255 characters (what providers accept) becomes a hash."""
    key = f"{candidate.tenant_id}:{candidate.dedup_key}:{channel}"
    return key if len(key) <= 255 else "sha256:" + hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Retry:
    """Exponential backoff with equal jitter: base, x2, capped; then a dead letter."""

    base: float = 1.0
    cap: float = 100.0
    max_attempts: int = 8

    def delay(self, attempt: int, jitter: float, retry_after: float | None = None) -> float:
        raw = min(self.cap, self.base * 2 ** max(attempt - 1, 0))
        wait = raw / 2 + raw / 2 * jitter
        return max(wait, retry_after or 0.0)
