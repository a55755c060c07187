"""The serving API's two hot reads on PostgreSQL, run on the event loop.

A customer's servable candidates and their in-app inbox are read the same way as
``PostgresStore.candidates`` and ``inbox_list`` (same rows, same order), and given as
the API shows them, with much less work per request:

* one statement per request, prepared (at the protocol level) on each connection's
  first run of it; PostgreSQL returns the whole answer as one JSON value (the rows as
  arrays of the API's fields, times as ISO 8601 text in UTC), which one ``orjson``
  call decodes: no row or column decoding in Python, no time conversions;
* on the event loop, straight on libpq (psycopg's ``pgconn``: send, wait for the
  socket, read), without psycopg's cursor layers and without a hop to a thread and
  back (nor the contention for the GIL between the loop and a read thread);
* on connections of their own (``CEAP_PG_SERVING_CONNECTIONS``, default 10 per
  process, opened on first use). A read that finds them all busy waits for one
  (the waiting reads are woken in the order they came). A connection that fails, or whose read is cancelled
  midway, is closed, not reused.

The JSON is the same the API makes from ``candidates()``: numbers and text as
PostgreSQL writes them into JSON decode to the same values (``extra_float_digits`` is
set to 1: shortest exact floats; a score is made a float again, from ``1`` or
``"NaN"``), the JSON columns are embedded as they are stored, and
times are written as Python's ``isoformat`` writes a UTC time (``_utc``, ``_iso``).
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
from psycopg import pq
from psycopg.errors import error_from_result

from ceap.store.schema import loads

#: connections the hot reads of one process (one server worker) open at most
CONNECTIONS_ENV = "CEAP_PG_SERVING_CONNECTIONS"
DEFAULT_CONNECTIONS = 10

#: what the API shows of a candidate (``CandidateOut``), in this order
CANDIDATE_FIELDS = ("id", "program", "customer_id", "subject_id", "action_type", "channels",
                    "score", "priority", "model", "payload", "context", "status",
                    "not_before", "expires_at")
#: what the API shows of an inbox message (``InboxItemOut``)
INBOX_FIELDS = ("id", "idempotency_key", "program", "title", "body", "payload", "created_at", "read")


def _utc(column: str) -> str:
    """SQL: a ``timestamptz`` as its UTC wall time (a ``timestamp``), which PostgreSQL
    writes in JSON as ``2026-12-07T12:24:04.84`` whatever the session's time zone."""
    return f"{column} AT TIME ZONE 'UTC'"


def _iso(time: str) -> str:
    """A ``_utc`` time from the JSON as ``datetime.isoformat()`` writes that UTC time: the
    fraction of a second in six digits (none for a whole second) and ``+00:00``. Cheaper
    here than ``to_char`` in the database (bench/README.md, issue 11)."""
    return time + "+00:00" if len(time) == 19 else time.ljust(26, "0") + "+00:00"


_ORDER = "priority DESC, score DESC, id"
_SERVABLE = (
    "SELECT json_agg(json_build_array(id, program, customer_id, subject_id, action_type, "
    "channels, score, "
    f"priority, model, payload, context, status, {_utc('not_before')}, {_utc('expires_at')}) "
    f"ORDER BY {_ORDER})::text FROM (SELECT id, program, customer_id, subject_id, "
    "action_type, channels, score, priority, model, payload, context, status, not_before, "
    "expires_at FROM candidates WHERE tenant_id = $1 AND customer_id = $2 "
    "AND status IN ('pending', 'dispatched', 'sent') AND NOT holdout "
    "AND not_before <= $3 AND expires_at > $3{extra} "
    f"ORDER BY {_ORDER} LIMIT $4) c")
#: the candidates statement for (program given, channel given): $5 and $6 in that order
CANDIDATES_SQL = {
    (program, channel): _SERVABLE.format(extra=(" AND program = $5" if program else "") + (
        f" AND channels ? ${5 + program}" if channel else ""))
    for program in (False, True) for channel in (False, True)
}
_INBOX = ("SELECT json_agg(json_build_array(id, idempotency_key, program, title, body, payload, "
          f"{_utc('created_at')}, read_at IS NOT NULL) ORDER BY created_at DESC, id DESC)::text "
          "FROM inbox WHERE tenant_id = $1 AND customer_id = $2{extra}")
#: the inbox statement, all messages (False) or unread ones (True)
INBOX_SQL = {unread: _INBOX.format(extra=" AND read_at IS NULL" if unread else "")
             for unread in (False, True)}
