"""The serving API's two hot reads on PostgreSQL, run on the event loop.

A customer's servable candidates and their in-app inbox are read the same way as
``PostgresStore.candidates`` and ``inbox_list`` (same rows, same order), with less work
per request:

* on the event loop, through psycopg's ``AsyncConnection`` (no hop to a thread and
  back, no contention for the GIL between the loop and a read thread);
* on a few connections of their own (``CEAP_PG_SERVING_CONNECTIONS``, default 4 per
  process, opened on first use), each statement prepared on its first run;
* only the columns the API shows, in binary (no text parsing of numbers and times), JSON
  decoded by orjson (``ceap.store.schema.loads``), in a session whose time zone is UTC
  (no conversion of each timestamp).

A request that finds every connection busy waits for one (first come, first served). A
connection that fails, or whose request is cancelled mid-read, is closed, not reused.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import set_json_loads

from ceap.store.schema import loads

#: connections the hot reads of one process (one server worker) open at most
CONNECTIONS_ENV = "CEAP_PG_SERVING_CONNECTIONS"
DEFAULT_CONNECTIONS = 4

#: what the API shows of a candidate (``CandidateOut``), in this order
CANDIDATE_FIELDS = ("id", "program", "customer_id", "subject_id", "action_type", "channels",
                    "score", "priority", "model", "payload", "context", "status",
                    "not_before", "expires_at")
#: what the API shows of an inbox message (``InboxItemOut``); ``read``: ``read_at IS NOT NULL``
INBOX_FIELDS = ("id", "program", "title", "body", "payload", "created_at", "read")

_SERVABLE = ("SELECT " + ", ".join(CANDIDATE_FIELDS) + " FROM candidates "
             "WHERE tenant_id = %s AND customer_id = %s "
             "AND status IN ('pending', 'dispatched', 'sent') AND NOT holdout "
             "AND not_before <= %s AND expires_at > %s{extra} "
             "ORDER BY priority DESC, score DESC, id LIMIT %s")
#: the candidates statement for (program given, channel given)
CANDIDATES_SQL = {
    (program, channel): _SERVABLE.format(
        extra=(" AND program = %s" if program else "") + (" AND channels ? %s" if channel else ""))
    for program in (False, True) for channel in (False, True)
}
_INBOX = ("SELECT id, program, title, body, payload, created_at, read_at IS NOT NULL FROM inbox "
          "WHERE tenant_id = %s AND customer_id = %s{extra} ORDER BY created_at DESC, id DESC")
#: the inbox statement, all messages (False) or unread ones (True)
INBOX_SQL = {unread: _INBOX.format(extra=" AND read_at IS NULL" if unread else "")
             for unread in (False, True)}


def connections_from_env() -> int:
    """``CEAP_PG_SERVING_CONNECTIONS`` (default 4), checked: a whole number from 1 to 100."""
    raw = os.environ.get(CONNECTIONS_ENV, "").strip()
    if not raw:
        return DEFAULT_CONNECTIONS
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise ValueError(f"{CONNECTIONS_ENV}={raw!r}: expected a whole number from 1 to 100")
    return int(raw)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class PgServingReads:
    """The hot reads of one ``PostgresStore`` (see the module docstring).

    Safe to use from several event loops (each test client has its own): a connection
    serves one read at a time, and a waiting read is woken on its own loop."""

    def __init__(self, conninfo: str, clock: Callable[[], datetime], size: int | None = None):
        self._conninfo, self._clock = conninfo, clock
        self._size = size if size is not None else connections_from_env()
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._opened = 0  # idle, in use, or being opened
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._lock = threading.Lock()
        self._closed = False

    async def candidates(self, tenant_id: str, customer_id: str, channel: str | None,
                         program: str | None, limit: int) -> list[dict[str, Any]]:
        """What ``candidates(CandidateQuery(..., servable=True))`` finds, as the API's fields
        (``CANDIDATE_FIELDS``; JSON decoded, ``payload`` and ``context`` ``{}`` when null,
        times as UTC datetimes)."""
        now = self._clock()
        params: list[Any] = [tenant_id, customer_id, now, now]
        if program is not None:
            params.append(program)
        if channel is not None:
            params.append(channel)
        params.append(limit)
        rows = await self._rows(CANDIDATES_SQL[program is not None, channel is not None], params)
        found = []
        for row in rows:
            c = dict(zip(CANDIDATE_FIELDS, row, strict=True))
            c["payload"] = c["payload"] or {}
            c["context"] = c["context"] or {}
            found.append(c)
        return found

    async def inbox(self, tenant_id: str, customer_id: str,
                    unread_only: bool) -> list[dict[str, Any]]:
        """What ``inbox_list`` finds, as the API's fields (``INBOX_FIELDS``; ``payload``
        ``{}`` when null, ``created_at`` a UTC datetime)."""
        rows = await self._rows(INBOX_SQL[unread_only], (tenant_id, customer_id))
        found = []
        for row in rows:
            item = dict(zip(INBOX_FIELDS, row, strict=True))
            item["payload"] = item["payload"] or {}
            found.append(item)
        return found

    async def _rows(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        conn = await self._borrow()
        try:
            cursor = await conn.execute(sql, params, prepare=True, binary=True)
            rows = await cursor.fetchall()
        except BaseException:  # failed or cancelled mid-read: its state is unknown
            self._drop(conn)
            raise
        self._give_back(conn)
        return rows

    async def _borrow(self) -> psycopg.AsyncConnection[Any]:
        while True:
            with self._lock:
                if self._closed:
                    raise psycopg.OperationalError("the connection is closed")
                if self._idle:
                    return self._idle.pop()
                if self._opened < self._size:
                    self._opened += 1
                    break
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
            try:
                await waiter  # a connection was given back or dropped: try again
            except BaseException:
                with self._lock:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)
                    else:  # woken, but leaving: pass the turn on
                        self._wake_one()
                raise
        try:
            return await self._connect()
        except BaseException:
            with self._lock:
                self._opened -= 1
                self._wake_one()
            raise

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True,
                                                     prepare_threshold=0)
        try:
            set_json_loads(loads, conn)  # orjson, the standard library for what it refuses
            await conn.execute("SET TimeZone TO 'UTC'")  # times load as UTC, as the API shows them
        except BaseException:
            await conn.close()
            raise
        return conn

    def _give_back(self, conn: psycopg.AsyncConnection[Any]) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(conn)
                self._wake_one()
                return
        _close(conn)

    def _drop(self, conn: psycopg.AsyncConnection[Any]) -> None:
        _close(conn)
        with self._lock:
            self._opened -= 1
            self._wake_one()

    def _wake_one(self) -> None:
        """Wake the first read still waiting (under ``_lock``), on its own loop."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.get_loop().call_soon_threadsafe(_wake, waiter)
                return

    def close(self) -> None:
        """Close every idle connection; one in use is closed when its read ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            waiters, self._waiters = list(self._waiters), deque()
        for conn in idle:
            _close(conn)
        for waiter in waiters:  # they find the store closed
            if not waiter.get_loop().is_closed():
                waiter.get_loop().call_soon_threadsafe(_wake, waiter)


def _close(conn: psycopg.AsyncConnection[Any]) -> None:
    """Close without the event loop (there may be none): end the libpq connection."""
    conn.pgconn.finish()