_NAMES = {sql: f"ceap_serving_{i}".encode()
          for i, sql in enumerate([*CANDIDATES_SQL.values(), *INBOX_SQL.values()])}


def _candidate(id: int, program: str, customer_id: str, subject_id: str | None, action_type: str,
               channels: list[str], score: float | str | None, priority: int, model: str | None,
               payload: Any, context: Any, status: str, not_before: str,
               expires_at: str) -> dict[str, Any]:
    """A candidate as the API shows it, from its ``CANDIDATES_SQL`` array (one call: no
    ``zip`` and no updates of a dict, a third of the time of those on this path)."""
    return {"id": id, "program": program, "customer_id": customer_id, "subject_id": subject_id,
            "action_type": action_type, "channels": channels,
            "score": None if score is None else float(score),  # JSON has 1.0 as 1, NaN as "NaN"
            "priority": priority, "model": model, "payload": payload or {},
            "context": context or {}, "status": status, "not_before": _iso(not_before),
            "expires_at": _iso(expires_at)}


def _inbox_item(id: int, idempotency_key: str, program: str, title: str, body: str, payload: Any,
                created_at: str, read: bool) -> dict[str, Any]:
    """An inbox message as the API shows it, from its ``INBOX_SQL`` array."""
    return {"id": id, "idempotency_key": idempotency_key, "program": program, "title": title,
            "body": body, "payload": payload or {}, "created_at": _iso(created_at), "read": read}


def connections_from_env() -> int:
    """``CEAP_PG_SERVING_CONNECTIONS`` (default 10), checked: a whole number from 1 to 100."""
    raw = os.environ.get(CONNECTIONS_ENV, "").strip()
    if not raw:
        return DEFAULT_CONNECTIONS
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise ValueError(f"{CONNECTIONS_ENV}={raw!r}: expected a whole number from 1 to 100")
    return int(raw)


def _text(value: str) -> bytes:
    """A text parameter, as psycopg would send it (libpq would cut it at a NUL)."""
    if "\x00" in value:
        raise psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
    return value.encode()


def _running() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, if any."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def _ready(fd: int, write: bool = False) -> None:
    """Until the socket can be read (or written)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    (loop.add_writer if write else loop.add_reader)(fd, _wake, done)
    try:
        await done
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


class _Conn:
    """A connection of the hot reads, and the statements prepared on it.

    Its socket stays registered with the event loop that last used it (``_listen``): a
    read waits on a future that the loop's reader callback completes, instead of adding
    and removing a reader for every wait (about 20 µs of the worker's CPU a read with
    uvloop, bench/README.md, issue 11). Used from another loop (each test client has its
    own), it moves there; an old loop's callback, if it still fires, unregisters itself.
    Readable with no read waiting (a notice, or the server closed it): the input is
    consumed there; if that fails the connection is marked ``broken``."""

    __slots__ = ("broken", "conn", "fd", "loop", "pg", "prepared", "waiter")

    def __init__(self, conn: psycopg.AsyncConnection[Any]):
        self.conn, self.pg, self.prepared = conn, conn.pgconn, set[bytes]()
        self.fd = self.pg.socket
        self.loop: asyncio.AbstractEventLoop | None = None  # where the socket is registered
        self.waiter: asyncio.Future[None] | None = None
        self.broken = False

    def _listen(self) -> asyncio.AbstractEventLoop:
        """The running loop, with this connection's socket registered on it."""
        loop = asyncio.get_running_loop()
        if self.loop is not loop:
            self._unlisten()
            loop.add_reader(self.fd, self._readable, loop)
            self.loop = loop
        return loop

    def _unlisten(self) -> None:
        """Unregister the socket from its loop, where that is safe from here: the running
        loop, or one not running (a closed loop has nothing left to unregister; one
        running in another thread unregisters when its callback next fires)."""
        loop, self.loop = self.loop, None
        if loop is not None and not loop.is_closed() and (loop is _running() or not loop.is_running()):
            loop.remove_reader(self.fd)

    def _readable(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self.loop:  # registered by a loop the connection has left
            loop.remove_reader(self.fd)
            return
        waiter = self.waiter
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(None)
            return
        try:  # idle: a notice, or the end of the connection
            self.pg.consume_input()
        except Exception:  # closed or failed: not to be used again
            self.broken = True
            self._unlisten()

    async def result(self) -> pq.abc.PGresult | None:
        """The last result of what was sent (raised if it is an error), once all are in."""
        pg = self.pg
        while pg.flush():  # not all sent yet
            await _ready(self.fd, write=True)
        loop = self._listen()
        last = None
        while True:
            waiter = self.waiter = loop.create_future()  # the answer cannot be in yet
            try:
                await waiter
            finally:
                self.waiter = None
            pg.consume_input()
            while not pg.is_busy():
                found = pg.get_result()
                if found is None:
                    if last is not None and last.status == pq.ExecStatus.FATAL_ERROR:
                        raise error_from_result(last)
                    return last
                last = found

    async def value(self, sql: str, params: list[bytes]) -> bytes | None:
        """The one value the prepared ``sql`` returns for ``params`` (text)."""
        name = _NAMES[sql]
        if name not in self.prepared:
            self.pg.send_prepare(name, sql.encode())
            await self.result()
            self.prepared.add(name)
        self.pg.send_query_prepared(name, params)
        found = await self.result()
        return found.get_value(0, 0) if found is not None and found.ntuples else None

    def close(self) -> None:
        """End the libpq connection, its socket unregistered first: here, or on its loop
        when that one runs in another thread (never a closed socket left registered)."""
        loop = self.loop
        if loop is not None and not loop.is_closed() and loop.is_running() and loop is not _running():
            try:
                loop.call_soon_threadsafe(self._close_on, loop)
                return
            except RuntimeError:  # closed meanwhile: nothing left registered
                self.loop = None
        self._unlisten()
        self.pg.finish()

    def _close_on(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.loop is loop:
            loop.remove_reader(self.fd)
            self.loop = None
        self.pg.finish()


class PgServingReads:
    """The hot reads of one ``PostgresStore`` (see the module docstring).

    Safe to use from several event loops (each test client has its own): a connection
    serves one read at a time, and a waiting read is woken on its own loop."""

    def __init__(self, conninfo: str, clock: Callable[[], datetime], size: int | None = None):
        self._conninfo, self._clock = conninfo, clock
        self._size = size if size is not None else connections_from_env()
        self._idle: list[_Conn] = []
        self._opened = 0  # idle, in use, or being opened
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._lock = threading.Lock()
        self._closed = False

    async def candidates(self, tenant_id: str, customer_id: str, channel: str | None,
                         program: str | None, limit: int) -> list[dict[str, Any]]:
        """What ``candidates(CandidateQuery(..., servable=True))`` finds, as the API shows
        it (``CANDIDATE_FIELDS``; ``payload`` and ``context`` ``{}`` when null)."""
        params = [_text(tenant_id), _text(customer_id), self._clock().isoformat().encode(),
                  str(limit).encode()]
        if program is not None:
            params.append(_text(program))
        if channel is not None:
            params.append(_text(channel))
        rows = await self._rows(CANDIDATES_SQL[program is not None, channel is not None], params)
        return [_candidate(*row) for row in rows]

    async def inbox(self, tenant_id: str, customer_id: str,
                    unread_only: bool) -> list[dict[str, Any]]:
        """What ``inbox_list`` finds, as the API shows it (``INBOX_FIELDS``; ``payload``
        ``{}`` when null)."""
        rows = await self._rows(INBOX_SQL[unread_only], [_text(tenant_id), _text(customer_id)])
        return [_inbox_item(*row) for row in rows]

    async def _rows(self, sql: str, params: list[bytes]) -> list[list[Any]]:
        conn = await self._borrow()
        try:
            value = await conn.value(sql, params)
        except BaseException:  # failed or cancelled midway: its state is unknown
            self._drop(conn)
            raise
        self._give_back(conn)
        return loads(value) if value is not None else []  # type: ignore[no-any-return]

    async def _borrow(self) -> _Conn:
        while True:
            with self._lock:
                if self._closed:
                    raise psycopg.OperationalError("the connection is closed")
                while self._idle:
                    conn = self._idle.pop()
                    if not conn.broken:
                        return conn
                    self._opened -= 1  # the server closed it while it was idle
                    conn.close()
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

    async def _connect(self) -> _Conn:
        conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        try:
            await conn.execute("SET extra_float_digits = 1")  # floats in JSON: shortest exact
        except BaseException:
            await conn.close()
            raise
        return _Conn(conn)

    def _give_back(self, conn: _Conn) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(conn)
                self._wake_one()
                return
        conn.close()

    def _drop(self, conn: _Conn) -> None:
        conn.close()
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
            conn.close()
        for waiter in waiters:  # they find the store closed
            if not waiter.get_loop().is_closed():
                waiter.get_loop().call_soon_threadsafe(_wake, waiter)
